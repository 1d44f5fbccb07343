"""The losses of StructVPR training, on tuples (q, p, n_1..n_K) of descriptors.

Stage II, per triplet (q, p, n) with student (RGB) descriptors x^D and teacher (seg)
descriptors x^S::

    L = L_vpr(x^D_q, x^D_p, x^D_n) + Σ_{I ∈ {q, p, n}} φ(q, p) · ‖x^S_I − T(x^D_I)‖²

- ‖·‖² is the squared L2 norm (a sum over the 480 dimensions, not a mean);
- both terms are averages over the triplets, as Eq. 6 is written per triplet: a tuple
  (q, p, n_1..n_K) is K triplets (q, p, n_k), so its distillation term is the mean over k of
  φ·(‖·‖²_q + ‖·‖²_p + ‖·‖²_{n_k}) = φ·(‖·‖²_q + ‖·‖²_p + (1/K) Σ_k ‖·‖²_{n_k})
  (``tuple_image_weights``: 1, 1, 1/K, …). K = 1 is exactly the paper's formula; with K > 1
  the negatives no longer weigh K times as much as in the triplet term (before the fix they
  were summed while the triplet term averaged over the K triplets);
- both terms are averaged over the batch (the triplet term over all B·K triplets, the
  distillation term over the B tuples' per-triplet means), so the loss does not scale with the
  batch size and DDP's gradient averaging over equal per-rank batches gives the single-process
  gradient;
- T(x^D) is not re-normalised (T is a plain linear layer; the paper writes no normalisation).

Stage I is the same call without a teacher: the triplet term alone. The training loop adds
``tuple_triplet_loss`` and a distillation's term (``distillation``; StructVPR's is
``distillation_loss`` with cached teacher descriptors, ``distill_structvpr``).

Tuples are tensors (B, 2+K, D) laid out [q, p, n_1, …, n_K] along dimension 1.

The low-quality-query distillation (``distill_lqq``, VPR4LQQ) uses ``descriptor_mse`` and
``ickd_loss`` (inter-channel correlation KD on intermediate feature maps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import triplet_loss


def tuple_image_weights(images: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Per-image weights (I,) that turn a sum over a tuple's images [q, p, n_1..n_K] into the mean
    over its K triplets of the sum over (q, p, n_k): 1 for q and p, 1/K for each negative.

    A tuple of fewer than 3 images (no negative) keeps weight 1 for every image.
    """
    w = torch.ones(images, dtype=dtype, device=device)
    if images >= 3:
        w[2:] = 1.0 / (images - 2)
    return w


def distillation_loss(projected: torch.Tensor, teacher: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """mean_b φ_b · Σ_I w_I ‖teacher_bI − projected_bI‖², for (B, I, D) tensors and φ of shape (B,);
    w = ``tuple_image_weights`` (the per-triplet mean of Eq. 6; w = 1 for K = 1)."""
    if projected.shape != teacher.shape or projected.dim() != 3:
        raise ValueError(
            f"expected two (B, I, D) tensors of one shape, got {tuple(projected.shape)} and {tuple(teacher.shape)}"
        )
    per_image = (teacher - projected).pow(2).sum(dim=2)  # (B, I)
    w = tuple_image_weights(per_image.shape[1], per_image.dtype, per_image.device)
    per_tuple = (per_image * w).sum(dim=1)
    return (phi.to(per_tuple.dtype) * per_tuple).mean()


def tuple_triplet_loss(student: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """The triplet term of (B, 2+K, D) tuples [q, p, n_1..n_K]: the mean over the B·K triplets."""
    if student.dim() != 3 or student.shape[1] < 3:
        raise ValueError(f"expected (B, 2+K, D) student tuples, got {tuple(student.shape)}")
    return triplet_loss(student[:, 0], student[:, 1], student[:, 2:], margin=margin)


def tuple_loss(
    student: torch.Tensor,
    margin: float = 0.1,
    projected: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    phi: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, triplet term, distillation term) of a batch of tuples.

    ``student``: (B, 2+K, D) descriptors; ``projected``: T(student), (B, 2+K, D_teacher);
    ``teacher``: (B, 2+K, D_teacher); ``phi``: (B,). Without ``projected`` (stage I, or stage II
    with method "none") the distillation term is 0.
    """
    vpr = tuple_triplet_loss(student, margin)
    if projected is None:
        return vpr, vpr, vpr.new_zeros(())
    # Computed even when every φ of the batch is 0, so that T takes part in every step (DDP
    # requires every rank to use the same parameters); T then gets a zero gradient.
    kd = distillation_loss(projected, teacher, phi)
    return vpr + kd, vpr, kd


def channel_correlation(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) feature maps -> (B, C, C) row-normalised inter-channel correlation matrices.

    Each channel is flattened over H·W and L2-normalised, G = F̂ F̂ᵀ (cosine similarities between
    channels), then each row of G is L2-normalised (VPR4LQQ's ``Loss_distill.similarity``).
    """
    if features.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) feature maps, got {tuple(features.shape)}")
    flat = F.normalize(features.flatten(2), p=2.0, dim=2)
    return F.normalize(flat @ flat.transpose(1, 2), p=2.0, dim=2)


def ickd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Inter-channel correlation KD: mean over the batch of ‖G_S − G_T‖_F (``channel_correlation``).

    ``student`` and ``teacher`` are (B, C, H, W) maps of one stage with the same B and C; their
    spatial sizes may differ (a low-resolution query against a high-resolution image), since G
    is C×C whatever H×W is: no resizing. As in VPR4LQQ (``src/loss/loss_distill.py``), without
    the learned 1×1 convolution of the original ICKD paper. VPR4LQQ takes one Frobenius norm
    over the whole (B, C, C) difference (it grows as √B); we average the per-image norms, so the
    value does not depend on the batch size (our choice).
    """
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(
            "student and teacher maps need the same batch and channels, "
            f"got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    diff = channel_correlation(student) - channel_correlation(teacher)
    return diff.flatten(1).norm(p=2, dim=1).mean()


def descriptor_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean over the batch of ‖v_S − v_T‖², the squared L2 distance (a sum over dimensions) of (..., D) descriptors."""
    if student.shape != teacher.shape:
        raise ValueError(f"expected descriptors of one shape, got {tuple(student.shape)} and {tuple(teacher.shape)}")
    return (student - teacher).pow(2).sum(-1).mean()
