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

import torch
from torch import nn

from .mc_head import MultiLevelConcat

ARCHITECTURE = "structvpr-rgb-mobilenetv2"
STAGE_SLICES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 18))
STAGE_CHANNELS = (16, 24, 32, 96, 320)
MC_STAGES = (2, 3, 4)  # 0-based: F3, F4, F5
DIM = sum(STAGE_CHANNELS[i] for i in MC_STAGES)


class RGBBranch(nn.Module):
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

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five stage outputs F1..F5 (strides 2, 4, 8, 16, 32)."""
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.stages(x)
        return self.head([stages[i] for i in MC_STAGES])
