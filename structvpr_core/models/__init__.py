"""The two StructVPR branches and their registry by architecture name.

- ``structvpr-rgb-mobilenetv2``: RGB branch, torchvision MobileNetV2 (ImageNet init), 448-d.
- ``structvpr-seg-mobilenetl``: segmentation branch, MobileNet-L on SLME input, random init, 480-d.

Both map (B, C, H, W) to L2-normalised (B, dim) descriptors and expose ``.stages(x)`` (the five
stage outputs, strides 2..32) and ``.dim``.
"""

from __future__ import annotations

from .mc_head import MultiLevelConcat
from .rgb_branch import RGBBranch
from .seg_branch import SegBranch

# The architecture names a checkpoint records; compare with these, never with a string literal.
RGB_ARCHITECTURE = RGBBranch.architecture
SEG_ARCHITECTURE = SegBranch.architecture
ARCHITECTURES = {RGBBranch.architecture: RGBBranch, SegBranch.architecture: SegBranch}
DIMS = {name: cls.dim for name, cls in ARCHITECTURES.items()}


def build_rgb_branch(pretrained: bool = True) -> RGBBranch:
    """The RGB branch; ``pretrained`` loads the checksum-verified ImageNet weights (offline)."""
    return RGBBranch(pretrained=pretrained)


def build_seg_branch(in_channels: int = 6) -> SegBranch:
    """The seg branch for an SLME input of ``in_channels`` channels (``slme.num_channels(cfg)``)."""
    return SegBranch(in_channels=in_channels)


__all__ = [
    "ARCHITECTURES",
    "DIMS",
    "RGB_ARCHITECTURE",
    "SEG_ARCHITECTURE",
    "MultiLevelConcat",
    "RGBBranch",
    "SegBranch",
    "build_rgb_branch",
    "build_seg_branch",
]
