"""The epoch loop shared by stage I (seg or RGB branch), stage II (the student and a distillation) and the lqq stage.

``run_stage`` reads top to bottom:

1. ``resume``: continue from ``state.pt`` when present (weights, optimiser, epoch, step, best);
   a new stage with ``validate_start`` first validates the starting model (``validate_start``:
   log.csv row epoch 0; it is the best so far, so ``best.pt`` holds it until an epoch beats it);
2. per epoch, ``train_epoch``: the stage's batch source (``batches``) gives the epoch chunk by
   chunk (stages I and II: tuples mined from place labels with the current model; the lqq
   stage: shuffled images), each batch one ``train_step``;
3. the stage's validation (``validation``: Recall@N on the place validation split, or the lqq
   distillation's loss on held-out images), the CSV log row;
4. ``save_epoch``: ``best.pt``/``last.pt``, then the resume state.

The loss of a step is the triplet term (tuples [q, p, n…]; none for single images) plus the
stage's distillation term; the loop knows a distillation only through the
``distillation.Distillation`` interface (stage I and plain training: ``NoDistillation``), a
batch source only through ``batches`` and a validation only through ``validation``. See
``records`` for the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import save_checkpoint
from ..config import to_dict
from ..errors import CheckpointError, ConfigError
from ..log import get_logger
from . import records
from .batches import ImageBatches, MinedTuples
from .budget import StepBudget
from .config import StageConfig, TrainConfig
from .distillation import Distillation, NoDistillation, TrainBatch
from .distributed import DistEnv, all_mean, barrier, broadcast_buffers
from .inputs import InputLoader
from .losses_kd import tuple_triplet_loss
from .mining import TrainingPairs
from .validation import DistillationValidation, RecallValidation

LOSS_NAMES = ("loss", "loss_vpr", "loss_kd")
log = get_logger(__name__)


@dataclass
class StageSetup:
    """Everything one training stage needs besides the global config."""

    name: str
    index: int  # separates the random streams of the stages
    out_dir: Path
    stage_cfg: StageConfig
    branch: nn.Module  # the model trained, mined with and validated
    loader: InputLoader  # its input (rgb or seg)
    train: object = None  # PlaceDataset, training split (for the default source)
    pairs: TrainingPairs | None = None
    val: object | None = None  # PlaceDataset, validation split (for the default validation; None: none)
    val_loader: InputLoader | None = None
    distillation: Distillation = field(default_factory=NoDistillation)  # prepared (``prepare`` done)
    checkpoint_config: dict = field(default_factory=dict)
    source: MinedTuples | ImageBatches | None = None  # None: tuples mined from ``train`` and ``pairs``
    validation: RecallValidation | DistillationValidation | None = None  # None: Recall@N on ``val`` if given
    query_encoder_for: dict | None = None  # the checkpoints' teacher fingerprint (a low-quality-query student)

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = MinedTuples(self.train, self.pairs)
        if self.validation is None and self.val is not None:
            self.validation = RecallValidation(self.val, self.val_loader or self.loader)


@dataclass
class Progress:
    """Where a stage stands: the last finished epoch, the global step, the best validation so far."""

    epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"epoch": 0, "recalls": None})


class TrainNet(nn.Module):
    """The trained modules as one, so that DDP wraps them together: the branch and the distillation's modules.

    ``forward`` is the distillation's (default: the branch's descriptors), so every trainable
    module runs inside DDP's forward.
    """

    def __init__(self, branch: nn.Module, distillation: Distillation | None = None):
        super().__init__()
        self.branch = branch
        self.distillation = distillation if distillation is not None else NoDistillation()
        self.extras = nn.ModuleDict(self.distillation.modules())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.distillation.forward(self.branch, self.extras, x)


def run_stage(setup: StageSetup, cfg: TrainConfig, env: DistEnv, budget: StepBudget) -> dict:
    """Train one stage to its last epoch (continuing from ``state.pt`` when present); return done.json's content."""
    c = setup.stage_cfg
    if c.batch_size % env.world:
        raise ConfigError(f"{setup.name}.batch_size: {c.batch_size} is not divisible by the {env.world} DDP processes")
    loop = StageLoop(setup, cfg, env, budget)
    loop.resume()
    if cfg.tensorboard:
        loop.log.open_tensorboard(loop.progress.step)
    if c.validate_start and setup.validation is not None and loop.progress.epoch == 0:
        loop.validate_start()
    for epoch in range(loop.progress.epoch + 1, c.epochs + 1):
        started = time.perf_counter()
        sums, n_steps, n_tuples = loop.train_epoch(epoch)
        result = None
        if setup.validation is not None and (epoch % c.validate_every == 0 or epoch == c.epochs):
            result = setup.validation(setup, cfg, env)
        broadcast_buffers(env, loop.net)
        mean = (sums / max(n_steps, 1)).tolist()
        row = {
            "epoch": epoch,
            "steps": n_steps,
            "tuples": n_tuples,
            **dict(zip(LOSS_NAMES, mean, strict=True)),
            "lr": loop.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        loop.end_epoch(epoch, row, result)
    loop.log.close()
    return loop.finish()


class StageLoop:
    """The state of a running stage (model, optimiser, logs, progress) and its steps; see ``run_stage``."""

    def __init__(self, setup: StageSetup, cfg: TrainConfig, env: DistEnv, budget: StepBudget):
        self.setup, self.cfg, self.env, self.budget = setup, cfg, env, budget
        c = setup.stage_cfg
        self.per_rank = c.batch_size // env.world
        self.net = TrainNet(setup.branch, setup.distillation).to(env.device)
        self.optimizer = _optimizer(c, self.net)
        self.use_amp = c.amp and env.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        columns = setup.validation.columns(cfg) if setup.validation is not None else []
        self.log = records.StageLog(setup.out_dir, setup.name, columns, enabled=env.is_main)
        self.result_key = setup.validation.name if setup.validation is not None else "recalls"
        self.progress = Progress(best={"epoch": 0, self.result_key: None})
        self.model: nn.Module = self.net  # what trains: ``net``, or its DDP wrapper (after ``resume``)

    def resume(self) -> None:
        """Load ``state.pt`` when present (else start the stage directory), trim the logs, wrap for DDP."""
        out, env = self.setup.out_dir, self.env
        if (out / records.STATE).is_file():
            state = records.load_state(out / records.STATE)
            self.setup.branch.load_state_dict(state["branch"])
            saved = _module_states(state)
            for name, module in self.net.extras.items():
                if name not in saved:
                    raise CheckpointError(
                        f"{out / records.STATE}: no weights for the distillation's {name!r}; "
                        "it was written by another distillation: delete it to restart the stage"
                    )
                module.load_state_dict(saved[name])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.progress = Progress(int(state["epoch"]), int(state["step"]), state["best"])
        elif env.is_main:
            out.mkdir(parents=True, exist_ok=True)
        self.log.restart(self.progress.epoch, self.progress.step)
        barrier(env)
        if env.distributed:
            device = env.device
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None
            )

    def validate_start(self) -> None:
        """Validate the model before any training: log.csv row epoch 0, and ``best.pt`` until an epoch beats it."""
        setup, env = self.setup, self.env
        started = time.perf_counter()
        result = setup.validation(setup, self.cfg, env)
        broadcast_buffers(env, self.net)
        self.progress.best = {"epoch": 0, self.result_key: result}
        row = {"epoch": 0, "steps": 0, "tuples": 0, "lr": self.optimizer.param_groups[0]["lr"]}
        self.log.epoch({**row, "seconds": time.perf_counter() - started}, setup.validation.log_values(result), 0)
        if env.is_main:
            save_checkpoint(setup.out_dir / records.BEST, setup.branch, **self.checkpoint_kwargs(0, result))
        barrier(env)

    def train_epoch(self, epoch: int) -> tuple[torch.Tensor, int, int]:
        """Train on every chunk of the source's epoch; (summed step losses, steps, tuples)."""
        from tqdm import tqdm

        setup, cfg, env = self.setup, self.cfg, self.env
        plan = setup.source.epoch(self, epoch)
        sums, n_steps, n_tuples = torch.zeros(len(LOSS_NAMES), dtype=torch.float64), 0, 0
        bar = tqdm(
            total=plan.total,
            desc=f"{setup.name} epoch {epoch}/{setup.stage_cfg.epochs}",
            unit=plan.unit,
            disable=not (cfg.progress and env.is_main),
        )
        for batches, done in plan.chunks:
            _set_train_mode(self.net, setup.stage_cfg.freeze_bn)
            for x, rows in batches:
                losses = self.train_step(x, rows.numpy())
                self.log.step(epoch, self.progress.step, losses)
                values = torch.tensor([losses[k] for k in LOSS_NAMES], dtype=torch.float64)
                sums += values
                n_steps += 1
                n_tuples += len(x) * env.world
                bar.update(min(len(x) * env.world, plan.total - bar.n))
                bar.set_postfix(loss=f"{losses['loss']:.4f}")
                self.budget.spend()
            bar.update(max(0, done - bar.n))
        bar.close()
        return sums, n_steps, n_tuples

    def train_step(self, x: torch.Tensor, rows: np.ndarray) -> dict[str, float]:
        """One optimiser step on a (B, T, C, H, W) batch of tuples; the losses averaged over the ranks, by name."""
        batch = TrainBatch(images=x.to(self.env.device, non_blocking=True), rows=rows)
        loss, vpr, kd, parts = tuple_losses(
            self.model, self.setup.distillation, batch, self.setup.stage_cfg.margin, amp=self.use_amp
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.progress.step += 1
        names = [*LOSS_NAMES, *(f"loss_kd_{k}" for k in parts)]
        values = torch.stack([loss.detach(), vpr.detach(), kd.detach(), *(v.detach() for v in parts.values())])
        return dict(zip(names, all_mean(self.env, values.double()).cpu().tolist(), strict=True))

    def end_epoch(self, epoch: int, row: dict, result: dict | None) -> None:
        """Log the epoch, update the best result, save the checkpoints and the resume state (rank 0)."""
        validation, key = self.setup.validation, self.result_key
        improved = result is not None and validation.better(result, self.progress.best.get(key))
        if improved or validation is None:
            self.progress.best = {"epoch": epoch, key: result}
        self.progress.epoch = epoch
        self.log.epoch(row, validation.log_values(result) if result is not None else None, self.progress.step)
        if self.env.is_main:
            self.save_epoch(epoch, result)
        barrier(self.env)

    def save_epoch(self, epoch: int, result: dict | None) -> None:
        """``best.pt`` (when this epoch is the best), ``last.pt``, then ``state.pt`` (written last)."""
        setup, out, p = self.setup, self.setup.out_dir, self.progress
        ckpt_kw = self.checkpoint_kwargs(epoch, result)
        if p.best["epoch"] == epoch:
            save_checkpoint(out / records.BEST, setup.branch, **ckpt_kw)
        save_checkpoint(out / records.LAST, setup.branch, **ckpt_kw)
        records.save_state(
            out / records.STATE,
            {
                "epoch": p.epoch,
                "step": p.step,
                "best": p.best,
                "branch": setup.branch.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "modules": {name: m.state_dict() for name, m in self.net.extras.items()},
                "config": to_dict(self.cfg),
            },
        )

    def checkpoint_kwargs(self, epoch: int, result: dict | None) -> dict:
        """The ``save_checkpoint`` arguments of this stage's branch after ``epoch`` (0: the starting model)."""
        setup = self.setup
        return {
            "architecture": setup.branch.architecture,
            "descriptor_dim": setup.branch.dim,
            "config": setup.checkpoint_config,
            "extra": {"stage": setup.name, "epoch": epoch, self.result_key: result},
            "query_encoder_for": setup.query_encoder_for,
        }

    def finish(self) -> dict:
        """Write ``done.json`` (rank 0) and return its content."""
        setup, p, env = self.setup, self.progress, self.env
        done = {
            "stage": setup.name,
            "epochs": setup.stage_cfg.epochs,
            "steps": p.step,
            "best_epoch": p.best["epoch"],
            f"best_{self.result_key}": p.best.get(self.result_key),
            "seconds": round(self.log.seconds(), 2),
            "checkpoint": records.BEST,
            "world_size": env.world,
        }
        if env.is_main:
            records.write_done(setup.out_dir, done)
            if setup.stage_cfg.validate_start and p.best["epoch"] == 0:
                log.warning(
                    "%s: no trained epoch beat the starting model on validation; best.pt is the start", setup.name
                )
        barrier(env)
        return done


def tuple_losses(
    model: nn.Module,
    distillation: Distillation,
    batch: TrainBatch,
    margin: float,
    *,
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, triplet term, distillation term, its named parts) of a batch.

    ``model`` is a ``TrainNet`` (or its DDP wrapper) running ``distillation``. The triplet term
    needs tuples [q, p, n…] (T >= 3); batches of single images (T = 1, no place labels) have none.
    """
    b, t = batch.images.shape[:2]
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
        outputs = model(batch.images.flatten(0, 1))
    outputs = {k: v.float().view(b, t, *v.shape[1:]) for k, v in outputs.items()}
    vpr = tuple_triplet_loss(outputs["descriptors"], margin) if t >= 3 else outputs["descriptors"].new_zeros(())
    kd, parts = distillation.loss(batch, outputs)
    return vpr + kd, vpr, kd, parts


def _optimizer(c: StageConfig, net: TrainNet) -> torch.optim.Optimizer:
    """The branch's trainable parameters at ``lr``, its new head (``head_parameters``, StructVPR++'s label head)
    at ``head_lr``, the distillation's modules (T) at ``projector_lr`` (both default ``lr``)."""
    head = (
        [p for p in net.branch.head_parameters() if p.requires_grad] if hasattr(net.branch, "head_parameters") else []
    )
    in_head = {id(p) for p in head}
    groups = [{"params": [p for p in net.branch.parameters() if p.requires_grad and id(p) not in in_head], "lr": c.lr}]
    if head:
        groups.append({"params": head, "lr": c.head_lr or c.lr})
    extra = list(net.extras.parameters())
    if extra:
        groups.append({"params": extra, "lr": c.projector_lr or c.lr})
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)


def _set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _module_states(state: dict) -> dict[str, dict]:
    """The distillation modules' weights in a resume state, by name (older states hold T as ``projector``)."""
    if "modules" in state:
        return state["modules"]
    return {"projector": state["projector"]} if state.get("projector") else {}
