"""Arguments shared by the commands that run the model (not a subcommand: the name starts with _)."""

from __future__ import annotations

import argparse

from ..backends.providers import BACKENDS


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference runtime: auto (CUDA torch on a GPU, ONNX Runtime on a CPU, exported and "
        "cached on first use), torch, onnxruntime or tensorrt (default: auto)",
    )
