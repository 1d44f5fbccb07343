"""Process-group set-up for single-process and DDP training (``torchrun``).

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process joins a process
group: NCCL when training on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), Gloo on CPU.
Rank 0 writes every file; all ranks compute, and gather descriptors so that all mine the
same tuples.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from ..devices import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """The environment of this process; joins the process group when launched with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistEnv(device=dev)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistEnv(rank=rank, world=world, local_rank=local, device=dev)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA): a CPU run with one seed is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def gather_rows(env: DistEnv, local: np.ndarray, counts: list[int]) -> np.ndarray:
    """Concatenate every rank's (counts[r], D) float32 array in rank order, on every rank."""
    if not env.distributed:
        return local
    width = local.shape[1]
    longest = max(counts)
    padded = torch.zeros((longest, width), dtype=torch.float32, device=env.device)
    padded[: len(local)] = torch.from_numpy(local).to(env.device)
    parts = [torch.empty_like(padded) for _ in range(env.world)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[:n].cpu().numpy() for p, n in zip(parts, counts, strict=True)])


def all_mean(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    """Mean of a small tensor over the ranks (for logging losses)."""
    if not env.distributed:
        return values
    values = values.detach().clone().to(env.device)
    dist.all_reduce(values)
    return values / env.world


def broadcast_buffers(env: DistEnv, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers only at the start of each training forward, so after the last step
    the ranks' statistics differ; embedding for mining or validation must use one model.
    """
    if not env.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)
