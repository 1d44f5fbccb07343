"""SLME: segmentation label map encoding (StructVPR, Shen et al. CVPR 2023, Sec. 3.1).

A label map of class ids becomes the C×H×W input of the segmentation branch in three steps:

1. **format** as one-hot over the taxonomy's classes,
2. **cluster** the classes into C groups (``clusters: 6`` the paper's default
   {vegetation, dynamic, sky, ground, buildings, other}; ``3`` {sky & ground, dynamic, static};
   ``0`` no clustering, one channel per class: 150 for ADE20K, 19 for Cityscapes),
3. **weight**: each pixel's channel holds its cluster's weight instead of 1.

Weightings (``SLMEConfig.weighting``):

- ``prior``: the paper's per-cluster priors, for C=6 0.5, 0.5, 1, 1, 2, 2 in the order above;
  for C=3 1, 0.5, 2 (ours); without clustering each class takes the C=6 weight of its cluster.
- ``uniform``: every channel 1 (plain one-hot of the clusters).
- ``opposite``: the prior weights turned upside down, ``w' = min(w)·max(w) / w``. For C=6 this
  is exactly the reversed order 2, 2, 1, 1, 0.5, 0.5 the paper's ablation uses; the same rule
  gives 1, 2, 0.5 for C=3.
- ``weights: [...]`` (one number per channel) overrides all of these.

Label ids: the taxonomy files in ``taxonomies/`` list the official ids (ADE20K: the benchmark
PNGs, 0 = unlabelled, 1..150 classes; Cityscapes: train ids 0..18, 255 = ignore). Unlabelled,
ignored and unknown ids (negative, too large, not in the table) give all-zero pixels: they carry
no structure, and sending them to "other" would give noise the highest prior weight.
``id_offset`` is added to every id before the lookup (``id_offset: 1`` reads 0-based maps,
0 = wall, as SegFormer / mmseg output; their 255 then becomes the unknown 256).

Label maps are resized with nearest neighbour (class ids must never be interpolated).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from .errors import ConfigError

TAXONOMIES = ("ade20k", "cityscapes")
WEIGHTINGS = ("prior", "uniform", "opposite")
CLUSTER_COUNTS = (6, 3, 0)


@dataclass
class SLMEConfig:
    taxonomy: str = "ade20k"
    clusters: int = 6
    weighting: str = "prior"
    weights: list[float] | None = None
    id_offset: int = 0

    def validate(self) -> None:
        if self.taxonomy not in TAXONOMIES:
            raise ConfigError(f"taxonomy: expected one of {list(TAXONOMIES)}, got {self.taxonomy!r}")
        if self.clusters not in CLUSTER_COUNTS:
            raise ConfigError(f"clusters: expected 6, 3 or 0 (no clustering), got {self.clusters!r}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting: expected one of {list(WEIGHTINGS)}, got {self.weighting!r}")
        if self.weights is not None:
            n = num_channels(self)
            if len(self.weights) != n:
                raise ConfigError(f"weights: expected {n} values (one per channel), got {len(self.weights)}")
            if not all(np.isfinite(w) and w >= 0 for w in self.weights):
                raise ConfigError(f"weights: must be finite and non-negative, got {list(self.weights)}")


@dataclass(frozen=True)
class Taxonomy:
    name: str
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    class_clusters: tuple[str, ...]  # the C=6 cluster of each class
    ignore_ids: tuple[int, ...]


def _read_yaml(filename: str) -> dict:
    text = resources.files("structvpr_core").joinpath("taxonomies", filename).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.cache
def cluster_sets() -> dict:
    """The contents of ``taxonomies/clusters.yaml`` (c6 and c3 names, weights, c3 members)."""
    return _read_yaml("clusters.yaml")


@functools.cache
def load_taxonomy(name: str) -> Taxonomy:
    """Read and check ``taxonomies/<name>.yaml`` (packaged data)."""
    if name not in TAXONOMIES:
        raise ConfigError(f"taxonomy: expected one of {list(TAXONOMIES)}, got {name!r}")
    data = _read_yaml(f"{name}.yaml")
    c6 = cluster_sets()["c6"]["names"]
    classes = data["classes"]
    ids = tuple(int(c["id"]) for c in classes)
    clusters = tuple(str(c["cluster"]) for c in classes)
    # The files are hand-edited: fail loudly on a slip rather than encode wrong channels.
    if len(classes) != data["num_classes"] or len(set(ids)) != len(ids) or list(ids) != sorted(ids):
        raise ConfigError(f"taxonomies/{name}.yaml: class ids must be {data['num_classes']} unique sorted ids")
    bad = [c for c in clusters if c not in c6]
    if bad:
        raise ConfigError(f"taxonomies/{name}.yaml: unknown cluster {bad[0]!r} (known: {c6})")
    return Taxonomy(
        name=name,
        class_ids=ids,
        class_names=tuple(str(c["name"]) for c in classes),
        class_clusters=clusters,
        ignore_ids=tuple(int(i) for i in data.get("ignore_ids", [])),
    )


def num_channels(cfg: SLMEConfig) -> int:
    """C, the number of channels of the SLME tensor (and of the seg branch's input)."""
    if cfg.clusters == 0:
        return len(load_taxonomy(cfg.taxonomy).class_ids)
    return cfg.clusters


def channel_names(cfg: SLMEConfig) -> list[str]:
    if cfg.clusters == 0:
        return list(load_taxonomy(cfg.taxonomy).class_names)
    return list(cluster_sets()[f"c{cfg.clusters}"]["names"])


def _class_channels(cfg: SLMEConfig) -> np.ndarray:
    """Channel index of each class of the taxonomy, in the taxonomy's class order."""
    tax = load_taxonomy(cfg.taxonomy)
    if cfg.clusters == 0:
        return np.arange(len(tax.class_ids))
    sets = cluster_sets()
    if cfg.clusters == 6:
        order = sets["c6"]["names"]
        return np.array([order.index(c) for c in tax.class_clusters])
    c3 = sets["c3"]
    group_of = {member: c3["names"].index(group) for group, members in c3["members"].items() for member in members}
    return np.array([group_of[c] for c in tax.class_clusters])


def _prior_weights(cfg: SLMEConfig) -> np.ndarray:
    sets = cluster_sets()
    if cfg.clusters == 0:
        c6 = sets["c6"]
        w6 = dict(zip(c6["names"], c6["prior_weights"], strict=True))
        return np.array([w6[c] for c in load_taxonomy(cfg.taxonomy).class_clusters], dtype=np.float32)
    return np.array(sets[f"c{cfg.clusters}"]["prior_weights"], dtype=np.float32)


def channel_weights(cfg: SLMEConfig) -> np.ndarray:
    """The value written into each channel (length C)."""
    if cfg.weights is not None:
        return np.asarray(cfg.weights, dtype=np.float32)
    prior = _prior_weights(cfg)
    if cfg.weighting == "uniform":
        return np.ones_like(prior)
    if cfg.weighting == "opposite":
        return (prior.min() * prior.max() / prior).astype(np.float32)
    return prior


def label_retrieval_weights(clusters: int) -> list[float]:
    """StructVPR++ per-label retrieval weights w_c: the prior scaled to [0, 1], dynamic → 0.

    Our design (the StructVPR++ paper text was unavailable): stable structure counts most in
    the label part of the descriptor, moving objects not at all. C = 6: 0.25, 0, 0.5, 0.5, 1, 1
    (vegetation, dynamic, sky, ground, buildings, other); C = 3: 0.5, 0, 1.
    """
    if clusters not in (3, 6):
        raise ConfigError(f"clusters: label features need 3 or 6 clusters, got {clusters!r}")
    sets = cluster_sets()[f"c{clusters}"]
    prior = np.asarray(sets["prior_weights"], dtype=np.float64)
    weights = prior / prior.max()
    weights[[i for i, name in enumerate(sets["names"]) if name == "dynamic"]] = 0.0
    return [float(w) for w in weights]


def cluster_mask_config(cfg: SLMEConfig, clusters: int) -> SLMEConfig:
    """The config whose encoding is the one-hot map of ``clusters`` label clusters (uniform weights).

    Same taxonomy and id offset as ``cfg``; unlabelled pixels stay all-zero (no label).
    """
    return SLMEConfig(taxonomy=cfg.taxonomy, clusters=clusters, weighting="uniform", id_offset=cfg.id_offset)


@functools.lru_cache(maxsize=32)
def _lookup(taxonomy: str, clusters: int, weighting: str, weights: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    cfg = SLMEConfig(
        taxonomy=taxonomy,
        clusters=clusters,
        weighting=weighting,
        weights=list(weights) if weights is not None else None,
    )
    tax = load_taxonomy(taxonomy)
    ids = np.array(tax.class_ids)
    lut = np.full(int(ids.max()) + 1, -1, dtype=np.int64)  # -1: no channel (all-zero pixel)
    lut[ids] = _class_channels(cfg)
    lut[[i for i in tax.ignore_ids if i < len(lut)]] = -1
    return lut, channel_weights(cfg)


def _resize_nearest(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to ``size`` = (W, H), sampling each output pixel's centre."""
    h, w = label_map.shape
    out_w, out_h = size
    if (out_w, out_h) == (w, h):
        return label_map
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
    return label_map[rows[:, None], cols[None, :]]


def encode_label_map(label_map: np.ndarray, cfg: SLMEConfig | None = None, size: tuple[int, int] | None = (640, 480)):
    """The SLME tensor (C, H, W) float32 of one label map (H, W) of integer class ids.

    ``size`` = (W, H) of the output (nearest-neighbour resize); ``None`` keeps the map's size.
    """
    import torch

    cfg = SLMEConfig() if cfg is None else cfg
    cfg.validate()
    label_map = np.asarray(label_map)
    if label_map.ndim == 3 and label_map.shape[2] == 1:
        label_map = label_map[:, :, 0]
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ConfigError(
            f"label map: expected an H×W array of integer class ids, got shape "
            f"{label_map.shape} and type {label_map.dtype}"
        )
    if label_map.size == 0:
        raise ConfigError(f"label map: zero size {label_map.shape}")
    if size is not None:
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"size: expected (W, H) of positive integers, got {size!r}")
        label_map = _resize_nearest(label_map, (int(size[0]), int(size[1])))
    lut, weights = _lookup(
        cfg.taxonomy, cfg.clusters, cfg.weighting, tuple(cfg.weights) if cfg.weights is not None else None
    )
    ids = label_map.astype(np.int64) + cfg.id_offset
    known = (ids >= 0) & (ids < len(lut))
    channel = np.where(known, lut[np.where(known, ids, 0)], -1).ravel()
    h, w = label_map.shape
    out = np.zeros((len(weights), h * w), dtype=np.float32)
    pixels = np.flatnonzero(channel >= 0)
    out[channel[pixels], pixels] = weights[channel[pixels]]
    return torch.from_numpy(out.reshape(len(weights), h, w))
