"""StructVPR++'s weighted label-aware distillation: stage II when ``model.label_features`` is on.

Only the abstract of StructVPR++ (Shen et al., TPAMI 2025) was readable; the loss below is
**our design (paper text unavailable)**, summarised in the README section "StructVPR vs StructVPR++". Per
tuple (q, p, n_1..n_K), with the student's global part x_g^S, label features l_c^S and soft
masks A^S, and the frozen stage-I ++ teacher's x_g^D, t_c and presence::

    L_kd = φ(q, p) · Σ_I [ ‖x_g^D(I) − T(x_g^S(I))‖² + β Σ_c 1[c present in I] ‖t_c(I) − T_c(l_c^S(I))‖² ]
         + γ · Σ_I CE(A^S(I), SLME cluster map of I at stride 16)

(the triplet term on the student's full descriptor z is added by the loop). T is a linear
448 → 480 (as StructVPR's), T_c are C linear d_l → d_l (``losses.LabelProjectors``); "present"
means the cluster covers at least ``present_min`` (1 %) of the image's pixels in its label
map. Sums over I and the squared norms as in ``losses_kd`` (sums, not means; with K > 1
negatives each negative weighs 1/K, the per-triplet mean of ``losses_kd.tuple_image_weights``),
averaged over the B tuples; φ from the partition stage (ranked with each branch's full descriptor), exactly as
StructVPR's (``distill_structvpr.phi_function``).

CE (ours): the target is the one-hot cluster map of the label map area-downsampled to the
masks' stride-16 grid, i.e. per cell the fraction of its pixels in each cluster, renormalised
over the labelled pixels; cells without any labelled pixel are left out; per image the mean
over its cells of −Σ_c q_c log A_c. The CE is not φ-weighted: the masks are a property of each
image, not of the pair. With ``ce: false`` (ablation) it is dropped and the training input is
the plain image.

The teacher's outputs never change during the stage, so x_g^D, t (C·d_l) and the presence (C)
of every training image are cached in ``RUN/teacher_cache_pp/`` (as StructVPR caches its
descriptors; the meta also records the label config).

Logged parts (TensorBoard ``stage2/loss_kd_<part>``): ``global``, ``label`` (β included), ``ce``
(γ included).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..errors import ConfigError
from ..losses import LabelProjectors, Projector
from ..models import PP_SEG_ARCHITECTURE, SegBranch
from ..models.label_features import area_downsample
from .config import TrainConfig
from .context import RunContext
from .distill_structvpr import Phi, phi_function, teacher_descriptors
from .distillation import Distillation, TrainBatch
from .inputs import InputLoader
from .losses_kd import distillation_loss, tuple_image_weights

TEACHER_CACHE = "teacher_cache_pp"


class TeacherParts(nn.Module):
    """A ++ teacher whose rows are [x_g (480) ; t (C·d_l) ; presence (C)]: what the cache holds."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        self.dim = SegBranch.dim + teacher.clusters * teacher.label_dim + teacher.clusters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.teacher.parts(x)
        return torch.cat([out["global"], out["labels"].flatten(1), out["presence"]], dim=1)


def split_teacher_rows(rows: torch.Tensor, clusters: int, label_dim: int):
    """(x_g (..., 480), t (..., C, d_l), presence (..., C)) of cached teacher rows (..., 480 + C·d_l + C)."""
    g = SegBranch.dim
    t = rows[..., g : g + clusters * label_dim].unflatten(-1, (clusters, label_dim))
    return rows[..., :g], t, rows[..., g + clusters * label_dim :]


def soft_cross_entropy(log_masks: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """Σ over the tuple's images of the mean CE over labelled cells, averaged over tuples.

    ``log_masks``: (B, T, C, h, w) log A; ``target_masks``: (B, T, C, H, W) one-hot cluster masks
    at full resolution (all-zero for unlabelled pixels), area-downsampled here to (h, w).
    """
    b, t, c, h, w = log_masks.shape
    target = area_downsample(target_masks.flatten(0, 1).to(log_masks.dtype), (h, w)).view(b, t, c, h, w)
    mass = target.sum(dim=2)  # (B, T, h, w): fraction of labelled pixels in each cell
    labelled = (mass > 1e-6).to(log_masks.dtype)
    q = target / mass.clamp_min(1e-6).unsqueeze(2)
    per_cell = -(q * log_masks).sum(dim=2)
    per_image = (per_cell * labelled).sum(dim=(2, 3)) / labelled.sum(dim=(2, 3)).clamp_min(1.0)
    return per_image.sum(dim=1).mean()


class StructVPRPPDistillation(Distillation):
    """T (448 → 480), T_c (d_l → d_l per label), the φ-weighted global + label KD and the masks' CE."""

    name = "structvpr_pp"

    def __init__(self, student: nn.Module, cfg: TrainConfig) -> None:
        lf = cfg.model.plus_plus
        if lf is None:
            raise ConfigError("distillation structvpr_pp needs model.label_features (StructVPR++)")
        if getattr(student, "clusters", None) != lf.clusters or getattr(student, "label_dim", None) != lf.dim:
            raise ConfigError("distillation structvpr_pp: the student is not the ++ student of this config")
        self.lf = lf
        self.projector = Projector(student.global_dim, SegBranch.dim)
        self.label_projectors = LabelProjectors(lf.clusters, lf.dim)
        self.teacher_db: np.ndarray | None = None
        self.teacher_q: np.ndarray | None = None
        self.phi: Phi | None = None
        self.mask_loader: InputLoader | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {"projector": self.projector, "label_projectors": self.label_projectors}

    def prepare(self, ctx: RunContext) -> None:
        db, q = teacher_descriptors(
            ctx,
            cache_name=TEACHER_CACHE,
            architecture=PP_SEG_ARCHITECTURE,
            wrap=self._checked_teacher,
            extra_meta={"label_features": to_dict(self.lf)},
        )
        self.use_teacher(db, q, phi_function(ctx))
        if self.lf.ce:
            self.mask_loader = ctx.loader("rgb", with_masks=True)

    def _checked_teacher(self, teacher: nn.Module) -> nn.Module:
        if teacher.clusters != self.lf.clusters or teacher.label_dim != self.lf.dim:
            raise ConfigError(
                f"stage1_seg: the teacher has {teacher.clusters} label clusters of {teacher.label_dim} dimensions, "
                f"the config says {self.lf.clusters} of {self.lf.dim}; run stage I again (or use another --out)"
            )
        return TeacherParts(teacher)

    def use_teacher(self, teacher_db: np.ndarray, teacher_q: np.ndarray, phi: Phi) -> None:
        """Set the teacher's cached rows of the training split (database, queries) and φ."""
        width = SegBranch.dim + self.lf.clusters * self.lf.dim + self.lf.clusters
        if teacher_db.shape[1] != width or teacher_q.shape[1] != width:
            raise ConfigError(f"teacher rows have {teacher_db.shape[1]} values, expected {width}")
        self.teacher_db, self.teacher_q, self.phi = teacher_db, teacher_q, phi

    def tuple_loader(self, loader: InputLoader, epoch: int) -> Callable[[Path], torch.Tensor]:
        """The image and, for the CE term, its one-hot label-cluster masks: (3 + C, H, W)."""
        return self.mask_loader if self.mask_loader is not None else loader

    def forward(self, branch: nn.Module, modules: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = branch.parts(x[:, :3])
        return {
            "descriptors": parts["descriptor"],
            "projected": modules["projector"](parts["global"]),
            "label_projected": modules["label_projectors"](parts["labels"]),
            "log_masks": F.log_softmax(parts["logits"], dim=1),
        }

    def loss(self, batch: TrainBatch, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        projected = outputs["projected"]
        device = projected.device
        rows = batch.rows
        t_global, t_labels, t_presence = split_teacher_rows(
            self._teacher_tuples(rows).to(device), self.lf.clusters, self.lf.dim
        )
        phi = torch.from_numpy(self.phi(rows[:, 0], rows[:, 1])).to(device)
        # Computed even when every φ (or β, γ) is 0, so that T, T_c and the label head take part
        # in every step (DDP requires every rank to use the same parameters).
        kd_global = distillation_loss(projected, t_global, phi)
        present = (t_presence >= self.lf.present_min).to(projected.dtype)  # (B, T, C)
        per_label = (t_labels - outputs["label_projected"]).pow(2).sum(dim=-1)  # (B, T, C)
        w = tuple_image_weights(per_label.shape[1], per_label.dtype, device)[None, :, None]  # per triplet, as KD
        kd_label = self.lf.beta * (phi * (per_label * present * w).sum(dim=(1, 2))).mean()
        if self.lf.ce:
            ce = self.lf.gamma * soft_cross_entropy(outputs["log_masks"], batch.images[:, :, 3:])
        else:
            ce = 0.0 * outputs["log_masks"].sum()
        return kd_global + kd_label + ce, {"global": kd_global, "label": kd_label, "ce": ce}

    def _teacher_tuples(self, rows: np.ndarray) -> torch.Tensor:
        """(B, T, width) cached teacher rows of the tuple rows [q, p, n…] (a query, then database images)."""
        t_q = np.asarray(self.teacher_q[rows[:, 0]])[:, None]
        t_db = np.asarray(self.teacher_db[rows[:, 1:].reshape(-1)]).reshape(len(rows), rows.shape[1] - 1, -1)
        return torch.from_numpy(np.concatenate([t_q, t_db], axis=1).astype(np.float32))
