"""Multi-level concatenation (MC), the global descriptor head of both StructVPR branches.

f_i = L2Norm(GlobalMaxPool(F_i)) for the last three stage outputs, x = L2Norm(concat(f_3, f_4, f_5)).
Each level is normalised before concatenation so that no stage dominates by its scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiLevelConcat(nn.Module):
    """Maps a list of feature maps (B, C_i, H_i, W_i) to one (B, sum C_i) unit-norm descriptor."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = [F.normalize(torch.amax(f, dim=(2, 3)), p=2.0, dim=1, eps=self.eps) for f in features]
        return F.normalize(torch.cat(pooled, dim=1), p=2.0, dim=1, eps=self.eps)


class StagedBackbone(nn.Module):
    """Five stages (``self.blocks``) followed by MC over F3..F5: the shape both branches share.

    Subclasses build ``self.blocks`` (an ``nn.ModuleList`` of five stages) and ``self.head``.
    """

    mc_stages = (2, 3, 4)  # 0-based: F3, F4, F5

    @classmethod
    def dim_for(cls, model_args: dict) -> int:
        """The descriptor dimension of ``cls(**model_args)``: fixed for the StructVPR branches."""
        return cls.dim

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five stage outputs F1..F5 (strides 2, 4, 8, 16, 32)."""
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.stages(x)
        return self.head([stages[i] for i in self.mc_stages])
