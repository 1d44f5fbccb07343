"""``backend="auto"`` on the CPU: the fastest installed runtime that passes parity, measured once.

Which CPU runtime is fastest depends on the CPU (AMX, AVX-512, VNNI), the input size and the
library versions, by up to 2x either way, so ``auto`` does not guess: at the first use of a model
at an input size on a machine it

1. embeds the parity images (``paths.parity_images``: 8 real Corridor frames shipped with the
   package, resized to the input size) with the *reference*: PyTorch when it is installed (the
   reference ``structvpr export`` checks against), else ONNX Runtime fp32 on the same file; for
   an int8 export, ONNX Runtime on that file (the runtime its export measured);
2. embeds them with every candidate (``providers.cpu_candidates``: ONNX Runtime, OpenVINO fp32,
   and OpenVINO bf16/fp16 where the CPU offers them) and refuses a candidate whose smallest
   cosine to the reference is below ``MIN_COSINE`` (0.999, the parity floor of ``structvpr export``);
3. times the others: batch 1 at the input size, interleaved rounds (``timing.interleaved``: each
   after a short pause and one untimed call), the median per candidate;
4. runs the fastest. The record (every candidate's p50 and cosine, the reference, the reason,
   the machine) is cached as JSON in ``$STRUCTVPR_CACHE/runtime_choice/``, keyed by the model
   fingerprint, the precision of the file, the CPU model and SIMD flags, the thread count and the
   runtime versions: a new CPU, thread count or library version measures again.

``$STRUCTVPR_CPU_RUNTIME=NAME`` (one of the candidates) pins the choice without measuring: for
reproducible deployments and for tests that compare descriptors exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json
from ..cpuinfo import cpu_flags, cpu_model
from ..errors import ConfigError
from ..log import get_logger
from ..paths import cache_root
from ..timing import interleaved

log = get_logger(__name__)

MIN_COSINE = 0.999  # the parity floor: structvpr export's for fp32 against PyTorch
PIN_ENV = "STRUCTVPR_CPU_RUNTIME"
RECORD_FORMAT = 1
ROUNDS, CALLS_PER_ROUND = 4, 3  # 12 timed calls per candidate (the median of them)


def machine_key(threads: int) -> dict:
    """What the fastest runtime depends on besides the model: CPU, SIMD flags, threads, versions."""
    from importlib import metadata

    key = {"cpu": cpu_model(), "simd": cpu_flags(), "threads": int(threads)}
    for dist in ("onnxruntime", "openvino"):
        try:
            key[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            key[dist] = None
    return key


def record_path(fingerprint: dict, precision: str, key: dict, directory: str | os.PathLike | None = None) -> Path:
    w, h = fingerprint["input_size"]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    model = f"{fingerprint['architecture']}-{fingerprint['weights_sha256'][:16]}-{int(w)}x{int(h)}"
    name = f"{model}-{precision}-{digest}.json"
    return Path(directory or cache_root() / "runtime_choice") / name


def pinned(candidates: Sequence[str]) -> str | None:
    """The runtime ``$STRUCTVPR_CPU_RUNTIME`` pins (checked against the candidates), or None."""
    value = os.environ.get(PIN_ENV, "").strip()
    if not value:
        return None
    if value not in candidates:
        raise ConfigError(f"${PIN_ENV}={value}: not a runtime auto can run here (here: {', '.join(candidates)})")
    return value


def read_record(path: Path, candidates: Sequence[str]) -> dict | None:
    """A cached record that is still usable (its choice is a candidate), else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get("chosen") not in candidates:
        return None
    return record


def measure(
    candidates: Sequence[str],
    make_runner: Callable[[str], object],
    reference: Callable[[np.ndarray], np.ndarray],
    batches: Sequence[np.ndarray],
) -> tuple[dict, dict]:
    """Parity and speed of each candidate: ``({name: result}, {name: runner of those that passed})``.

    ``batches``: the parity images, each a (1, H, W, 3) uint8 BGR batch at the input size;
    ``reference(batch)`` gives their reference descriptors; ``make_runner(name)`` a runner.
    """
    ref = np.concatenate([reference(b) for b in batches])
    results, runners = {}, {}
    for name in candidates:
        try:
            runner = make_runner(name)
            desc = np.concatenate([runner.run(b) for b in batches])
        except Exception as e:  # a runtime that cannot run this model is not a candidate
            results[name] = {"passed": False, "error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
            continue
        cos = (desc * ref).sum(axis=1)
        passed = bool(cos.min() >= MIN_COSINE)
        results[name] = {"passed": passed, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
        if passed:
            runners[name] = runner
    x = batches[0]
    calls = {name: (lambda runner=runner: runner.run(x)) for name, runner in runners.items()}
    timings = interleaved(calls, ROUNDS * CALLS_PER_ROUND, block=CALLS_PER_ROUND, pause_s=0.05)
    for name, t in timings.items():
        ms = np.asarray(t["wall_s"]) * 1000.0
        results[name]["p50_ms"] = round(float(np.percentile(ms, 50)), 3)
        results[name]["p95_ms"] = round(float(np.percentile(ms, 95)), 3)
    return results, runners


def reference_runner(build_torch_model, device, make_ort, int8: bool) -> tuple[Callable, str]:
    """(reference function, its description): PyTorch fp32 when the model has PyTorch weights
    (``build_torch_model``) and PyTorch is installed, else ``make_ort()`` on the file: for an int8
    export the runtime its export measured, for an fp32 ``.onnx`` the graph ``structvpr export``
    checked against PyTorch, and in a runtime-only install the fp32 export itself."""
    if build_torch_model is not None:
        try:
            import torch  # noqa: F401  (the reference structvpr export checks against)
        except ImportError:
            pass
        else:
            from .torch_backend import TorchRunner

            return TorchRunner(build_torch_model(), device, channels_last=False, fuse=False).run, "PyTorch fp32"
    if int8:
        return make_ort().run, "ONNX Runtime on this int8 export"
    why = "an exported file" if build_torch_model is None else "PyTorch is not installed"
    return make_ort().run, f"ONNX Runtime fp32 ({why})"


def _refusal(result: dict) -> str:
    return result["error"] if "error" in result else f"min cosine {result['min_cosine']:.5f}"


def choose_runtime(
    candidates: Sequence[str],
    *,
    fingerprint: dict,
    precision: str,
    threads: int,
    make_runner: Callable[[str], object],
    make_reference: Callable[[], tuple[Callable[[np.ndarray], np.ndarray], str]],
    batches: Callable[[], list[np.ndarray]],
    directory: str | os.PathLike | None = None,
) -> tuple[str, object | None, dict]:
    """(backend name, its runner when measured now else None, the record) for ``auto`` on the CPU.

    ``make_reference()`` -> (reference function, its description) and ``batches()`` (the parity
    images at the input size) are only called when a measurement is needed.
    """
    pin = pinned(candidates)
    if pin is not None:
        return pin, None, {"chosen": pin, "why": f"pinned by ${PIN_ENV}", "candidates": list(candidates)}
    key = machine_key(threads)
    path = record_path(fingerprint, precision, key, directory)
    record = read_record(path, candidates)
    if record is not None:
        log.debug("auto: %s, as measured on %s (%s)", record["chosen"], record.get("measured_at"), path)
        return record["chosen"], None, record
    log.info(
        "auto: measuring %s on this CPU for this model and size (once; cached in %s)",
        ", ".join(candidates),
        path.parent,
    )
    reference, reference_name = make_reference()
    images = batches()
    results, runners = measure(candidates, make_runner, reference, images)
    passed = {name: r for name, r in results.items() if r["passed"]}
    if not passed:
        raise ConfigError(
            f"auto: no CPU runtime reproduces {reference_name} to cosine >= {MIN_COSINE} for this model "
            f"({json.dumps(results)}); choose one with backend=..."
        )
    chosen = min(passed, key=lambda name: passed[name]["p50_ms"])
    refused = [f"{name} ({_refusal(r)})" for name, r in results.items() if not r["passed"]]
    why = (
        f"fastest ({passed[chosen]['p50_ms']:.2f} ms p50) of {', '.join(sorted(passed))}, which reproduce "
        f"{reference_name} to cosine >= {MIN_COSINE} on {len(images)} real frames"
        + (f"; refused: {', '.join(refused)}" if refused else "")
    )
    record = {
        "format": RECORD_FORMAT,
        "chosen": chosen,
        "why": why,
        "reference": reference_name,
        "candidates": results,
        "machine": key,
        "fingerprint": fingerprint,
        "precision": precision,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    except OSError as e:  # a cache: the choice still holds for this process
        log.warning("auto: could not cache the runtime choice in %s (%s)", path, e.strerror)
    log.info("auto: %s — %s", chosen, why)
    return chosen, runners[chosen], record
