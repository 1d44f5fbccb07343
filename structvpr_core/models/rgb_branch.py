"""The RGB branch: torchvision MobileNetV2 cut into five stages by stride, with the MC head.

Stages (indices into ``torchvision.models.mobilenet_v2().features``):

====== ============ ======== ==========
stage  features     stride   channels
====== ============ ======== ==========
F1     [0:2]        2        16
F2     [2:4]        4        24
F3     [4:7]        8        32
F4     [7:14]       16       96
F5     [14:18]      32       320
====== ============ ======== ==========

``features[18]`` (the final 1×1 conv to 1280 channels), the global pooling and the classifier
are dropped: F5 is the 320-channel output before that conv. The descriptor is MC over F3..F5:
32 + 96 + 320 = 448 dimensions.
"""

from __future__ import annotations

from torch import nn

from .mc_head import MultiLevelConcat, StagedBackbone

ARCHITECTURE = "structvpr-rgb-mobilenetv2"
STAGE_SLICES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 18))
STAGE_CHANNELS = (16, 24, 32, 96, 320)
DIM = sum(STAGE_CHANNELS[i] for i in StagedBackbone.mc_stages)


class RGBBranch(StagedBackbone):
    architecture = ARCHITECTURE
    dim = DIM

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        if pretrained:
            from ..weights import load_imagenet_mobilenet_v2

            backbone = load_imagenet_mobilenet_v2()
        else:
            from torchvision.models import mobilenet_v2

            backbone = mobilenet_v2(weights=None)
        self.blocks = nn.ModuleList(nn.Sequential(*backbone.features[a:b]) for a, b in STAGE_SLICES)
        self.head = MultiLevelConcat()

    def init_kwargs(self) -> dict:
        """Constructor arguments a checkpoint needs to rebuild this module (weights come after)."""
        return {}
