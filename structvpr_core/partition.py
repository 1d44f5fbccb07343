"""Group partition and distillation weights φ of StructVPR (Shen et al., CVPR 2023, Sec. 3.4).

For every training pair (q, p) of a query and one of its labelled positives:

- ``x`` = rank of p in q's retrieval list over the training database by the **seg** branch,
- ``y`` = the same rank by the **RGB** branch.

Ranks start at 1. Retrieval is an exact faiss inner-product search (descriptors are
L2-normalised) down to ``depth`` results (default ``N_m``); a positive not found in the first
``depth`` results gets the sentinel rank ``depth + 1``. Because ``depth >= N_m > N_t`` and φ
only ever looks at ``min(N_m, y)`` and at whether a rank is ``<= N_t``, the sentinel gives
exactly the φ and group an unlimited search would give. Ties are ordered as faiss returns them.

Methods (``PartitionConfig.method``):

- ``gp-d`` (the paper): D1 = {x <= N_t, y > N_t}, D2 = {x <= y <= N_t}, D3 = {y < x <= N_t},
  D4 = {x > N_t}; φ = 1 + (min(N_m, y) - x) / (4 ln(1+x)) on D1, 1 + (y - x) / (5 ln(1+x)) on D2,
  1 + (y - x) / (4 ln(1+x)) on D3, 0 on D4.
- ``gp-s`` (seg only): S1 = {x <= N_t}, φ' = 1 + 1 / (4 ln(1+x)) on S1, 0 on S2.
- ``gp-r`` (RGB only; the paper names it without a formula, we define it by symmetry with
  GP-S): R1 = {y <= N_t}, φ = 1 + 1 / (4 ln(1+y)) on R1, 0 on R2.
- ``constant``: one weight per group of ``constant_groups``: ``D`` (4 weights, D1..D4), ``S``
  (2 weights, S1, S2), ``R`` (2 weights, R1, R2); unset, 4 weights mean D and 2 mean S.
  The paper's Table 5 rows: GP-D 8-4-1-0 (``[8, 4, 1, 0]``), GP-S 1-0 (``[1, 0]``), and GP-R
  "distil only R1" / "only R2" (``constant_groups: R`` with ``[1, 0]`` / ``[0, 1]``).
- ``all``: φ = 1 for every pair (non-selective distillation); groups reported as D1..D4.
- ``none``: φ = 0 for every pair (no distillation); groups reported as D1..D4.

Files written by :func:`write_partition` into a directory:

- ``pairs.csv``: one row per pair, columns ``query,positive,x,y,group,phi`` (indices into the
  training queries / database; ``group`` is the group's name, e.g. ``D2``);
- ``partition.json``: the config, the number of pairs, per group its count and sample ratio
  (count / pairs: the paper's Table 5 column) and mean φ, the ratio of pairs with φ > 0, and a
  histogram of φ (``bin_edges``, ``counts``);
- ``phi_histogram.png``: the same histogram drawn.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write, atomic_write_json, atomic_write_text
from .config import to_dict
from .errors import ConfigError, DatasetError

METHODS = ("gp-d", "gp-s", "gp-r", "constant", "all", "none")
D_GROUPS = ("D1", "D2", "D3", "D4")
S_GROUPS = ("S1", "S2")
R_GROUPS = ("R1", "R2")
CONSTANT_GROUPS = {"D": D_GROUPS, "S": S_GROUPS, "R": R_GROUPS}


@dataclass
class PartitionConfig:
    method: str = "gp-d"
    n_t: int = 10
    n_m: int = 20
    # Used by method "constant" only: one weight per group of ``constant_groups``.
    constant_weights: list[float] = field(default_factory=lambda: [8.0, 4.0, 1.0, 0.0])
    # The groups of "constant": "D" (D1..D4), "S" (S1, S2: seg rank x) or "R" (R1, R2: RGB rank
    # y; Table 5's GP-R rows). None: D for 4 weights, S for 2 (the meaning before this key existed).
    constant_groups: str | None = None
    # Retrieval depth of the rank search; 0 means N_m (the least that keeps φ exact).
    search_depth: int = 0
    histogram_bins: int = 20

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: expected one of {list(METHODS)}, got {self.method!r}")
        if self.n_t < 1:
            raise ConfigError(f"n_t: must be >= 1, got {self.n_t}")
        if self.n_m < self.n_t:
            raise ConfigError(f"n_m: must be >= n_t ({self.n_t}), got {self.n_m}")
        if len(self.constant_weights) not in (2, 4):
            raise ConfigError(
                "constant_weights: expected 4 (D1..D4) or 2 (S1, S2 or R1, R2) values, "
                f"got {len(self.constant_weights)}"
            )
        if self.constant_groups is not None:
            if self.constant_groups not in CONSTANT_GROUPS:
                raise ConfigError(
                    f"constant_groups: expected one of {list(CONSTANT_GROUPS)} or null, got {self.constant_groups!r}"
                )
            want = len(CONSTANT_GROUPS[self.constant_groups])
            if len(self.constant_weights) != want:
                raise ConfigError(
                    f"constant_weights: constant_groups {self.constant_groups} needs {want} values, "
                    f"got {len(self.constant_weights)}"
                )
        if any(w < 0 or not math.isfinite(w) for w in self.constant_weights):
            raise ConfigError(f"constant_weights: values must be finite and >= 0, got {self.constant_weights}")
        if self.search_depth != 0 and self.search_depth < self.n_m:
            raise ConfigError(f"search_depth: must be 0 (= n_m) or >= n_m ({self.n_m}), got {self.search_depth}")
        if self.histogram_bins < 1:
            raise ConfigError(f"histogram_bins: must be >= 1, got {self.histogram_bins}")

    @property
    def depth(self) -> int:
        return self.search_depth or self.n_m

    @property
    def constant_family(self) -> str:
        """The groups "constant" weights: ``constant_groups``, else D (4 weights) or S (2)."""
        if self.constant_groups is not None:
            return self.constant_groups
        return "D" if len(self.constant_weights) == 4 else "S"


# ---------------------------------------------------------------- groups and weights (pure)


def _ranks(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    if a.size and a.min() < 1:
        raise ValueError("ranks start at 1")
    return a


def groups_gp_d(x, y, n_t: int = 10) -> np.ndarray:
    """Group index 0..3 (D1..D4) of each pair."""
    x, y = _ranks(x), _ranks(y)
    g = np.full(x.shape, 3, dtype=np.int64)  # D4: x > N_t
    seg_ok = x <= n_t
    g[seg_ok & (y > n_t)] = 0  # D1: only the seg branch retrieves p
    g[seg_ok & (x <= y) & (y <= n_t)] = 1  # D2: both, seg ranks p at least as high
    g[seg_ok & (y < x)] = 2  # D3: both, RGB ranks p higher
    return g


def phi_gp_d(x, y, n_t: int = 10, n_m: int = 20) -> np.ndarray:
    """φ(q, p) of GP-D for ranks x (seg) and y (RGB)."""
    x, y = _ranks(x), _ranks(y)
    g = groups_gp_d(x, y, n_t)
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    log = np.log1p(xf)  # ln(1 + x) >= ln 2 since x >= 1
    phi = np.zeros(x.shape, dtype=np.float64)
    d1, d2, d3 = g == 0, g == 1, g == 2
    phi[d1] = 1.0 + (np.minimum(n_m, yf[d1]) - xf[d1]) / (4.0 * log[d1])
    phi[d2] = 1.0 + (yf[d2] - xf[d2]) / (5.0 * log[d2])
    phi[d3] = 1.0 + (yf[d3] - xf[d3]) / (4.0 * log[d3])
    return phi


def groups_single(r, n_t: int = 10) -> np.ndarray:
    """Group index 0 (rank <= N_t) or 1 of each pair: S1/S2 for GP-S (r = x), R1/R2 for GP-R (r = y)."""
    return np.where(_ranks(r) <= n_t, 0, 1).astype(np.int64)


def phi_single(r, n_t: int = 10) -> np.ndarray:
    """φ' of GP-S (r = x) and, by symmetry, of GP-R (r = y): 1 + 1/(4 ln(1+r)) if r <= N_t, else 0."""
    r = _ranks(r)
    return np.where(r <= n_t, 1.0 + 1.0 / (4.0 * np.log1p(r.astype(np.float64))), 0.0)


def group_names(cfg: PartitionConfig) -> tuple[str, ...]:
    if cfg.method == "constant":
        return CONSTANT_GROUPS[cfg.constant_family]
    if cfg.method == "gp-s":
        return S_GROUPS
    if cfg.method == "gp-r":
        return R_GROUPS
    return D_GROUPS


def assign(x, y, cfg: PartitionConfig) -> tuple[np.ndarray, np.ndarray]:
    """(group index into ``group_names(cfg)``, φ) of each pair under ``cfg.method``."""
    x, y = _ranks(x), _ranks(y)
    m = cfg.method
    if m == "gp-d":
        return groups_gp_d(x, y, cfg.n_t), phi_gp_d(x, y, cfg.n_t, cfg.n_m)
    if m == "gp-s":
        return groups_single(x, cfg.n_t), phi_single(x, cfg.n_t)
    if m == "gp-r":
        return groups_single(y, cfg.n_t), phi_single(y, cfg.n_t)
    if m == "constant":
        family = cfg.constant_family
        g = groups_gp_d(x, y, cfg.n_t) if family == "D" else groups_single(x if family == "S" else y, cfg.n_t)
        return g, np.asarray(cfg.constant_weights, dtype=np.float64)[g]
    g = groups_gp_d(x, y, cfg.n_t)
    return g, np.full(g.shape, 1.0 if m == "all" else 0.0)


# ---------------------------------------------------------------- ranks by retrieval


def retrieval_ranks(
    db_desc: np.ndarray, q_desc: np.ndarray, query: np.ndarray, positive: np.ndarray, depth: int
) -> np.ndarray:
    """Rank (from 1) of database item ``positive[i]`` in the retrieval list of query ``query[i]``.

    Exact inner-product search with faiss over ``db_desc``; ranks beyond ``depth`` are
    returned as the sentinel ``depth + 1``.
    """
    import faiss

    db = np.ascontiguousarray(db_desc, dtype=np.float32)
    qs = np.ascontiguousarray(q_desc, dtype=np.float32)
    query = np.asarray(query, dtype=np.int64)
    positive = np.asarray(positive, dtype=np.int64)
    if db.ndim != 2 or qs.ndim != 2 or db.shape[1] != qs.shape[1]:
        raise ValueError(f"descriptor shapes do not match: database {db.shape}, queries {qs.shape}")
    if query.shape != positive.shape:
        raise ValueError("query and positive index arrays differ in length")
    ranks = np.full(query.shape, depth + 1, dtype=np.int64)
    if query.size == 0:
        return ranks
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    wanted = np.unique(query)
    k = min(depth, db.shape[0])
    _, found = index.search(qs[wanted], k)  # (len(wanted), k) database ids, best first
    row = np.searchsorted(wanted, query)
    hit = found[row] == positive[:, None]  # (pairs, k)
    any_hit = hit.any(axis=1)
    ranks[any_hit] = hit[any_hit].argmax(axis=1) + 1
    return ranks


# ---------------------------------------------------------------- result, summary, files


@dataclass
class Partition:
    """Per-pair result of the partition. ``group`` indexes ``names``."""

    query: np.ndarray
    positive: np.ndarray
    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    phi: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.query.size)

    def lookup(self) -> dict[tuple[int, int], float]:
        """φ by (query index, positive index)."""
        return {(int(q), int(p)): float(f) for q, p, f in zip(self.query, self.positive, self.phi, strict=True)}


def partition_pairs(query, positive, x, y, cfg: PartitionConfig) -> Partition:
    group, phi = assign(x, y, cfg)
    return Partition(
        np.asarray(query, dtype=np.int64),
        np.asarray(positive, dtype=np.int64),
        _ranks(x),
        _ranks(y),
        group,
        phi,
        group_names(cfg),
    )


def summarize(part: Partition, cfg: PartitionConfig) -> dict:
    n = len(part)
    groups = {}
    for i, name in enumerate(part.names):
        sel = part.group == i
        count = int(sel.sum())
        groups[name] = {
            "count": count,
            "ratio": count / n if n else 0.0,
            "mean_phi": float(part.phi[sel].mean()) if count else 0.0,
        }
    top = max(1.0, float(part.phi.max())) if n else 1.0
    counts, edges = np.histogram(part.phi, bins=cfg.histogram_bins, range=(0.0, top))
    return {
        "config": to_dict(cfg),
        "pairs": n,
        "sentinel_rank": cfg.depth + 1,
        "groups": groups,
        "kd_ratio": float((part.phi > 0).mean()) if n else 0.0,
        "phi_mean": float(part.phi.mean()) if n else 0.0,
        "phi_histogram": {"bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _pairs_csv(part: Partition) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "positive", "x", "y", "group", "phi"])
    for q, p, x, y, g, f in zip(part.query, part.positive, part.x, part.y, part.group, part.phi, strict=True):
        w.writerow([int(q), int(p), int(x), int(y), part.names[g], repr(float(f))])
    return buf.getvalue()


def _histogram_png(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: no pyplot state, renders with Agg

    hist = summary["phi_histogram"]
    edges = np.asarray(hist["bin_edges"])
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", edgecolor="black")
    ax.set_xlabel("φ (distillation weight)")
    ax.set_ylabel("training pairs")
    ratios = ", ".join(f"{k} {v['ratio']:.1%}" for k, v in summary["groups"].items())
    ax.set_title(f"{summary['config']['method']}: {summary['pairs']} pairs ({ratios})", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def write_partition(part: Partition, cfg: PartitionConfig, out_dir: str | Path) -> dict:
    """Write pairs.csv, partition.json and phi_histogram.png into ``out_dir``; return the summary."""
    out = Path(out_dir)
    summary = summarize(part, cfg)
    atomic_write_text(out / "pairs.csv", _pairs_csv(part))
    _histogram_png(summary, out / "phi_histogram.png")
    atomic_write_json(out / "partition.json", summary)  # last: its presence means "complete"
    return summary


def read_partition(out_dir: str | Path) -> Partition:
    """Read the pairs written by :func:`write_partition`."""
    out = Path(out_dir)
    try:
        summary = json.loads((out / "partition.json").read_text(encoding="utf-8"))
        with open(out / "pairs.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{out}: cannot read the partition ({e})") from None
    names = tuple(summary["groups"])
    try:
        col = {k: [r[k] for r in rows] for k in ("query", "positive", "x", "y", "group", "phi")}
        return Partition(
            np.asarray(col["query"], dtype=np.int64),
            np.asarray(col["positive"], dtype=np.int64),
            np.asarray(col["x"], dtype=np.int64),
            np.asarray(col["y"], dtype=np.int64),
            np.asarray([names.index(g) for g in col["group"]], dtype=np.int64),
            np.asarray(col["phi"], dtype=np.float64),
            names,
        )
    except (KeyError, ValueError) as e:
        raise DatasetError(f"{out / 'pairs.csv'}: malformed partition file ({e})") from None
