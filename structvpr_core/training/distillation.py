"""A distillation: what a training stage adds to the triplet loss, as one object the loop calls.

The epoch loop (``stage``) knows no distillation by name. It trains ``branch`` (the student)
together with the distillation's own trainable modules, and per optimiser step computes::

    loss = L_vpr(outputs["descriptors"]) + distillation.loss(batch, outputs)[0]

Plain training (stage I, and stage II with ``partition.method: none``) uses ``NoDistillation``.

The contract
------------
A distillation is a subclass of ``Distillation`` with a unique ``name``, built as
``cls(student, cfg)`` (the student branch before training, the run's ``TrainConfig``; create the
trainable modules here, so that their random init follows the stage's seed). The stage that
builds it calls ``prepare``; the loop calls ``modules`` once, ``tuple_loader`` every epoch and
``forward`` and ``loss`` every step:

1. ``modules() -> dict[str, nn.Module]``: extra *trainable* modules (StructVPR: T). Called once;
   must return the same module objects every time. The loop moves them to the device, trains
   them with the optimiser (learning rate ``stage.projector_lr``, else ``lr``), wraps them
   together with the branch in one DDP module, and saves their weights in ``state.pt`` under
   ``modules`` (by name) so that ``--resume`` restores them. They are training aids: ``best.pt``
   holds the branch alone. Every parameter must take part in every step's loss (DDP runs
   without ``find_unused_parameters``); a zero weight is fine, a skipped module is not.
   Frozen teachers are *not* modules: keep them as plain attributes (they are neither trained,
   nor wrapped, nor saved), on ``ctx.env.device``.
2. ``prepare(ctx)``: once per stage, on every DDP rank, before the loop starts (also when
   resuming; ``stage2.train_stage2`` calls it); ``ctx`` is the run's ``context.RunContext``
   (config, run and stage directories, training split, input loaders, ``env``). Load teachers,
   compute or read caches here (rank 0 writes files, then ``distributed.barrier``). Raise
   ``ConfigError`` when a stage this one needs has not run.
3. ``tuple_loader(loader, epoch) -> Callable[[Path], Tensor]``: what each image of a training
   tuple becomes in this epoch, from its path: a (C, H, W) tensor. The default is the stage's
   own ``loader`` (ImageNet-normalised RGB for the student, as mining and validation see it).
   A distillation that needs the raw pixels, or two versions of every image, returns its own
   callable; ``epoch`` lets its random draws differ per epoch yet repeat on ``--resume``. It
   runs in the DataLoader workers, so it must pickle (a module-level class, not a lambda).
4. ``forward(branch, modules, x) -> dict[str, Tensor]``: the student's forward pass, run inside
   the DDP-wrapped module (so it must be where the trainable modules are called). ``x`` is the
   (B·T, C, H, W) input batch of the B training tuples of T images each, as ``tuple_loader``
   made it. Return ``"descriptors"`` (B·T, D) plus anything the loss needs, each a tensor with
   one row per image; the default returns ``{"descriptors": branch(x)}``. Intermediate feature
   maps come from ``branch.stages(x)`` (the five stage outputs), and ``branch.head([...])``
   makes the descriptor from them.
5. ``loss(batch, outputs) -> (Tensor, dict[str, Tensor])``: the distillation term (a scalar
   added to the triplet term; it is logged as ``loss_kd``) and its named parts when it has more
   than one (logged to TensorBoard as ``<stage>/loss_kd_<name>``; the same names every step).
   ``outputs`` is what ``forward`` returned, reshaped to (B, T, ...) and cast to float32.
   ``batch`` (a ``TrainBatch``) holds the (B, T, C, H, W) tensors ``x`` came from, on the
   device, and the tuple rows (B, T) ``[query, positive, negatives…]`` indexing
   ``ctx.train.queries`` and ``ctx.train.database`` (teacher caches are looked up with them).

Adding one
----------
A new distillation is a new file ``training/distill_<name>.py`` defining one subclass whose
``name`` is ``<name>``; ``build_distillation("<name>", ...)`` finds it by that file name (hloc
loads its extractors the same way), so neither the loop nor this module changes. Choosing it
for a stage is the stage's job (``stage2.distillation_name``). The two planned ones fit as:

- StructVPR++ label-feature KD (built: ``distill_structvpr_pp``): the label head is part of the
  deployed student (``models.StructVPRPPStudent``), so ``modules()`` returns only T and the T_c;
  ``forward`` runs ``branch.parts(x)`` and returns the descriptors, T(x_g), T_c(l_c) and the
  masks' log-probabilities; ``tuple_loader`` adds the label-cluster masks to each image for the
  CE term; ``prepare`` caches the ++ teacher's x_g, t_c and presence; ``loss`` names its parts.
- Low-quality-query KD (``distill_lqq``, the ``lqq`` stage, done this way): ``prepare`` loads
  the frozen high-quality teacher; ``tuple_loader`` reads each image once and returns its
  normalised tensor and that of a degraded copy (``structvpr_core.degrade`` on the uint8
  pixels, its generator seeded from the image and ``epoch``), stacked along channels (6, H, W);
  ``forward`` runs the student on the degraded half with ``branch.stages`` and returns its
  descriptors and the intermediate maps it distils; ``loss`` runs the teacher (no grad) on the
  high-quality half of ``batch.images`` and returns MSE on global descriptors +
  inter-channel-correlation KD, ``{"mse": …, "ickd": …}``. ``test/test_distillation.py`` runs a
  toy of exactly this shape. Its loss ignores ``batch.rows``, so it needs no place labels: the
  lqq stage feeds it from a batch source that mines nothing (``batches.ImageBatches``, single
  images, so no triplet term) and validates it with ``validation.DistillationValidation`` (its
  own loss on held-out images) instead of Recall@N.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig
from .context import RunContext
from .inputs import InputLoader

MODULE_PREFIX = "distill_"


@dataclass
class TrainBatch:
    """One training batch as a distillation's ``loss`` sees it."""

    images: torch.Tensor  # (B, T, C, H, W) the tuples' tensors (from ``tuple_loader``), on the device
    rows: np.ndarray  # (B, T) int64: [query index, positive db index, negative db indices…]


class Distillation:
    """The interface (see the module docstring for the contract); the defaults distil nothing."""

    name: ClassVar[str] = ""

    def modules(self) -> dict[str, nn.Module]:
        """Extra trainable modules, by name (the same objects every call)."""
        return {}

    def prepare(self, ctx: RunContext) -> None:
        """Once per stage on every rank, before the first epoch: teachers, caches."""

    def tuple_loader(self, loader: InputLoader, epoch: int) -> Callable[[Path], torch.Tensor]:
        """Image path -> the (C, H, W) tensor a training batch of ``epoch`` holds (picklable); default: ``loader``."""
        return loader

    def forward(self, branch: nn.Module, modules: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The student's outputs for the (B·T, C, H, W) batch ``x``; ``"descriptors"`` is required."""
        return {"descriptors": branch(x)}

    def loss(self, batch: TrainBatch, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(distillation term, its named parts) for the batch; ``outputs`` as (B, T, ...) float32."""
        raise NotImplementedError


class NoDistillation(Distillation):
    """Plain training: the triplet loss alone (stage I; stage II with method "none")."""

    name = "none"

    def __init__(self, student: nn.Module | None = None, cfg: TrainConfig | None = None) -> None:
        pass

    def loss(self, batch: TrainBatch, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return outputs["descriptors"].new_zeros(()), {}


def available_distillations() -> list[str]:
    """Names ``build_distillation`` accepts: "none" and one per ``distill_<name>.py`` of this package."""
    found = sorted(p.stem[len(MODULE_PREFIX) :] for p in Path(__file__).parent.glob(f"{MODULE_PREFIX}*.py"))
    return [NoDistillation.name, *found]


def distillation_class(name: str) -> type[Distillation]:
    """The class registered under ``name`` (the ``Distillation`` subclass of ``distill_<name>.py``)."""
    if name == NoDistillation.name:
        return NoDistillation
    unknown = ConfigError(f"distillation {name!r}: unknown (known: {', '.join(available_distillations())})")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise unknown
    module_name = f"{__package__}.{MODULE_PREFIX}{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise unknown from None
    found = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, Distillation) and c.__module__ == module_name and c.name == name
    ]
    if len(found) != 1:
        raise TypeError(f"{module_name}: expected one Distillation subclass named {name!r}, found {len(found)}")
    return found[0]


def build_distillation(name: str, student: nn.Module, cfg: TrainConfig) -> Distillation:
    """The distillation ``name`` for ``student`` (its trainable modules are created here)."""
    return distillation_class(name)(student, cfg)
