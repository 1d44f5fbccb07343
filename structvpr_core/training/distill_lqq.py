"""Low-quality-query distillation (VPR4LQQ), the ``lqq`` stage's distillation.

From the paper and its code (Yang, Wang, Rizzo, Feng, "Distillation Improves Visual Place
Recognition for Low-Quality Queries", arXiv 2310.06906; jamesjin0516/VPR4LQQ): a frozen
teacher sees the high-quality (HQ) image, a student initialised from the teacher sees a
low-quality (LQ) version of it, and the student learns the teacher's global descriptor (MSE)
and its inter-channel correlations (ICKD, ``losses_kd.ickd_loss``). No place labels are needed.

Our design (the README, "Training a low-quality-query student", says which parts are the paper's):

- teacher: any RGB branch: the ImageNet model, a StructVPR checkpoint, or this run's stage II;
  the student is the same architecture with the teacher's weights;
- the stem and early stages frozen, ``first_trained_stage``..F5 trained (the MC head has no
  parameters); BatchNorm in eval mode (the stage's ``freeze_bn``);
- loss = w_mse · mean_batch ‖v_S − v_T‖² (L2-normalised 448-d descriptors) + w_ickd · mean over
  ``ickd_stages`` (default F3, F4, F5: the stages that feed the descriptor) of ICKD;
- the degraded copy: one spec of the configured set (``degrade.parse_degradation_set``) drawn per
  image from a generator seeded by (run seed, epoch, image path), applied to the image as read
  (full resolution), then resized to the input size as the ``Extractor`` would: deterministic
  under the seed, different each epoch, the same on ``--resume``. Validation sees every held-out
  image at every level of the set (``validation_views``; ranges drawn as at epoch 0).

Each training image becomes one (6, H, W) tensor: the normalised HQ image on channels 0–2, the
LQ one on 3–5 (``GoodAndDegraded``). The student's checkpoint records the teacher's fingerprint
(``teacher_fingerprint``: exactly what ``Extractor(teacher, image_size=...)`` reports) as
``query_encoder_for``, so maps built by the teacher accept it as their query encoder.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..degrade import DegradationSet, parse_degradation_set
from ..errors import ConfigError
from ..images import read_image, resize_image
from ..log import get_logger
from ..preprocess import normalise_nchw
from .config import TrainConfig
from .context import RunContext
from .distillation import Distillation, TrainBatch
from .inputs import InputLoader
from .losses_kd import descriptor_mse, ickd_loss
from .records import BEST

log = get_logger(__name__)

IMAGENET = "imagenet"
STAGE2 = "stage2"


def teacher_source(spec: str, ctx: RunContext | None = None) -> Path | None:
    """The teacher's checkpoint for ``lqq.teacher`` (None: the ImageNet model).

    ``stage2``: this run's stage-II student (``RUN/stage2-TAG/best.pt`` with ``--tag`` when it
    exists, else ``RUN/stage2/best.pt``); anything else is a checkpoint path.
    """
    if spec == IMAGENET:
        return None
    if spec == STAGE2:
        if ctx is None:
            raise ConfigError("lqq.teacher: stage2 names this run's stage II, which needs a run directory")
        tagged = ctx.stage_dir(STAGE2) / BEST
        path = tagged if tagged.is_file() else ctx.out / STAGE2 / BEST
        if not path.is_file():
            raise ConfigError(f"lqq.teacher: stage2: {path} does not exist; run stage2 first (or give a path)")
        return path
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"lqq.teacher: {spec}: no such checkpoint (expected imagenet, stage2 or a checkpoint path)")
    return path


def load_rgb_branch(source: Path | None) -> nn.Module:
    """The RGB branch of a checkpoint (``source``) or the ImageNet model (None), on the CPU."""
    from ..checkpoint import build_model_from_checkpoint
    from ..models import RGB_ARCHITECTURE, build_rgb_branch

    if source is None:
        return build_rgb_branch(pretrained=True)
    return build_model_from_checkpoint(source, expected_architecture=RGB_ARCHITECTURE)


def teacher_fingerprint(source: Path | None, image_size: tuple[int, int]) -> dict:
    """What ``Extractor(source, image_size=image_size)`` reports as its fingerprint (a teacher's map holds it)."""
    from ..extractor import Extractor

    return dict(Extractor(source, device="cpu", image_size=tuple(image_size), backend="torch").fingerprint)


def freeze_early_stages(branch: nn.Module, first_trained_stage: int) -> None:
    """Stages F1..F(first_trained_stage − 1) frozen (no gradient), the later ones trainable."""
    for i, block in enumerate(branch.blocks):
        block.requires_grad_(i + 1 >= first_trained_stage)


class GoodAndDegraded:
    """Image path -> (6, H, W): the normalised image at ``size`` (channels 0–2) and a degraded copy (3–5).

    The degradation is drawn from ``degradations`` with a generator seeded by (seed, epoch, the
    path as given), applied at the image's own resolution, then resized to ``size``.
    """

    def __init__(self, size: tuple[int, int], degradations: DegradationSet, seed: int, epoch: int):
        self.size = (int(size[0]), int(size[1]))
        self.degradations = degradations
        self.seed, self.epoch = int(seed), int(epoch)

    def rng(self, path: str | Path) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(str(path).encode())])

    def __call__(self, path: str | Path) -> torch.Tensor:
        image = read_image(path)
        low = self.degradations.apply(image, self.rng(path))
        both = np.stack([resize_image(image, self.size), resize_image(low, self.size)])
        x = normalise_nchw(both, "bgr")  # (2, 3, H, W), as the Extractor normalises
        return torch.from_numpy(x.reshape(6, *x.shape[2:]))


class LQQDistillation(Distillation):
    """The student on degraded images learns the frozen teacher's outputs on the good ones (MSE + ICKD)."""

    name = "lqq"

    def __init__(self, student: nn.Module, cfg: TrainConfig):
        lqq = cfg.lqq
        if lqq is None:
            raise ConfigError("the lqq distillation needs an lqq section in the config")
        self.w_mse, self.w_ickd = float(lqq.w_mse), float(lqq.w_ickd)
        self.ickd_stages = tuple(s - 1 for s in sorted(lqq.ickd_stages))  # 0-based
        self.degradations = parse_degradation_set(lqq.degradations)
        self.size = (int(cfg.data.image_size[0]), int(cfg.data.image_size[1]))
        self.seed = int(cfg.seed)
        self.teacher_spec = lqq.teacher
        freeze_early_stages(student, lqq.first_trained_stage)
        self.teacher: nn.Module | None = None  # set by prepare (frozen; not a trainable module)
        self.teacher_source: Path | None = None
        self.teacher_fingerprint: dict | None = None

    def prepare(self, ctx: RunContext) -> None:
        """Load the frozen teacher on the run's device and compute its fingerprint at the input size."""
        self.teacher_source = teacher_source(self.teacher_spec, ctx)
        self.use_teacher(load_rgb_branch(self.teacher_source), ctx.env.device)
        self.teacher_fingerprint = teacher_fingerprint(self.teacher_source, self.size)

    def use_teacher(self, teacher: nn.Module, device: torch.device | str = "cpu") -> None:
        """Set the teacher directly (``prepare`` does it from the config): eval mode, no gradients."""
        self.teacher = teacher.to(device).eval().requires_grad_(False)

    def tuple_loader(self, loader: InputLoader, epoch: int) -> GoodAndDegraded:
        return GoodAndDegraded(self.size, self.degradations, self.seed, epoch)

    def validation_views(self) -> dict[str, GoodAndDegraded]:
        """One tuple loader per degradation of the set, by its spec: validation sees every level."""
        return {
            str(d): GoodAndDegraded(self.size, DegradationSet((d,)), self.seed, 0) for d in self.degradations.choices
        }

    def forward(self, branch: nn.Module, modules: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The student on the degraded half: its descriptors and the feature maps ICKD compares."""
        stages = branch.stages(x[:, 3:])
        out = {"descriptors": branch.head([stages[i] for i in branch.mc_stages])}
        out.update({f"f{i + 1}": stages[i] for i in self.ickd_stages})
        return out

    def loss(self, batch: TrainBatch, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """w_mse · MSE + w_ickd · ICKD against the teacher on the good half; parts unweighted."""
        if self.teacher is None:
            raise RuntimeError("LQQDistillation.loss before prepare(): no teacher")
        good = batch.images[:, :, :3].flatten(0, 1)
        with torch.no_grad():
            t_stages = self.teacher.stages(good)
            t_desc = self.teacher.head([t_stages[i] for i in self.teacher.mc_stages]).float()
        mse = descriptor_mse(outputs["descriptors"].flatten(0, 1), t_desc)
        terms = [ickd_loss(outputs[f"f{i + 1}"].flatten(0, 1), t_stages[i].float()) for i in self.ickd_stages]
        ickd = torch.stack(terms).mean() if terms else mse.new_zeros(())
        return self.w_mse * mse + self.w_ickd * ickd, {"mse": mse, "ickd": ickd}
