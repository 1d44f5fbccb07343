"""Where a map's frames come from: image folders (plain, or folder-format roots with positions in
the names, with an optional pose CSV) and rosbag2 recordings (poses interpolated to the image
stamps), and the thinning of a stream into keyframes. Each source yields ``Frame``s that load
their pixels lazily, so ``mapbuild.add_frames`` can embed them in batches.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .errors import DatasetError, ImageError
from .log import get_logger

if TYPE_CHECKING:
    import numpy as np

log = get_logger(__name__)


@dataclass(frozen=True)
class BagSpec:
    """A rosbag2 recording as a map source: its image topic and, optionally, a pose topic."""

    path: Path
    image_topic: str
    pose_topic: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # a str from a notebook is fine too


class Frame(NamedTuple):
    """One image to add to a map; a plain ``(load, keyframe)`` tuple works as well."""

    load: Callable[[], np.ndarray]  # the BGR image, read when its batch is embedded
    keyframe: dict  # what MapDatabase.add stores: pose, stamp, gps, session, source


# -- sources -----------------------------------------------------------------------------------


def read_pose_csv(path: Path) -> dict[str, dict]:
    """Poses/stamps by image file name: a header row with 'image' and x,y[,z][,qx,qy,qz,qw][,stamp]."""
    from .geometry import Pose

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    if not rows or "image" not in rows[0]:
        raise DatasetError(f"{path}: needs a header row with an 'image' column (and x,y[,z][,qx,qy,qz,qw][,stamp])")
    out = {}
    for i, r in enumerate(rows, start=2):
        try:
            kf: dict = {}
            if r.get("x") not in (None, "") and r.get("y") not in (None, ""):
                q = (0, 0, 0, 1) if r.get("qw") in (None, "") else tuple(float(r[k]) for k in ("qx", "qy", "qz", "qw"))
                kf["pose"] = Pose((float(r["x"]), float(r["y"]), float(r.get("z") or 0.0)), q)
            if r.get("stamp") not in (None, ""):
                kf["stamp"] = float(r["stamp"])
        except (ValueError, KeyError) as e:
            raise DatasetError(f"{path}: line {i}: bad number ({e})") from None
        out[r["image"]] = kf
    return out


def folder_keyframe(path: Path) -> dict:
    """Pose (UTM east, north, 0) and GPS (lat, lon) from a folder-format name, when it carries them."""
    from .data.utm_names import parse_name
    from .geometry import Pose

    coords = parse_name(path)
    if coords is None:
        return {}  # not a folder-format name: the image simply has no position
    kf: dict = {}
    if math.isfinite(coords.east) and math.isfinite(coords.north):
        kf["pose"] = Pose((coords.east, coords.north, 0.0))
    if coords.lat_lon is not None:
        kf["gps"] = coords.lat_lon
    return kf


def folder_images(folder: Path) -> list[Path]:
    """The images of a plain folder, or of a folder-format root's database/; ``ImageError`` if none."""
    from .images import list_images

    images = list_images(folder)
    if not images and (folder / "database").is_dir():
        images = list_images(folder / "database")  # a folder-format root
    if not images:
        raise ImageError(f"{folder}: no images")
    return images


def frames_from_images(
    images: Iterable[Path], poses: dict[str, dict] | None = None, session: str = "default"
) -> Iterator[Frame]:
    """A frame per image, positioned by its folder-format name and/or ``poses`` (by file name)."""
    from .images import read_image

    for p in images:
        p = Path(p)
        kf = folder_keyframe(p) if "@" in p.name else {}
        if poses is not None:
            kf.update(poses.get(p.name, {}))
        kf.update(session=session, source=str(p.resolve()))
        yield Frame(lambda p=p: read_image(p), kf)


def thin_frames(frames: Iterable[Frame], min_interval_s: float = 0.0, min_distance_m: float = 0.0) -> Iterator[Frame]:
    """The frames the node's keyframe policy would keep (time and travelled distance; no novelty test).

    Every frame needs a ``stamp``; its ``pose`` (if any) measures the distance travelled.
    """
    from .loopclosure import KeyframePolicy

    policy = KeyframePolicy(min_interval_s, min_distance_m)
    for fr in frames:
        stamp = fr.keyframe["stamp"]
        if policy.due(stamp, fr.keyframe.get("pose")):
            policy.accept(stamp)
            yield fr


def frames_from_bag(
    bag: BagSpec, session: str, min_interval_s: float = 0.0, min_distance_m: float = 0.0
) -> Iterator[Frame]:
    """The bag's images with poses interpolated to their stamps, thinned by time and distance."""
    from .bagio import read_frames

    frames = (
        Frame(lambda im=fr.image: im, {"stamp": fr.stamp, "pose": fr.pose, "session": session, "source": fr.source})
        for fr in read_frames(bag.path, bag.image_topic, bag.pose_topic)
    )
    return thin_frames(frames, min_interval_s, min_distance_m)


# -- building ----------------------------------------------------------------------------------
