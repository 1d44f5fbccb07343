"""The segmentation branch "MobileNet-L": the light depth stream of MobileSal (Wu et al.,
TPAMI 2021), fed with the SLME tensor instead of a depth map, randomly initialised.

Block layout (torchvision ``InvertedResidual`` blocks: 1×1 expand, 3×3 depthwise, 1×1 linear
projection, BatchNorm, ReLU6; MobileSal's depth stream uses the same block with t, c, n, s):

====== ===================== ============= ======== ==========
stage  blocks (t, c, n)      first stride  stride   channels
====== ===================== ============= ======== ==========
F1     t=1, c=16,  n=2       2             2        16
F2     t=4, c=32,  n=2       2             4        32
F3     t=4, c=64,  n=2       2             8        64
F4     t=4, c=96,  n=2       2             16       96
F5     t=4, c=320, n=2       2             32       320
====== ===================== ============= ======== ==========

t = expansion ratio, n = blocks per stage (the second block of each stage has stride 1 and a
residual connection). The input has C channels (6 for the paper's SLME). The descriptor is MC
over F3..F5: 64 + 96 + 320 = 480 dimensions.
"""

from __future__ import annotations

from torch import nn

from .mc_head import MultiLevelConcat, StagedBackbone

ARCHITECTURE = "structvpr-seg-mobilenetl"
# (expansion t, output channels c, number of blocks n); every stage starts with stride 2.
STAGE_SETTINGS = ((1, 16, 2), (4, 32, 2), (4, 64, 2), (4, 96, 2), (4, 320, 2))
STAGE_CHANNELS = tuple(c for _, c, _ in STAGE_SETTINGS)
DIM = sum(STAGE_CHANNELS[i] for i in StagedBackbone.mc_stages)


class SegBranch(StagedBackbone):
    architecture = ARCHITECTURE
    dim = DIM

    def __init__(self, in_channels: int = 6) -> None:
        super().__init__()
        from torchvision.models.mobilenetv2 import InvertedResidual

        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        blocks = []
        inp = in_channels
        for t, c, n in STAGE_SETTINGS:
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(inp, c, stride=2 if i == 0 else 1, expand_ratio=t))
                inp = c
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.head = MultiLevelConcat()
        self._init_weights()

    def _init_weights(self) -> None:
        # The same initialisation torchvision gives MobileNetV2 (random init, as in the paper).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_kwargs(self) -> dict:
        return {"in_channels": self.in_channels}
