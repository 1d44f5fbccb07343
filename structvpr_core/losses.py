"""Losses and the distillation projector of StructVPR.

- ``triplet_loss``: max(d(q, p) − d(q, n) + m, 0) with Euclidean d, averaged over the batch
  (stage I for both branches, and the VPR term of stage II).
- ``Projector``: T, the linear map from the RGB descriptor (448) to the seg descriptor (480)
  space used in stage II's distillation term ‖x^S − T(x^D)‖².
- ``LabelProjectors``: StructVPR++'s T_c, one linear map d_l → d_l per label cluster, from the
  student's label features to the teacher's (our design, paper text unavailable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MARGIN = 0.1


def triplet_loss(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """Triplet margin loss with L2 distance, averaged over all triplets.

    ``q`` and ``p`` are (B, D); ``n`` is (B, D) or (B, K, D) for K negatives per query, in which
    case every (q, p, n_k) is a triplet and the mean runs over B·K.
    """
    if n.dim() == 3:
        k = n.shape[1]
        q = q.unsqueeze(1).expand(-1, k, -1).reshape(-1, q.shape[-1])
        p = p.unsqueeze(1).expand(-1, k, -1).reshape(-1, p.shape[-1])
        n = n.reshape(-1, n.shape[-1])
    return F.triplet_margin_loss(q, p, n, margin=margin, p=2.0, reduction="mean")


class Projector(nn.Module):
    """T of stage II: a linear layer (with bias) from the RGB to the seg descriptor space."""

    def __init__(self, in_dim: int = 448, out_dim: int = 480) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class LabelProjectors(nn.Module):
    """T_c for c = 1..C: C independent linear layers (with bias) d_l → d_l, applied label by label.

    Input (..., C, d_l), output (..., C, d_l); each layer is initialised like ``nn.Linear``.
    """

    def __init__(self, clusters: int = 6, dim: int = 64) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(clusters, dim, dim))  # (C, out, in)
        self.bias = nn.Parameter(torch.empty(clusters, dim))
        bound = 1.0 / math.sqrt(dim)
        for c in range(clusters):
            nn.init.kaiming_uniform_(self.weight[c], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ci,coi->...co", x, self.weight) + self.bias
