"""StructVPR++ label features: the pooling, the presence and the single-vector descriptor.

StructVPR++ (Shen et al., TPAMI 2025) decouples label-specific features from the global
descriptor and compares images label by label. Only the paper's abstract was readable here,
so the formulas below are **our design (paper text unavailable)**, summarised in
the README section "StructVPR vs StructVPR++":

- G = concat(F4, upsample(F5)): 96 + 320 = 416 channels at stride 16 (F5 is upsampled
  bilinearly to F4's size, which is ×2 except when an odd stride-16 size rounds up);
- masks A_c (B, C, h, w), non-negative: the student's softmax over C label logits, or the
  teacher's true SLME cluster masks area-downsampled to stride 16;
- P: a 1×1 conv 416 → d_l; label feature l_c = L2( Σ_hw A_c·P(G) / (Σ_hw A_c + ε) );
- presence p_c = mean_hw A_c;
- descriptor z = L2( [ x_g ; √λ · w_c · p̂_c · l_c  for c = 1..C ] ), p̂ = p / ‖p‖, with w_c
  the per-cluster retrieval weights (``slme.label_retrieval_weights``: the SLME prior scaled to
  [0, 1], dynamic → 0). Without presence weighting p̂_c = 1/√C for every label (our choice: the
  label part keeps the scale a uniform presence would give).

Because x_g and every l_c are unit vectors, for two images a and b

    z_a · z_b = ( cos(x_a, x_b) + λ Σ_c w_c² p̂_c^a p̂_c^b cos(l_c^a, l_c^b) ) / (‖u_a‖ ‖u_b‖)

with u the descriptor before the final L2 and ‖u‖² = 1 + λ Σ_c w_c² p̂_c²: the label parts are
compared label by label, weighted by how much of each label both images show, and the whole
thing stays ONE vector (faiss, the map database and the node need no second search).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .label_scores import aligned_scores, split_descriptor  # noqa: F401  (numpy, torch-free)

G_CHANNELS = 96 + 320  # F4 + F5 channels, the same for both branches
DEFAULT_EPS = 1e-6


def stride16_features(f4: torch.Tensor, f5: torch.Tensor) -> torch.Tensor:
    """G = concat(F4, F5 upsampled bilinearly to F4's size): (B, 416, h, w) at stride 16."""
    # Plain ints: an ONNX export (at a fixed input size) then gets constant sizes and a static descriptor dim.
    size = (int(f4.shape[-2]), int(f4.shape[-1]))
    up = F.interpolate(f5, size=size, mode="bilinear", align_corners=False)
    return torch.cat([f4, up], dim=1)


def area_downsample(masks: torch.Tensor, size) -> torch.Tensor:
    """Full-resolution masks (B, C, H, W) averaged over the cells of a ``size`` = (h, w) grid."""
    return F.adaptive_avg_pool2d(masks, tuple(int(s) for s in size))


def label_pool(features: torch.Tensor, masks: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Unit label features (B, C, D): l_c = L2( Σ_hw A_c·P / (Σ_hw A_c + ε) ).

    ``features``: P(G), (B, D, h, w); ``masks``: A, (B, C, h, w), non-negative. A label with an
    all-zero mask gives a zero vector (the L2 of a zero sum stays zero).
    """
    if features.shape[0] != masks.shape[0] or features.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"features {tuple(features.shape)} and masks {tuple(masks.shape)} do not align")
    a = masks.flatten(2)  # (B, C, hw)
    summed = torch.matmul(a, features.flatten(2).transpose(1, 2))  # (B, C, D): MatMul exports and quantises
    mean = summed / (a.sum(dim=2, keepdim=True) + eps)
    return F.normalize(mean, p=2.0, dim=2, eps=1e-12)


def presence(masks: torch.Tensor) -> torch.Tensor:
    """p_c = mean_hw A_c: (B, C) from masks (B, C, h, w)."""
    return masks.mean(dim=(2, 3))


def label_scales(
    presence_: torch.Tensor, weights: torch.Tensor, lam: float, presence_weighting: bool = True, eps: float = 1e-12
) -> torch.Tensor:
    """√λ · w_c · p̂_c, (B, C): the factor each unit label feature gets inside the descriptor."""
    if presence_weighting:
        p_hat = presence_ / presence_.norm(p=2, dim=1, keepdim=True).clamp_min(eps)
    else:
        p_hat = torch.full_like(presence_, 1.0 / math.sqrt(presence_.shape[1]))
    return math.sqrt(lam) * weights.to(presence_.dtype)[None] * p_hat


def compose_descriptor(
    global_desc: torch.Tensor,
    labels: torch.Tensor,
    presence_: torch.Tensor,
    weights: torch.Tensor,
    lam: float,
    presence_weighting: bool = True,
) -> torch.Tensor:
    """z = L2([x_g ; √λ w_c p̂_c l_c, c = 1..C]): (B, D_g + C·d_l) from x_g (B, D_g), l (B, C, d_l), p (B, C)."""
    scales = label_scales(presence_, weights, lam, presence_weighting)
    parts = (scales[..., None] * labels).reshape(labels.shape[0], int(labels.shape[1]) * int(labels.shape[2]))
    return F.normalize(torch.cat([global_desc, parts], dim=1), p=2.0, dim=1, eps=1e-12)


def check_label_args(clusters: int, label_dim: int, weights, lam: float, eps: float) -> list[float]:
    """The retrieval weights as a list of ``clusters`` floats; ValueError on a bad argument."""
    if clusters < 1 or label_dim < 1:
        raise ValueError(f"clusters and label_dim must be positive, got {clusters} and {label_dim}")
    if weights is None:
        raise ValueError("weights: one retrieval weight per label cluster is required (slme.label_retrieval_weights)")
    weights = [float(w) for w in weights]
    if len(weights) != clusters or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"weights: expected {clusters} finite non-negative values, got {weights}")
    if not (math.isfinite(lam) and lam >= 0) or not eps > 0:
        raise ValueError(f"lam must be finite and >= 0 and eps > 0, got {lam} and {eps}")
    return weights
