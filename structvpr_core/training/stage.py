"""The epoch loop shared by stage I (seg or RGB branch) and stage II (student + T, weighted KD).

One epoch: the epoch's queries (a seeded random order, cut to ``queries_per_epoch``) are taken
``mining.cache_queries`` at a time; for each chunk the current model embeds the chunk and a
database pool, tuples are mined (``mining.select_tuples``), then trained on in batches
(``DistributedSampler``: each rank takes its share of every global batch). After the epoch:
validation Recall@N, the CSV log rows, ``best.pt``/``last.pt``, then the resume state.
See ``records`` for the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_checkpoint
from ..config import to_dict
from ..errors import ConfigError
from . import records
from .config import StageConfig, TrainConfig
from .distributed import DistEnv, all_mean, barrier, broadcast_buffers
from .embed import embed
from .inputs import InputLoader, TupleDataset
from .losses_kd import tuple_loss
from .mining import TrainingPairs, epoch_queries, sample_pool, select_tuples


class StopRequested(Exception):
    """Raised when the ``--max-steps`` budget of this invocation is used up (a simulated kill)."""


@dataclass
class StepBudget:
    remaining: int | None = None

    def spend(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                raise StopRequested("stopped after the requested number of steps (--max-steps)")


@dataclass
class StageSetup:
    """Everything one training stage needs besides the global config."""
    name: str
    index: int                      # separates the random streams of the stages
    out_dir: Path
    stage_cfg: StageConfig
    branch: nn.Module               # the model trained, mined with and validated
    loader: InputLoader             # its input (rgb or seg)
    train: object                   # PlaceDataset, training split
    pairs: TrainingPairs
    val: object | None              # PlaceDataset, validation split (None: no validation)
    val_loader: InputLoader | None = None
    projector: nn.Module | None = None                    # stage II: T
    teacher_db: np.ndarray | None = None                  # stage II: cached teacher descriptors
    teacher_q: np.ndarray | None = None
    phi: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None   # stage II: φ(q, p)
    checkpoint_config: dict = field(default_factory=dict)


class TrainNet(nn.Module):
    """The trained modules as one (so DDP wraps them together): descriptors, and T(descriptors)."""

    def __init__(self, branch: nn.Module, projector: nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.projector = projector

    def forward(self, x):
        d = self.branch(x)
        return (d, self.projector(d)) if self.projector is not None else (d,)


def _optimizer(setup: StageSetup) -> torch.optim.Optimizer:
    c = setup.stage_cfg
    groups = [{"params": list(setup.branch.parameters()), "lr": c.lr}]
    if setup.projector is not None:
        groups.append({"params": list(setup.projector.parameters()), "lr": c.projector_lr or c.lr})
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)


def _set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def validate(setup: StageSetup, cfg: TrainConfig, env: DistEnv) -> dict[int, float]:
    """Recall@N of the branch on the validation split (``val_queries`` fixed random queries)."""
    from ..evaluate import recall_at_n

    val = setup.val
    q_idx = np.arange(val.num_queries)
    if setup.stage_cfg.val_queries and setup.stage_cfg.val_queries < len(q_idx):
        q_idx = np.sort(np.random.default_rng([cfg.seed, 7]).choice(q_idx, setup.stage_cfg.val_queries, replace=False))
    loader = setup.val_loader or setup.loader
    bs, workers = cfg.mining.embed_batch_size, cfg.data.workers
    db = embed(setup.branch, val.database, loader, env, batch_size=bs, workers=workers, progress=cfg.progress,
               desc="validate db")
    qs = embed(setup.branch, [val.queries[i] for i in q_idx], loader, env, batch_size=bs, workers=workers,
               progress=cfg.progress, desc="validate queries")
    recalls = recall_at_n(db, qs, [val.positives[i] for i in q_idx], ns=tuple(cfg.recall_ns))
    return {int(n): float(r) for n, r in recalls.items()}


def _teacher_tuples(setup: StageSetup, rows: np.ndarray) -> torch.Tensor:
    t_q = np.asarray(setup.teacher_q[rows[:, 0]])[:, None]
    t_db = np.asarray(setup.teacher_db[rows[:, 1:].reshape(-1)]).reshape(len(rows), rows.shape[1] - 1, -1)
    return torch.from_numpy(np.concatenate([t_q, t_db], axis=1).astype(np.float32))


def run_stage(setup: StageSetup, cfg: TrainConfig, env: DistEnv, budget: StepBudget) -> dict:
    """Train one stage to its last epoch (continuing from ``state.pt`` when present); return done.json's content."""
    from tqdm import tqdm

    c = setup.stage_cfg
    out = setup.out_dir
    if c.batch_size % env.world:
        raise ConfigError(f"{setup.name}.batch_size: {c.batch_size} is not divisible by the {env.world} DDP processes")
    per_rank = c.batch_size // env.world
    device = env.device
    net = TrainNet(setup.branch, setup.projector).to(device)
    optimizer = _optimizer(setup)
    use_amp = c.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    log = records.CsvLog(out / records.LOG, records.log_columns(cfg.recall_ns))
    steps_log = records.CsvLog(out / records.STEPS, records.STEP_COLUMNS)

    start_epoch, step, best = 0, 0, {"epoch": 0, "recalls": None}
    if (out / records.STATE).is_file():
        state = records.load_state(out / records.STATE)
        setup.branch.load_state_dict(state["branch"])
        if setup.projector is not None:
            setup.projector.load_state_dict(state["projector"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, best = int(state["epoch"]), int(state["step"]), state["best"]
        if env.is_main:
            log.keep(lambda r: int(r["epoch"]) <= start_epoch)
            steps_log.keep(lambda r: int(r["step"]) <= step)
    elif env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log.keep(lambda r: False)
        steps_log.keep(lambda r: False)
    barrier(env)

    model = net
    if env.distributed:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if cfg.tensorboard and env.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard: true needs the 'tensorboard' package installed") from None
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1)

    train = setup.train
    for epoch in range(start_epoch + 1, c.epochs + 1):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, setup.index, epoch])
        queries = epoch_queries(rng, setup.pairs, c.queries_per_epoch)
        sums, n_steps, n_tuples = torch.zeros(3, dtype=torch.float64), 0, 0
        bar = tqdm(total=len(queries), desc=f"{setup.name} epoch {epoch}/{c.epochs}", unit="q",
                   disable=not (cfg.progress and env.is_main))
        chunk_size = cfg.mining.cache_queries
        for ci, start in enumerate(range(0, len(queries), chunk_size)):
            chunk = queries[start:start + chunk_size]
            pool = sample_pool(rng, train.num_database, chunk, setup.pairs, cfg.mining.negative_pool)
            kw = dict(batch_size=cfg.mining.embed_batch_size, workers=cfg.data.workers, progress=cfg.progress)
            q_desc = embed(setup.branch, [train.queries[i] for i in chunk], setup.loader, env, desc="mine queries", **kw)
            pool_desc = embed(setup.branch, [train.database[i] for i in pool], setup.loader, env, desc="mine pool", **kw)
            tuples = select_tuples(q_desc, pool_desc, pool, chunk, setup.pairs, cfg.mining.negatives_per_query)
            if len(tuples) == 0:
                bar.update(len(chunk))
                continue
            data = TupleDataset(tuples, train.queries, train.database, setup.loader)
            sampler = DistributedSampler(data, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch * 100_000 + ci)   # a new order for every chunk of every epoch
            batches = DataLoader(data, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.workers,
                                 pin_memory=device.type == "cuda")
            _set_train_mode(net, c.freeze_bn)
            for x, rows in batches:
                b, t = x.shape[:2]
                rows_np = rows.numpy()
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    outputs = model(x.flatten(0, 1).to(device, non_blocking=True))
                student = outputs[0].float().view(b, t, -1)
                projected = teacher = phi = None
                if setup.projector is not None:
                    projected = outputs[1].float().view(b, t, -1)
                    teacher = _teacher_tuples(setup, rows_np).to(device)
                    phi = torch.from_numpy(setup.phi(rows_np[:, 0], rows_np[:, 1])).to(device)
                loss, vpr, kd = tuple_loss(student, c.margin, projected, teacher, phi)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                values = all_mean(env, torch.stack([loss.detach(), vpr.detach(), kd.detach()]).double()).cpu()
                sums += values
                n_steps += 1
                n_tuples += b * env.world
                if env.is_main:
                    steps_log.append({"epoch": epoch, "step": step, "loss": float(values[0]),
                                      "loss_vpr": float(values[1]), "loss_kd": float(values[2])})
                    if writer is not None:
                        for k, v in zip(("loss", "loss_vpr", "loss_kd"), values.tolist()):
                            writer.add_scalar(f"{setup.name}/{k}", v, step)
                bar.update(min(b * env.world, len(queries) - bar.n))
                bar.set_postfix(loss=f"{float(values[0]):.4f}")
                budget.spend()
            bar.update(max(0, min(start + len(chunk), len(queries)) - bar.n))
        bar.close()

        recalls = None
        if setup.val is not None and (epoch % c.validate_every == 0 or epoch == c.epochs):
            recalls = validate(setup, cfg, env)
        broadcast_buffers(env, net)
        mean = (sums / max(n_steps, 1)).tolist()
        row = {"epoch": epoch, "steps": n_steps, "tuples": n_tuples, "loss": mean[0], "loss_vpr": mean[1],
               "loss_kd": mean[2], "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
        improved = recalls is not None and (best["recalls"] is None or recalls[1] > best["recalls"][1])
        if improved or setup.val is None:
            best = {"epoch": epoch, "recalls": recalls}
        if env.is_main:
            row.update({f"R@{n}": r for n, r in (recalls or {}).items()})
            log.append(row)
            if writer is not None:
                for n, r in (recalls or {}).items():
                    writer.add_scalar(f"{setup.name}/val_R@{n}", r, step)
                writer.flush()
            meta = {"stage": setup.name, "epoch": epoch, "recalls": recalls}
            ckpt_kw = dict(architecture=setup.branch.architecture, descriptor_dim=setup.branch.dim,
                           config=setup.checkpoint_config)
            if best["epoch"] == epoch:
                save_checkpoint(out / records.BEST, setup.branch, extra=meta, **ckpt_kw)
            save_checkpoint(out / records.LAST, setup.branch, extra=meta, **ckpt_kw)
            records.save_state(out / records.STATE, {
                "epoch": epoch, "step": step, "best": best,
                "branch": setup.branch.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "projector": setup.projector.state_dict() if setup.projector is not None else {},
                "config": to_dict(cfg)})
        barrier(env)

    if writer is not None:
        writer.close()
    seconds = sum(float(r["seconds"]) for r in log.rows()) if env.is_main else 0.0
    done = {"stage": setup.name, "epochs": c.epochs, "steps": step, "best_epoch": best["epoch"],
            "best_recalls": best["recalls"], "seconds": round(seconds, 2), "checkpoint": records.BEST,
            "world_size": env.world}
    if env.is_main:
        records.write_done(out, done)
    barrier(env)
    return done
