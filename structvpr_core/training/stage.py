"""The epoch loop shared by stage I (seg or RGB branch) and stage II (the student and a distillation).

``run_stage`` reads top to bottom:

1. ``resume``: continue from ``state.pt`` when present (weights, optimiser, epoch, step, best);
2. per epoch, ``train_epoch``: the epoch's queries (a seeded random order, cut to
   ``queries_per_epoch``) are taken ``mining.cache_queries`` at a time; for each chunk the
   current model embeds the chunk and a database pool and tuples are mined
   (``mining.select_tuples``), then trained on in batches (``DistributedSampler``: each rank
   takes its share of every global batch), one ``train_step`` each;
3. ``validate`` (Recall@N on the validation split), the CSV log row;
4. ``save_epoch``: ``best.pt``/``last.pt``, then the resume state.

The loss of a step is the triplet term plus the stage's distillation term; the loop knows a
distillation only through the ``distillation.Distillation`` interface (stage I and plain
training: ``NoDistillation``). See ``records`` for the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_checkpoint
from ..config import to_dict
from ..errors import CheckpointError, ConfigError
from . import records
from .budget import StepBudget
from .config import StageConfig, TrainConfig
from .distillation import Distillation, NoDistillation, TrainBatch
from .distributed import DistEnv, all_mean, barrier, broadcast_buffers
from .embed import embed
from .inputs import InputLoader, TupleDataset
from .losses_kd import tuple_triplet_loss
from .mining import TrainingPairs, epoch_queries, sample_pool, select_tuples

LOSS_NAMES = ("loss", "loss_vpr", "loss_kd")


@dataclass
class StageSetup:
    """Everything one training stage needs besides the global config."""

    name: str
    index: int  # separates the random streams of the stages
    out_dir: Path
    stage_cfg: StageConfig
    branch: nn.Module  # the model trained, mined with and validated
    loader: InputLoader  # its input (rgb or seg)
    train: object  # PlaceDataset, training split
    pairs: TrainingPairs
    val: object | None  # PlaceDataset, validation split (None: no validation)
    val_loader: InputLoader | None = None
    distillation: Distillation = field(default_factory=NoDistillation)  # prepared (``prepare`` done)
    checkpoint_config: dict = field(default_factory=dict)


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
    for epoch in range(loop.progress.epoch + 1, c.epochs + 1):
        started = time.perf_counter()
        sums, n_steps, n_tuples = loop.train_epoch(epoch)
        recalls = None
        if setup.val is not None and (epoch % c.validate_every == 0 or epoch == c.epochs):
            recalls = validate(setup, cfg, env)
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
        loop.end_epoch(epoch, row, recalls)
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
        self.log = records.StageLog(setup.out_dir, setup.name, cfg.recall_ns, enabled=env.is_main)
        self.progress = Progress()
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

    def train_epoch(self, epoch: int) -> tuple[torch.Tensor, int, int]:
        """Mine and train on every chunk of the epoch's queries; (summed step losses, steps, tuples)."""
        from tqdm import tqdm

        setup, cfg, env = self.setup, self.cfg, self.env
        rng = np.random.default_rng([cfg.seed, setup.index, epoch])
        queries = epoch_queries(rng, setup.pairs, setup.stage_cfg.queries_per_epoch)
        sums, n_steps, n_tuples = torch.zeros(len(LOSS_NAMES), dtype=torch.float64), 0, 0
        bar = tqdm(
            total=len(queries),
            desc=f"{setup.name} epoch {epoch}/{setup.stage_cfg.epochs}",
            unit="q",
            disable=not (cfg.progress and env.is_main),
        )
        chunk_size = cfg.mining.cache_queries
        for ci, start in enumerate(range(0, len(queries), chunk_size)):
            chunk = queries[start : start + chunk_size]
            tuples = self.mine(rng, chunk)
            if len(tuples):
                _set_train_mode(self.net, setup.stage_cfg.freeze_bn)
                for x, rows in self.batches(tuples, epoch, ci):
                    losses = self.train_step(x, rows.numpy())
                    self.log.step(epoch, self.progress.step, losses)
                    values = torch.tensor([losses[k] for k in LOSS_NAMES], dtype=torch.float64)
                    sums += values
                    n_steps += 1
                    n_tuples += len(x) * env.world
                    bar.update(min(len(x) * env.world, len(queries) - bar.n))
                    bar.set_postfix(loss=f"{losses['loss']:.4f}")
                    self.budget.spend()
            bar.update(max(0, min(start + len(chunk), len(queries)) - bar.n))
        bar.close()
        return sums, n_steps, n_tuples

    def mine(self, rng: np.random.Generator, chunk: np.ndarray) -> np.ndarray:
        """Tuples [q, p, n…] of a chunk of queries, with the current model (embeds the chunk and a pool)."""
        setup, cfg, train = self.setup, self.cfg, self.setup.train
        pool = sample_pool(rng, train.num_database, chunk, setup.pairs, cfg.mining.negative_pool)
        kw = {"batch_size": cfg.mining.embed_batch_size, "workers": cfg.data.workers, "progress": cfg.progress}
        q_desc = embed(
            setup.branch, [train.queries[i] for i in chunk], setup.loader, self.env, desc="mine queries", **kw
        )
        pool_desc = embed(
            setup.branch, [train.database[i] for i in pool], setup.loader, self.env, desc="mine pool", **kw
        )
        return select_tuples(q_desc, pool_desc, pool, chunk, setup.pairs, cfg.mining.negatives_per_query)

    def batches(self, tuples: np.ndarray, epoch: int, chunk_index: int) -> DataLoader:
        """This rank's share of the batches of a chunk's mined tuples, read by the distillation's ``tuple_loader``."""
        setup, env = self.setup, self.env
        images = setup.distillation.tuple_loader(setup.loader, epoch)
        data = TupleDataset(tuples, setup.train.queries, setup.train.database, images)
        sampler = DistributedSampler(data, num_replicas=env.world, rank=env.rank, shuffle=True, seed=self.cfg.seed)
        sampler.set_epoch(epoch * 100_000 + chunk_index)  # a new order for every chunk of every epoch
        return DataLoader(
            data,
            batch_size=self.per_rank,
            sampler=sampler,
            num_workers=self.cfg.data.workers,
            pin_memory=env.device.type == "cuda",
        )

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

    def end_epoch(self, epoch: int, row: dict, recalls: dict[int, float] | None) -> None:
        """Log the epoch, update the best result, save the checkpoints and the resume state (rank 0)."""
        improved = recalls is not None and (
            self.progress.best["recalls"] is None or recalls[1] > self.progress.best["recalls"][1]
        )
        if improved or self.setup.val is None:
            self.progress.best = {"epoch": epoch, "recalls": recalls}
        self.progress.epoch = epoch
        self.log.epoch(row, recalls, self.progress.step)
        if self.env.is_main:
            self.save_epoch(epoch, recalls)
        barrier(self.env)

    def save_epoch(self, epoch: int, recalls: dict[int, float] | None) -> None:
        """``best.pt`` (when this epoch is the best), ``last.pt``, then ``state.pt`` (written last)."""
        setup, out, p = self.setup, self.setup.out_dir, self.progress
        meta = {"stage": setup.name, "epoch": epoch, "recalls": recalls}
        ckpt_kw = {
            "architecture": setup.branch.architecture,
            "descriptor_dim": setup.branch.dim,
            "config": setup.checkpoint_config,
            "extra": meta,
        }
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

    def finish(self) -> dict:
        """Write ``done.json`` (rank 0) and return its content."""
        setup, p, env = self.setup, self.progress, self.env
        done = {
            "stage": setup.name,
            "epochs": setup.stage_cfg.epochs,
            "steps": p.step,
            "best_epoch": p.best["epoch"],
            "best_recalls": p.best["recalls"],
            "seconds": round(self.log.seconds(), 2),
            "checkpoint": records.BEST,
            "world_size": env.world,
        }
        if env.is_main:
            records.write_done(setup.out_dir, done)
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

    ``model`` is a ``TrainNet`` (or its DDP wrapper) running ``distillation``.
    """
    b, t = batch.images.shape[:2]
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
        outputs = model(batch.images.flatten(0, 1))
    outputs = {k: v.float().view(b, t, *v.shape[1:]) for k, v in outputs.items()}
    vpr = tuple_triplet_loss(outputs["descriptors"], margin)
    kd, parts = distillation.loss(batch, outputs)
    return vpr + kd, vpr, kd, parts


def validate(setup: StageSetup, cfg: TrainConfig, env: DistEnv) -> dict[int, float]:
    """Recall@N of the branch on the validation split (``val_queries`` fixed random queries)."""
    from ..evaluate import recall_at_n

    val = setup.val
    q_idx = np.arange(val.num_queries)
    if setup.stage_cfg.val_queries and setup.stage_cfg.val_queries < len(q_idx):
        q_idx = np.sort(np.random.default_rng([cfg.seed, 7]).choice(q_idx, setup.stage_cfg.val_queries, replace=False))
    loader = setup.val_loader or setup.loader
    bs, workers = cfg.mining.embed_batch_size, cfg.data.workers
    db = embed(
        setup.branch,
        val.database,
        loader,
        env,
        batch_size=bs,
        workers=workers,
        progress=cfg.progress,
        desc="validate db",
    )
    qs = embed(
        setup.branch,
        [val.queries[i] for i in q_idx],
        loader,
        env,
        batch_size=bs,
        workers=workers,
        progress=cfg.progress,
        desc="validate queries",
    )
    recalls = recall_at_n(db, qs, [val.positives[i] for i in q_idx], ns=tuple(cfg.recall_ns))
    return {int(n): float(r) for n, r in recalls.items()}


def _optimizer(c: StageConfig, net: TrainNet) -> torch.optim.Optimizer:
    """The branch at ``lr``, its new head (``head_parameters``, StructVPR++'s label head) at ``head_lr``,
    the distillation's modules (T) at ``projector_lr`` (both default ``lr``)."""
    head = list(net.branch.head_parameters()) if hasattr(net.branch, "head_parameters") else []
    in_head = {id(p) for p in head}
    groups = [{"params": [p for p in net.branch.parameters() if id(p) not in in_head], "lr": c.lr}]
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
