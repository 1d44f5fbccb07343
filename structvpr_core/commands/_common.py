"""Arguments shared by the commands that run the model (not a subcommand: the name starts with _)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backends.providers import BACKENDS


def add_size_argument(p: argparse.ArgumentParser, what: str = "network input size") -> None:
    """--size W H, default the paper's 640×480 (``what``: what the size is in this command)."""
    p.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=(640, 480),
        metavar=("W", "H"),
        help=f"{what} (default: 640 480, the paper's)",
    )


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference runtime: auto (CUDA torch on a GPU; on a CPU the fastest of ONNX Runtime and "
        "OpenVINO fp32/bf16/fp16 that reproduces PyTorch to cosine >= 0.999, measured once per machine "
        "and model, exported and cached on first use), torch, onnxruntime, openvino, openvino-bf16, "
        "openvino-fp16 or tensorrt (default: auto)",
    )


def add_query_arguments(p: argparse.ArgumentParser, *, what: str) -> None:
    """--query-degrade, --query-checkpoint and --seed: low-quality queries (``what``: what the database is)."""
    p.add_argument(
        "--query-degrade",
        default="none",
        metavar="SPEC",
        help="degrade each query image first, e.g. 'size=160x120,jpeg=10' (steps: size=WxH, scale=F, "
        "interp=..., jpeg=Q, gray, bits=N, h264=qp:QP, h265=qp:QP; numbers may be ranges LO..HI); "
        "the model then resizes it to its input size (default: none)",
    )
    p.add_argument(
        "--query-checkpoint",
        type=Path,
        metavar="PATH",
        help=f"embed the queries with this model instead ({what} keeps its own): a query encoder "
        "(low-quality-query student) trained for that model; any other model is refused",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random draws of a --query-degrade with ranges (query i uses [seed, i]; default: 0)",
    )


def model_conf(args: argparse.Namespace) -> dict:
    """The ``model`` section of a pipeline step's conf (``mapbuild.MODEL_CONF``) from the model flags.

    ``batch_size`` only where the command has ``--batch-size``; otherwise the step's default stays.
    """
    conf = {
        "checkpoint": args.checkpoint,
        "image_size": tuple(args.size),
        "device": args.device,
        "backend": args.backend,
    }
    if getattr(args, "batch_size", None) is not None:
        conf["batch_size"] = args.batch_size
    return conf
