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
