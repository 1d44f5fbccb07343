"""The model fingerprint: what must match for two descriptors to be comparable.

A map, an ONNX export and an extractor each carry one. Two fingerprints agree when the
architecture, the weights' sha256, the input size and the descriptor dimension agree; backend
and precision are deliberately not part of it (an int8 export of the same weights queries an
fp32 map).

A low-quality-query student (VPR4LQQ distillation) has its own weights, so its own fingerprint,
and also names its teacher's (``query_encoder_for``): it may query exactly the maps its teacher
built, and no other (``accepts``; ``refusal`` says why not in one line, naming both models).
A checkpoint has no input size: the ``query_encoder_for`` a running extractor exposes carries the
teacher's weights at the extractor's own input size, so a student queries a teacher's map built
at the size it runs at, as the teacher itself would.
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


def describe_model(fp: dict, name: str | None = None) -> str:
    """A model in a few words: ``NAME (structvpr-rgb-mobilenetv2, weights sha256 b03531047ffa…, 160x120)``,
    or without a name ``structvpr-rgb-mobilenetv2 (weights sha256 b03531047ffa…, 160x120)``."""
    size = fp.get("input_size")
    at = f", {size[0]}x{size[1]}" if isinstance(size, (list, tuple)) and len(size) == 2 else ""
    weights = f"weights sha256 {str(fp.get('weights_sha256'))[:12]}…{at}"
    return f"{name} ({fp.get('architecture')}, {weights})" if name else f"{fp.get('architecture')} ({weights})"


def refusal(
    map_fp: dict,
    model_fp: dict,
    query_encoder_for: dict | None = None,
    *,
    map_name: str | None = None,
    teacher_name: str | None = None,
) -> str | None:
    """Why a model may not query descriptors made by ``map_fp`` (one clause), or None when it may.

    A plain model: which fingerprint keys differ. A query encoder: the map's model and the
    teacher it was trained for, both described (``map_name``, ``teacher_name``: e.g. a checkpoint
    path, when the caller knows one).
    """
    keys = accepts(map_fp, model_fp, query_encoder_for)
    if not keys:
        return None
    if query_encoder_for is None:
        return f"built with another model ({describe_mismatch(model_fp, map_fp, keys)})"
    return (
        f"built with {describe_model(map_fp, map_name)}, but the query encoder was trained for "
        f"{describe_model(query_encoder_for, teacher_name)} (they differ in {', '.join(keys)})"
    )
