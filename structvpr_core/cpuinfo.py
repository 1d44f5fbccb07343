"""The CPU we run on, as the runtimes care about it: its model and the SIMD extensions that decide
which kernels are fast (AVX2, AVX-512, VNNI and AMX for int8, AVX-512 BF16/FP16 and AMX for
reduced float precision). Used to key the ``auto`` runtime choice and to label benchmarks."""

from __future__ import annotations

import platform
from pathlib import Path

SIMD_FLAGS = frozenset(
    {
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_bf16",
        "amx_int8",
        "amx_fp16",
    }
)


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions of ``SIMD_FLAGS`` this CPU has (sorted; empty where /proc/cpuinfo is absent)."""
    flags = _cpuinfo_field("flags")
    return sorted(set(flags.split()) & SIMD_FLAGS) if flags else []
