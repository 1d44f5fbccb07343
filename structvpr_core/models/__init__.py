"""The StructVPR and StructVPR++ branches and their registry by architecture name.

- ``structvpr-rgb-mobilenetv2``: RGB branch, torchvision MobileNetV2 (ImageNet init), 448-d.
- ``structvpr-seg-mobilenetl``: segmentation branch, MobileNet-L on SLME input, random init, 480-d.
- ``structvpr-pp-rgb-mobilenetv2``: the StructVPR++ RGB student (RGB branch + label head),
  448 + C·d_l (832 with the defaults C = 6, d_l = 64); our design, see ``structvpr_pp``.
- ``structvpr-pp-seg-mobilenetl``: the StructVPR++ seg teacher (training only), 480 + C·d_l.

All map (B, C, H, W) to L2-normalised (B, dim) descriptors and expose ``.stages(x)`` (the five
stage outputs, strides 2..32) and ``.dim``. The ++ dimensions depend on the model arguments:
``DIMS`` holds the defaults, ``descriptor_dim(architecture, model_args)`` the exact value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .architectures import (
    DIMS,
    PP_RGB_ARCHITECTURE,
    PP_SEG_ARCHITECTURE,
    RGB_ARCHITECTURE,
    RGB_ARCHITECTURES,
    SEG_ARCHITECTURE,
)

if TYPE_CHECKING:
    from .mc_head import MultiLevelConcat
    from .rgb_branch import RGBBranch
    from .seg_branch import SegBranch
    from .structvpr_pp import StructVPRPPStudent, StructVPRPPTeacher

# The networks need PyTorch: they load on first use (PEP 562 ``__getattr__``), so that the names
# and sizes above, and ``models.label_scores``, serve a runtime-only install that has no torch.
_NETWORKS = ("ARCHITECTURES", "MultiLevelConcat", "RGBBranch", "SegBranch", "StructVPRPPStudent", "StructVPRPPTeacher")


def _networks() -> dict:
    from ..devices import require_torch

    require_torch("the PyTorch models (a .pt checkpoint, the ImageNet model, export or training)")
    from .mc_head import MultiLevelConcat
    from .rgb_branch import RGBBranch
    from .seg_branch import SegBranch
    from .structvpr_pp import StructVPRPPStudent, StructVPRPPTeacher

    classes = (RGBBranch, SegBranch, StructVPRPPStudent, StructVPRPPTeacher)
    found = {cls.__name__: cls for cls in (MultiLevelConcat, *classes)}
    found["ARCHITECTURES"] = {cls.architecture: cls for cls in classes}
    return found


def __getattr__(name: str):
    if name in _NETWORKS:
        return _networks()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def descriptor_dim(architecture: str, model_args: dict | None = None) -> int:
    """The descriptor dimension of ``architecture`` built with ``model_args`` (KeyError: unknown name)."""
    return _networks()["ARCHITECTURES"][architecture].dim_for(dict(model_args or {}))


def build_rgb_branch(pretrained: bool = True) -> RGBBranch:
    """The RGB branch; ``pretrained`` loads the checksum-verified ImageNet weights (offline)."""
    return _networks()["RGBBranch"](pretrained=pretrained)


def build_seg_branch(in_channels: int = 6) -> SegBranch:
    """The seg branch for an SLME input of ``in_channels`` channels (``slme.num_channels(cfg)``)."""
    return _networks()["SegBranch"](in_channels=in_channels)


def build_pp_student(pretrained: bool = True, **label_args) -> StructVPRPPStudent:
    """The StructVPR++ student; ``label_args``: clusters, label_dim, weights (required), lam,
    presence_weighting, eps (see ``structvpr_pp``)."""
    return _networks()["StructVPRPPStudent"](pretrained=pretrained, **label_args)


def build_pp_teacher(in_channels: int = 6, **label_args) -> StructVPRPPTeacher:
    """The StructVPR++ seg teacher for an SLME input of ``in_channels`` channels (plus C mask channels)."""
    return _networks()["StructVPRPPTeacher"](in_channels=in_channels, **label_args)


__all__ = [
    "ARCHITECTURES",
    "DIMS",
    "PP_RGB_ARCHITECTURE",
    "PP_SEG_ARCHITECTURE",
    "RGB_ARCHITECTURE",
    "RGB_ARCHITECTURES",
    "SEG_ARCHITECTURE",
    "MultiLevelConcat",
    "RGBBranch",
    "SegBranch",
    "StructVPRPPStudent",
    "StructVPRPPTeacher",
    "build_pp_student",
    "build_pp_teacher",
    "build_rgb_branch",
    "build_seg_branch",
    "descriptor_dim",
]
