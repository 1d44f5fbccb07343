"""Inference-only folding of BatchNorm into the preceding convolution.

In eval mode BatchNorm is a per-channel affine map, so it can be folded into the conv weights
(same outputs up to float rounding, ~1e-7 here). Measured on the RGB branch at 640×480 on one
CPU thread: ~25 % less CPU time per image. Never use it on a model that is still training.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every Conv2d → BatchNorm2d pair inside an nn.Sequential, in place; returns ``model``."""
    if model.training:
        raise ValueError("fuse_conv_bn needs a model in eval mode")
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return model
