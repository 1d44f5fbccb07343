"""Descriptors of many images with a branch in eval mode, split over the DDP ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .distributed import DistEnv, broadcast_buffers, gather_rows
from .inputs import InputLoader, PathDataset


def embed(
    branch: torch.nn.Module,
    paths: list[Path],
    loader: InputLoader,
    env: DistEnv,
    *,
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = False,
    desc: str = "embed",
    normalise: bool = True,
) -> np.ndarray:
    """(N, dim) float32 descriptors of ``paths``, identical on every rank.

    ``normalise=False`` keeps the rows as the branch gives them (a teacher's concatenated parts).
    Each rank embeds a contiguous share of the paths; the shares are gathered in rank order.
    The branch is left in eval mode: callers set train mode again before training.
    """
    from tqdm import tqdm

    broadcast_buffers(env, branch)
    shares = np.array_split(np.arange(len(paths)), env.world)
    mine = shares[env.rank]
    out = np.zeros((len(mine), branch.dim), dtype=np.float32)
    dl = DataLoader(
        PathDataset([paths[i] for i in mine], loader), batch_size=batch_size, shuffle=False, num_workers=workers
    )
    amp = env.device.type == "cuda"
    branch.eval()
    with (
        torch.inference_mode(),
        tqdm(total=len(mine), desc=desc, unit="img", leave=False, disable=not (progress and env.is_main)) as bar,
    ):
        for x, idx in dl:
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                d = branch(x.to(env.device, non_blocking=True))
            d = d.float()
            out[idx.numpy()] = (torch.nn.functional.normalize(d, dim=1) if normalise else d).cpu().numpy()
            bar.update(len(idx))
    return gather_rows(env, out, [len(s) for s in shares])
