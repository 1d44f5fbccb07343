"""The interval estimates of the experiment report against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structvpr_core.training.stats import (
    binomial_halfwidth,
    mean_ci,
    paired_bootstrap,
    queries_for_halfwidth,
    t975,
)


def test_binomial_power_rule():
    assert binomial_halfwidth(0.5, 2401) == pytest.approx(0.019999, abs=1e-5)
    assert queries_for_halfwidth(0.02, 0.5) == 2401
    assert binomial_halfwidth(0.5, 2400) > 0.02  # one query fewer is not enough
    assert queries_for_halfwidth(0.02, 0.2) == 1537
    assert binomial_halfwidth(0.25, 80) == pytest.approx(1.959964 * math.sqrt(0.25 * 0.75 / 80))


def test_mean_ci_uses_student_t():
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci([0.7]) == (0.7, 0.0)
    assert t975(1) == 12.706 and t975(100) == pytest.approx(1.96, abs=1e-3)


def test_bootstrap_of_identical_and_disjoint_hits():
    a = np.random.default_rng(0).random(200) < 0.5
    same = paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == 0.0 and same["lo"] == same["hi"] == 0.0 and same["p"] == 1.0
    assert not same["excludes_zero"]
    better = paired_bootstrap(np.ones(50), np.zeros(50), n_boot=500)
    assert better["diff"] == 1.0 and better["excludes_zero"] and better["p"] == pytest.approx(1 / 500)


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    a = (rng.random(4000) < 0.6).astype(float)
    b = (rng.random(4000) < 0.5).astype(float)
    r = paired_bootstrap(a, b, n_boot=4000, seed=3)
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert r["diff"] == pytest.approx(d.mean())
    assert (r["hi"] - r["lo"]) / 2 == pytest.approx(half, rel=0.1)
    assert r["excludes_zero"] and r["p"] < 0.01
    assert paired_bootstrap(a, b, n_boot=4000, seed=3) == r  # deterministic


def test_clusters_widen_the_interval_of_correlated_queries():
    """Each query duplicated (two views of one place with the same outcome): resampling whole places
    gives the interval of the 1000 places (≈ √2 wider than pretending 2000 independent queries)."""
    rng = np.random.default_rng(2)
    d = (rng.random(1000) < 0.55).astype(float) - (rng.random(1000) < 0.5).astype(float)
    a = np.repeat(np.clip(d, 0, 1), 2)
    b = np.repeat(np.clip(-d, 0, 1), 2)
    places = np.repeat(np.arange(1000), 2)
    naive = paired_bootstrap(a, b, n_boot=3000, seed=4)
    clustered = paired_bootstrap(a, b, clusters=places, n_boot=3000, seed=4)
    ratio = (clustered["hi"] - clustered["lo"]) / (naive["hi"] - naive["lo"])
    assert ratio == pytest.approx(math.sqrt(2), rel=0.12)


def test_strata_keep_their_sizes():
    """Stratum 0 always better, stratum 1 always worse, 3:1 in size: every replicate gives exactly 0.5."""
    a = np.array([1.0] * 300 + [0.0] * 100)
    b = np.array([0.0] * 300 + [1.0] * 100)
    strata = np.array([0] * 300 + [1] * 100)
    r = paired_bootstrap(a, b, strata=strata, n_boot=300)
    assert r["lo"] == r["hi"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10])
