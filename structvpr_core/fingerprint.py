"""The model fingerprint: what must match for two descriptors to be comparable.

A map, an ONNX export and an extractor each carry one. Two fingerprints agree when the
architecture, the weights' sha256, the input size and the descriptor dimension agree; backend
and precision are deliberately not part of it (an int8 export of the same weights queries an
fp32 map).

A low-quality-query student (VPR4LQQ distillation) has its own weights, so its own fingerprint,
and also names its teacher's (``query_encoder_for``): it may query exactly the maps its teacher
built, and no other (``accepts``).
"""

from __future__ import annotations

FINGERPRINT_KEYS = ("architecture", "weights_sha256", "input_size", "descriptor_dim")


def _norm(v):
    # JSON round trips turn tuples into lists; compare them as equals.
    return list(v) if isinstance(v, tuple) else v


def fingerprint_mismatch(expected: dict, found: dict) -> list[str]:
    """Keys of the model fingerprint on which two fingerprints differ (empty: the same model)."""
    return [k for k in FINGERPRINT_KEYS if _norm(expected.get(k)) != _norm(found.get(k))]


def describe_mismatch(expected: dict, found: dict, keys: list[str]) -> str:
    """``key: expected X, found Y; ...`` for the keys ``fingerprint_mismatch`` returned."""
    return "; ".join(f"{k}: expected {expected.get(k)!r}, found {found.get(k)!r}" for k in keys)


def fingerprint_subset(fp: dict) -> dict:
    """Only the keys that identify a model (plain data, lists for tuples)."""
    return {k: _norm(fp[k]) for k in FINGERPRINT_KEYS}


def accepts(map_fp: dict, model_fp: dict, query_encoder_for: dict | None = None) -> list[str]:
    """Why a model may not query a map built with ``map_fp`` (empty: it may).

    The map's own model may; so may a query encoder whose ``query_encoder_for`` is the map's model.
    """
    if not fingerprint_mismatch(map_fp, model_fp):
        return []
    if query_encoder_for is not None and not fingerprint_mismatch(map_fp, query_encoder_for):
        return []
    return fingerprint_mismatch(map_fp, model_fp if query_encoder_for is None else query_encoder_for)
