"""A synthetic structured-scene benchmark on disk: folder format plus exact ADE20K label maps.

``generate(out_dir, places, seed)`` draws ``places`` procedural streets (``synthetic_world``)
and renders each from several nearby viewpoints (``synthetic_render``): database views under
reference conditions (day or overcast, summer, clear), query views under changed appearance
(night, dusk, other seasons, fog, noise) with different moving objects. Structure is therefore
the reliable cue, appearance the unreliable one: the controlled setting in which distilling a
segmentation teacher into an RGB student should help.

Layout (``<out>`` always contains "synthetic" in its name: every number from it is synthetic)::

    <out>/{train,val,test}/{database,queries}/@east@north@synthetic@p<place>@v<view>@<condition>@.jpg
    <out>/labelmaps/… the same tree, one PNG of ADE20K ids per image, labelmaps.json
    <out>/manifest.json, <out>/SYNTHETIC.md

Places are 60 m apart on a grid (each split in its own block 100 km away), the views of one
place lie within ~7 m of each other: with the 25 m positive radius a query's positives are
exactly the database views of its own place. Deterministic for a given seed (and independent
of the number of places: place i is the same street in every set made with that seed).

Opt-in harder conditions (defaults off, so existing sets and configs keep their meaning):

- ``splits=(train, val, test)``: place counts per split instead of the 60/20/20 fractions
  (e.g. a large held-out test split for a powered comparison with a modest training split);
- ``lookalike=k``: the places draw the colours of their buildings, roofs, doors, windows,
  signs, fences, road and pavement from k shared palettes (place i uses palette i mod k), so
  places of one palette share their appearance and differ only in structure: hard negatives
  that an RGB model confuses and a label map does not (the labels are unchanged);
- ``repaint=r``: each query view is, with probability r, a repainted street (new façade, roof,
  door and sign colours, as after a renovation or in other light): an appearance change
  between database and query that the label maps do not see.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text, fsync_dir
from ..errors import DatasetError
from .dataset import SPLITS
from .labelmaps import FORMAT as LABEL_FORMAT
from .labelmaps import MANIFEST as LABEL_MANIFEST
from .labelmaps import encode_png
from .synthetic_props import ADE, FACADE_COLOURS
from .synthetic_render import LIGHTS, MATERIALS, SEASONS, Camera, Condition, Packed, concat, pack, render
from .synthetic_world import add_traffic, make_world
from .utm_names import utm_name

GENERATOR = "structvpr-synthetic-streets/1"
PLACE_SPACING_M = 60.0
SPLIT_OFFSET_M = 100_000.0
GRID_COLUMNS = 50
ORIGIN = (500_000.0, 4_000_000.0)  # an arbitrary UTM origin (easting, northing)


def synthetic_path(out_dir: str | Path) -> Path:
    """``out_dir`` itself when its name says "synthetic", else ``<out_dir>-synthetic``."""
    out = Path(out_dir)
    return out if "synthetic" in out.name.lower() else out.with_name(out.name + "-synthetic")


def split_of(place: int, places: int, fractions=(0.6, 0.2, 0.2), counts=None) -> str:
    """Places in order: the first 60 % train, then 20 % val, the rest test (at least one test place).

    ``counts`` = (train, val, test) place counts instead of the fractions (they sum to ``places``).
    """
    if counts is not None:
        return "train" if place < counts[0] else "val" if place < counts[0] + counts[1] else "test"
    n_train = round(places * fractions[0])
    n_val = round(places * fractions[1])
    if places >= 3:
        n_train, n_val = max(1, n_train), max(1, n_val)
        if n_train + n_val >= places:
            n_train = max(1, places - n_val - 1)
    if place < n_train:
        return "train"
    return "val" if place < n_train + n_val else "test"


def place_origin(place: int, split: str) -> tuple[float, float]:
    k = SPLITS.index(split)
    return (
        ORIGIN[0] + k * SPLIT_OFFSET_M + (place % GRID_COLUMNS) * PLACE_SPACING_M,
        ORIGIN[1] + (place // GRID_COLUMNS) * PLACE_SPACING_M,
    )


def _camera(rng: np.random.Generator, world, size: tuple[int, int]) -> Camera:
    w, h = size
    return Camera(
        x=float(rng.uniform(-2.0, 2.0)),
        z=float(rng.uniform(-2.5, 2.5)),
        yaw=float(np.radians(rng.uniform(-10, 10))),
        height=float(rng.uniform(1.5, 2.2)),
        f=0.85 * w,
        cx=w / 2,
        cy=h * (0.5 + world.horizon_shift + rng.uniform(-0.02, 0.02)),
    )


def database_condition(rng: np.random.Generator) -> Condition:
    return Condition(
        light="day" if rng.random() < 0.7 else "overcast",
        season="summer",
        fog=0.0,
        noise=float(rng.uniform(1, 3)),
        sun_left=bool(rng.random() < 0.5),
    )


def query_condition(rng: np.random.Generator) -> Condition:
    light = str(rng.choice(LIGHTS, p=[0.2, 0.2, 0.25, 0.35]))
    season = str(rng.choice(SEASONS, p=[0.2, 0.2, 0.3, 0.3]))
    fog = float(rng.uniform(0.4, 0.8)) if rng.random() < 0.3 else 0.0
    if light in ("day", "overcast") and season == "summer" and fog == 0.0:
        season = "autumn"  # every query differs from the database in appearance
    return Condition(
        light=light,
        season=season,
        fog=fog,
        noise=float(rng.uniform(2, 8)),
        blur=bool(rng.random() < 0.3),
        sun_left=bool(rng.random() < 0.5),
    )


SHARED_MATERIALS = ("facade", "wall_end", "roof", "door", "window", "sign", "fence", "road", "pavement")
REPAINT_MATERIALS = ("facade", "wall_end", "roof", "door", "sign")
_LOOKALIKE_STREAM = 7919  # separates the palette generators from the places' own


def recolour(packed: Packed, rng: np.random.Generator, materials, shared: bool) -> Packed:
    """``packed`` with new base colours for ``materials`` (geometry and labels unchanged).

    ``shared``: one colour per material (façades from the façade palette), each primitive within
    ±10 % of it, so every place recoloured with the same generator state looks alike; else a new
    façade colour per primitive (a repaint).
    """
    colour = packed.colour.copy()
    for name in materials:
        idx = np.flatnonzero(packed.material == MATERIALS.index(name))
        if not idx.size:
            continue
        if shared:
            base = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))] * rng.uniform(0.6, 1.2, 3)
            colour[idx] = np.clip(base * rng.uniform(0.9, 1.1, (idx.size, 1)), 0, 255)
        else:
            colour[idx] = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS), size=idx.size)] * rng.uniform(
                0.7, 1.2, (idx.size, 1)
            )
    return replace(packed, colour=colour.astype(np.float32))


def render_place(
    seed: int,
    place: int,
    size: tuple[int, int],
    db_views: int,
    query_views: int,
    *,
    lookalike: int = 0,
    repaint: float = 0.0,
):
    """Yield (role, view index, east offset, north offset, condition, image, label map) of one place."""
    world = make_world(np.random.default_rng([seed, place, 0]))
    static = pack(world.groups)
    if lookalike:
        palette = np.random.default_rng([seed, _LOOKALIKE_STREAM, place % lookalike])
        static = recolour(static, palette, SHARED_MATERIALS, shared=True)
    for k in range(db_views + query_views):
        rng = np.random.default_rng([seed, place, 1 + k])
        role = "database" if k < db_views else "queries"
        cam = _camera(rng, world, size)
        cond = database_condition(rng) if role == "database" else query_condition(rng)
        traffic = add_traffic(world, rng, near_z=cam.z)
        scene = static
        if repaint and role == "queries":
            paint = np.random.default_rng([seed, place, 1 + k, _LOOKALIKE_STREAM])
            if paint.random() < repaint:
                scene = recolour(static, paint, REPAINT_MATERIALS, shared=False)
        packed = concat(scene, pack(traffic)) if traffic else scene
        image, label = render(packed, cam, cond, size, rng)
        yield role, k, cam.x, cam.z, cond, image, label


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _readme(places: int, seed: int, size, counts: dict) -> str:
    return (
        "# SYNTHETIC data: procedurally drawn street scenes (structvpr make-synthetic)\n\n"
        f"Generator {GENERATOR}, {places} places, seed {seed}, {size[0]}x{size[1]} pixels.\n"
        "Not real imagery: numbers measured on this set must be reported as synthetic.\n\n"
        "- Folder format: `<split>/{database,queries}/@UTM_east@UTM_north@...jpg`; positives within 25 m are\n"
        "  exactly the database views of the query's own place.\n"
        "- Database views: day/overcast, summer, clear. Query views: other light (night, dusk), season\n"
        "  (leaf colour and density, snow), fog, noise, different cars and people, shifted viewpoint.\n"
        "- `labelmaps/` mirrors the image tree: exact label maps (PNG of ADE20K SceneParsing ids).\n\n"
        f"Images per split: {counts}\n"
    )


def generate(
    out_dir: str | Path,
    places: int,
    seed: int = 0,
    *,
    size: tuple[int, int] = (320, 240),
    db_views: int = 2,
    query_views: int = 2,
    jpeg_quality: int = 92,
    overwrite: bool = False,
    progress: bool = True,
    splits: tuple[int, int, int] | None = None,
    lookalike: int = 0,
    repaint: float = 0.0,
) -> Path:
    """Write a synthetic dataset; returns its directory (``synthetic_path(out_dir)``).

    ``splits``, ``lookalike`` and ``repaint``: the opt-in conditions of the module docstring.

    The set is built in a temporary directory beside the target and renamed into place, so an
    interrupted run never leaves a half-written dataset.
    """
    import cv2
    from tqdm import tqdm

    if places < 1:
        raise DatasetError(f"places must be >= 1, got {places}")
    if db_views < 1 or query_views < 1:
        raise DatasetError("each place needs at least one database view and one query view")
    if len(size) != 2 or min(size) < 32:
        raise DatasetError(f"size must be (W, H) of at least 32 pixels, got {size}")
    if splits is not None and (len(splits) != 3 or min(splits) < 1 or sum(splits) != places):
        raise DatasetError(f"splits must be 3 place counts >= 1 summing to places ({places}), got {splits}")
    if lookalike < 0 or not 0.0 <= repaint <= 1.0:
        raise DatasetError(f"lookalike must be >= 0 and repaint in [0, 1], got {lookalike} and {repaint}")
    out = synthetic_path(out_dir)
    if out.exists():
        if not overwrite:
            raise DatasetError(f"{out}: already exists (pass --overwrite to replace it)")
        if not (out / "manifest.json").is_file():
            raise DatasetError(f"{out}: exists and is not a synthetic set made here; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    started = time.perf_counter()
    counts = {s: {"database": 0, "queries": 0} for s in SPLITS}
    try:
        for split in SPLITS:
            for role in ("database", "queries"):
                (tmp / split / role).mkdir(parents=True)
                (tmp / "labelmaps" / split / role).mkdir(parents=True)
        params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        for place in tqdm(range(places), desc="synthetic places", unit="place", disable=not progress):
            split = split_of(place, places, counts=splits)
            east0, north0 = place_origin(place, split)
            views = render_place(seed, place, size, db_views, query_views, lookalike=lookalike, repaint=repaint)
            for role, k, dx, dz, cond, image, label in views:
                name = utm_name(east0 + dx, north0 + dz, "synthetic", f"p{place:05d}", f"v{k}", cond.name)
                ok, jpg = cv2.imencode(".jpg", image, params)
                if not ok:
                    raise DatasetError(f"{tmp}: JPEG encoding failed")
                _write(tmp / split / role / f"{name}.jpg", jpg.tobytes())
                _write(tmp / "labelmaps" / split / role / f"{name}.png", encode_png(label))
                counts[split][role] += 1
        atomic_write_json(
            tmp / "labelmaps" / LABEL_MANIFEST,
            {"format": LABEL_FORMAT, "taxonomy": "ade20k", "source": "synthetic ground truth", "generator": GENERATOR},
        )
        atomic_write_text(tmp / "SYNTHETIC.md", _readme(places, seed, size, counts))
        atomic_write_json(
            tmp / "manifest.json",
            {
                "synthetic": True,
                "generator": GENERATOR,
                "seed": seed,
                "places": places,
                "size": list(size),
                "db_views": db_views,
                "query_views": query_views,
                "splits": list(splits) if splits is not None else None,
                "lookalike": lookalike,
                "repaint": repaint,
                "format": "folder",
                "label_root": "labelmaps",
                "taxonomy": "ade20k",
                "classes": ADE,
                "place_spacing_m": PLACE_SPACING_M,
                "counts": counts,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
