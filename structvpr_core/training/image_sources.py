"""The lqq stage's training images: image folders and rosbag2 image topics, no labels; and its held-out split.

``collect_images`` lists the configured sources in order: each folder's images sorted by path
(``images.list_images``, ``recursive`` to look below it), then each bag topic's frames in
recording order. A bag topic (``sensor_msgs/Image`` or ``CompressedImage``, read with
``bagio``, no ROS needed) is extracted once, every ``every``-th frame, as lossless PNG under
``RUN/lqq_frames/<bag>-<topic>-every<N>/`` (rank 0 writes a ``.partial`` directory and renames
it when complete; a later run or ``--resume`` reuses it), so the good images stay good and the
data loader reads files like any folder.

``holdout_split`` holds out whole runs of ``block`` consecutive images (neighbouring frames of
a sequence look alike, so single held-out frames would sit between their own twins in the
training set), a seeded ``fraction`` of the runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..images import list_images
from ..log import get_logger
from .config import BagImages, LQQConfig
from .distributed import DistEnv, barrier

log = get_logger(__name__)

FRAMES_LIST = "frames.json"


def collect_images(cfg: LQQConfig, frames_root: Path, env: DistEnv, progress: bool = False) -> list[Path]:
    """Every training image of the configured folders and bag topics, in order (bags extracted once)."""
    paths: list[Path] = []
    for folder in cfg.folders:
        found = list_images(folder, recursive=cfg.recursive)
        if not found:
            raise ConfigError(f"lqq.folders: no images in {folder}" + ("" if cfg.recursive else " (recursive: false)"))
        paths += found
    for bag in cfg.bags:
        paths += bag_frames(bag, frames_root, env, progress)
    return paths


def bag_frames(bag: BagImages, frames_root: Path, env: DistEnv, progress: bool = False) -> list[Path]:
    """The PNG files of a bag topic's frames (extracted on first use by rank 0; the others wait)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(bag.path).name}-{bag.topic.strip('/')}-every{bag.every}")
    out = Path(frames_root) / slug
    if env.is_main and not (out / FRAMES_LIST).is_file():
        _extract(bag, out, progress)
    barrier(env)
    names = json.loads((out / FRAMES_LIST).read_text(encoding="utf-8"))["frames"]
    return [out / name for name in names]


def _extract(bag: BagImages, out: Path, progress: bool) -> None:
    import cv2
    from tqdm import tqdm

    from ..bagio import count_images, read_frames

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    names, sources = [], []
    total = count_images(bag.path, bag.topic)
    with tqdm(total=total, desc=f"extract {out.name}", unit="frame", disable=not progress) as bar:
        for i, frame in enumerate(read_frames(bag.path, bag.topic)):
            bar.update(1)
            if i % bag.every:
                continue
            name = f"{len(names):06d}.png"
            if not cv2.imwrite(str(partial / name), frame.image):
                raise OSError(f"{partial / name}: could not write the frame")
            names.append(name)
            sources.append(frame.source)
    if not names:
        raise ConfigError(f"lqq.bags: no decodable image on {bag.topic} in {bag.path}")
    (partial / FRAMES_LIST).write_text(json.dumps({"frames": names, "sources": sources}), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    log.info("extracted %d frames of %s from %s to %s", len(names), bag.topic, bag.path, out)


def holdout_split(n: int, fraction: float, block: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices of ``n`` images: a seeded ``fraction`` of the runs of ``block`` images held out.

    At least one run is held out when ``fraction`` > 0, and at least one is kept for training.
    """
    idx = np.arange(n)
    if fraction <= 0:
        return idx, idx[:0]
    n_blocks = math.ceil(n / block)
    if n_blocks < 2:
        raise ConfigError(f"lqq: {n} images make {n_blocks} run(s) of val_block {block}: too few to hold any out")
    k = min(max(1, round(fraction * n_blocks)), n_blocks - 1)
    held = np.random.default_rng([seed, 13]).choice(n_blocks, k, replace=False)
    is_val = np.isin(idx // block, held)
    return idx[~is_val], idx[is_val]
