"""Which network each stage trains: the StructVPR branches, or the StructVPR++ ones when
``model.label_features`` is on (one switch; absent or off, every stage is plain StructVPR)."""

from __future__ import annotations

from torch import nn

from ..slme import num_channels
from .config import TrainConfig


def architecture(kind: str, cfg: TrainConfig) -> str:
    """The architecture name of the ``seg`` (teacher) or ``rgb`` (student) branch of this config."""
    from ..models import PP_RGB_ARCHITECTURE, PP_SEG_ARCHITECTURE, RGB_ARCHITECTURE, SEG_ARCHITECTURE

    pp = cfg.model.plus_plus is not None
    if kind == "seg":
        return PP_SEG_ARCHITECTURE if pp else SEG_ARCHITECTURE
    return PP_RGB_ARCHITECTURE if pp else RGB_ARCHITECTURE


def build_branch(kind: str, cfg: TrainConfig) -> nn.Module:
    """A new ``seg`` branch (random init) or ``rgb`` branch (ImageNet init; a ++ label head random)."""
    from ..models import build_pp_student, build_pp_teacher, build_rgb_branch, build_seg_branch

    lf = cfg.model.plus_plus
    if kind == "seg":
        c = num_channels(cfg.slme)
        return build_seg_branch(c) if lf is None else build_pp_teacher(c, **lf.model_args())
    return build_rgb_branch(pretrained=True) if lf is None else build_pp_student(pretrained=True, **lf.model_args())
