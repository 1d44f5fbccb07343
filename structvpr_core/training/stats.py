"""Interval estimates for Recall@N comparisons: binomial, across seeds, and a paired bootstrap.

All functions are pure numpy (and deterministic for a given ``seed``):

- ``binomial_halfwidth(p, n)``: the normal-approximation 95 % half-width 1.96·sqrt(p(1−p)/n) of
  a recall measured on n independent queries (the power rule of the experiment config);
- ``queries_for_halfwidth(h, p)``: the n that gives half-width ``h`` at recall ``p``;
- ``mean_ci(values)``: mean and Student-t 95 % half-width across seeds (0 for one seed);
- ``paired_bootstrap(a, b, strata, clusters)``: the difference mean(a) − mean(b) of two
  per-query hit vectors measured on the same queries, with a percentile 95 % interval and a
  two-sided p-value from resampling. Resampling is *stratified* (each stratum, e.g. a seed with
  its own test set, keeps its size) and *clustered* (a cluster, e.g. the views of one place,
  is drawn as a whole), so correlated queries are not counted as independent.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054

# Student t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal's 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def binomial_halfwidth(p: float, n: int) -> float:
    """95 % half-width of a proportion ``p`` measured on ``n`` independent trials (normal approximation)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return Z95 * math.sqrt(max(p * (1.0 - p), 0.0) / n)


def queries_for_halfwidth(halfwidth: float, p: float = 0.5) -> int:
    """The least n with ``binomial_halfwidth(p, n) <= halfwidth``."""
    if not 0 < halfwidth < 1:
        raise ValueError(f"halfwidth must be in (0, 1), got {halfwidth}")
    return max(1, math.ceil(Z95**2 * p * (1.0 - p) / halfwidth**2))


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else Z95


def mean_ci(values) -> tuple[float, float]:
    """(mean, 95 % half-width) of independent values (e.g. one recall per seed); half-width 0 for one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(t975(v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def paired_bootstrap(
    a,
    b,
    strata=None,
    clusters=None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Difference of two per-query hit vectors (same queries, same order), with its bootstrap interval.

    ``strata``: per query, the stratum (e.g. seed); each replicate draws, within every stratum,
    as many clusters as it has, with replacement. ``clusters``: per query, its cluster (e.g.
    place); None: every query is its own cluster. Returns ``diff`` (mean(a) − mean(b) over all
    queries), ``lo``/``hi`` (percentile 95 % interval), ``p`` (two-sided: twice the smaller
    share of replicates on either side of 0, at least 1/n_boot), ``excludes_zero`` and ``n``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected two non-empty 1-D arrays of one shape, got {a.shape} and {b.shape}")
    n = a.size
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    clusters = np.arange(n) if clusters is None else np.asarray(clusters)
    if strata.shape != a.shape or clusters.shape != a.shape:
        raise ValueError("strata and clusters need one entry per query")
    d = a - b
    # Per stratum: the clusters' sums of d and their sizes; a replicate sums drawn clusters.
    sums, sizes = [], []
    for s_idx in _groups(strata):
        members = _groups(clusters[s_idx])
        sums.append(np.array([d[s_idx[m]].sum() for m in members]))
        sizes.append(np.array([len(m) for m in members], dtype=np.float64))
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    count = np.zeros(n_boot)
    for s, z in zip(sums, sizes, strict=True):
        draw = rng.integers(0, len(s), size=(n_boot, len(s)))
        total += s[draw].sum(axis=1)
        count += z[draw].sum(axis=1)
    reps = total / count
    lo, hi = np.percentile(reps, [2.5, 97.5])
    p = 2.0 * min((reps <= 0).mean(), (reps >= 0).mean())
    return {
        "diff": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "p": float(min(1.0, max(p, 1.0 / n_boot))),
        "excludes_zero": bool(lo > 0 or hi < 0),
        "n": int(n),
    }
