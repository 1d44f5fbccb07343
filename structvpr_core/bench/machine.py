"""What the figures were measured on: CPU, cores, memory, load, library versions, threads."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from ..cpuinfo import cpu_flags, cpu_model


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "simd": cpu_flags(),
        "memory_gb": memory_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    from importlib import metadata

    from .. import __version__

    out = {"structvpr": __version__}
    for dist in (
        "torch",
        "torchvision",
        "onnxruntime",
        "onnxruntime-gpu",
        "openvino",
        "nncf",
        "onnx",
        "faiss-cpu",
        "faiss-gpu",
        "numpy",
        "opencv-python-headless",
        "rclpy",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
