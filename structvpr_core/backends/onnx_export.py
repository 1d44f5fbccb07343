"""The raw PyTorch -> ONNX conversion of the RGB branch (the graph of ``onnx_format``), written atomically.

Used by the ONNX cache (first use of a checkpoint) and by ``structvpr export`` (which adds the
parity checks and int8). Exporter: PyTorch's TorchScript-based exporter (``dynamo=False``): ~1 s
and no onnxscript dependency. It is deprecated in PyTorch ≥ 2.9 but present in the pinned 2.14.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..atomic import atomic_write
from .onnx_format import INPUT_NAME, OPSET, OUTPUT_NAME


def export_onnx(model, path: str | os.PathLike, *, image_size: tuple[int, int], opset: int = OPSET) -> None:
    """Write ``model`` (an RGB branch in eval mode, on the CPU) as ONNX to ``path``, atomically.

    BatchNorm is folded into the convolutions first (a copy; ``model`` is left as it is). The
    MobileNetV2 stages, global max pooling of F3..F5, per-level L2 normalisation, concatenation
    and the final L2 normalisation all end up inside the graph. A StructVPR++ student
    (``onnx_outputs = ("descriptor", "masks")``) gets its label head in the graph too, and its
    soft label masks as the second output.
    """
    import copy

    import torch

    from ..models.fusion import fuse_conv_bn

    if model.training:
        raise ValueError("export_onnx needs a model in eval mode")
    model = fuse_conv_bn(copy.deepcopy(model).float().cpu())
    names = list(getattr(model, "onnx_outputs", (OUTPUT_NAME,)))
    if names[0] != OUTPUT_NAME:
        raise ValueError(f"the first output must be {OUTPUT_NAME!r}, the model names {names}")
    if len(names) > 1:
        model.export_masks = True  # on the copy: forward now returns (descriptor, masks)
    w, h = image_size
    dummy = torch.zeros(1, 3, int(h), int(w))

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices (see module docstring)
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                do_constant_folding=True,
            )

    atomic_write(path, write)
