"""Group partition and φ of StructVPR against hand-computed values and a constructed retrieval."""

import json

import numpy as np
import pytest

from structvpr_core.config import from_dict
from structvpr_core.errors import ConfigError
from structvpr_core.partition import (
    PartitionConfig,
    assign,
    group_names,
    groups_gp_d,
    partition_pairs,
    phi_gp_d,
    phi_single,
    read_partition,
    retrieval_ranks,
    write_partition,
)

# (x, y, group D1..D4 as 0..3, φ) with N_t = 10, N_m = 20; φ worked out by hand:
HAND = [
    (1, 1, 1, 1.0),  # x = y = 1: D2, 1 + 0/(5 ln 2)
    (1, 10, 1, 3.5968511),  # y = N_t: still D2, 1 + 9/(5 ln 2) = 1 + 9/3.4657
    (1, 11, 0, 4.6067376),  # y = N_t + 1: D1, 1 + (11-1)/(4 ln 2) = 1 + 10/2.7726
    (1, 25, 0, 7.8528014),  # y > N_m: D1 capped, 1 + (20-1)/(4 ln 2)
    (3, 21, 0, 4.0657270),  # y = N_m + 1 (the search sentinel): 1 + (20-3)/(4 ln 4)
    (3, 3, 1, 1.0),  # x = y: D2
    (2, 6, 1, 1.7281914),  # D2: 1 + 4/(5 ln 3)
    (5, 2, 2, 0.5814170),  # y < x: D3, 1 + (2-5)/(4 ln 6) = 1 - 3/7.1670
    (10, 11, 0, 1.1042581),  # x = N_t, y = N_t + 1: D1, 1 + 1/(4 ln 11)
    (10, 10, 1, 1.0),  # x = y = N_t: D2
    (11, 1, 3, 0.0),  # x > N_t: D4 whatever y
    (11, 30, 3, 0.0),
]


def test_gp_d_groups_and_phi_match_hand_values():
    x, y, g, phi = (np.array(c) for c in zip(*HAND, strict=True))
    np.testing.assert_array_equal(groups_gp_d(x, y, 10), g)
    np.testing.assert_allclose(phi_gp_d(x, y, 10, 20), phi, rtol=0, atol=1e-6)


def test_gp_s_and_gp_r_single_branch_weights():
    # φ' = 1 + 1/(4 ln(1+r)) for r <= N_t: r = 1 → 1 + 1/2.7726 = 1.3606737; r = 10 → 1 + 1/9.5916 = 1.1042581
    np.testing.assert_allclose(phi_single([1, 10, 11, 40], 10), [1.3606738, 1.1042581, 0.0, 0.0], atol=1e-6)
    x, y = np.array([1, 12, 3]), np.array([12, 1, 3])
    g, phi = assign(x, y, PartitionConfig(method="gp-s"))
    np.testing.assert_array_equal(g, [0, 1, 0])  # S1 follows the seg rank x only
    assert phi[1] == 0.0 and phi[0] == pytest.approx(1.3606738, abs=1e-6)
    g, phi = assign(x, y, PartitionConfig(method="gp-r"))
    np.testing.assert_array_equal(g, [1, 0, 0])  # R1 follows the RGB rank y only
    assert phi[0] == 0.0 and phi[1] == pytest.approx(1.3606738, abs=1e-6)


def test_constant_all_none_methods():
    x, y = np.array([1, 1, 5, 11]), np.array([11, 3, 2, 1])  # one pair in each of D1..D4
    g, phi = assign(x, y, PartitionConfig(method="constant", constant_weights=[8, 4, 1, 0]))
    np.testing.assert_array_equal(g, [0, 1, 2, 3])
    np.testing.assert_array_equal(phi, [8, 4, 1, 0])
    g, phi = assign(x, y, PartitionConfig(method="constant", constant_weights=[1, 0]))
    np.testing.assert_array_equal(phi, [1, 1, 1, 0])
    np.testing.assert_array_equal(assign(x, y, PartitionConfig(method="all"))[1], [1, 1, 1, 1])
    np.testing.assert_array_equal(assign(x, y, PartitionConfig(method="none"))[1], [0, 0, 0, 0])


def test_gp_r_rows_of_table_5_distil_only_r1_or_only_r2():
    """Table 5's GP-R rows: constant weights over the RGB-rank groups R1 = {y <= N_t}, R2."""
    x, y = np.array([1, 1, 5, 11]), np.array([11, 3, 2, 1])  # y > N_t only for the first pair
    only_r1 = PartitionConfig(method="constant", constant_groups="R", constant_weights=[1, 0])
    g, phi = assign(x, y, only_r1)
    np.testing.assert_array_equal(g, [1, 0, 0, 0])
    np.testing.assert_array_equal(phi, [0, 1, 1, 1])  # S-groups (seg rank x) would give [1, 1, 1, 0]
    assert group_names(only_r1) == ("R1", "R2")
    g, phi = assign(
        x,
        y,
        from_dict(
            PartitionConfig, {"method": "constant", "constant_groups": "R", "constant_weights": [0, 1]}, "partition"
        ),
    )
    np.testing.assert_array_equal(phi, [1, 0, 0, 0])
    # the D and S families by name give what the weight count gave before
    d = PartitionConfig(method="constant", constant_groups="D", constant_weights=[8, 4, 1, 0])
    np.testing.assert_array_equal(assign(x, y, d)[1], [8, 4, 1, 0])
    with pytest.raises(ConfigError, match="constant_weights"):
        from_dict(PartitionConfig, {"constant_groups": "R", "constant_weights": [8, 4, 1, 0]}, "partition")
    with pytest.raises(ConfigError, match="constant_groups"):
        from_dict(PartitionConfig, {"constant_groups": "X"}, "partition")


def test_ranks_start_at_one():
    with pytest.raises(ValueError):
        phi_gp_d([0], [1])


def _ordered_queries(orders, n_db):
    """Query descriptors whose inner-product retrieval over identity database descriptors is ``orders[i]``."""
    q = np.zeros((len(orders), n_db), dtype=np.float32)
    for i, order in enumerate(orders):
        q[i, order] = np.linspace(1.0, 0.1, len(order))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_partition_on_a_constructed_retrieval(tmp_path):
    rng = np.random.default_rng(0)
    n_db = 40
    db = np.eye(n_db, dtype=np.float32)
    seg_orders = [rng.permutation(n_db) for _ in range(3)]
    rgb_orders = [rng.permutation(n_db) for _ in range(3)]
    # Pairs chosen so that their ranks are known: (query, position in seg list, position in rgb list)
    wanted = [(0, 0, 15), (0, 3, 3), (1, 6, 1), (1, 12, 0), (2, 2, 30), (2, 9, 9)]
    query = np.array([w[0] for w in wanted])
    positive = np.array([seg_orders[q][i] for q, i, _ in wanted])
    # place each positive at the wanted RGB position by swapping it there
    for (q, _, j), p in zip(wanted, positive, strict=True):
        order = rgb_orders[q]
        k = int(np.where(order == p)[0][0])
        order[k], order[j] = order[j], order[k]
    for (q, i, _), p in zip(wanted, positive, strict=True):
        assert seg_orders[q][i] == p  # the swaps touched only the RGB lists
    cfg = PartitionConfig()
    x = retrieval_ranks(db, _ordered_queries(seg_orders, n_db), query, positive, cfg.depth)
    y = retrieval_ranks(db, _ordered_queries(rgb_orders, n_db), query, positive, cfg.depth)
    np.testing.assert_array_equal(x, [1, 4, 7, 13, 3, 10])
    np.testing.assert_array_equal(y, [16, 4, 2, 1, 21, 10])  # position 30 is beyond depth 20 → sentinel 21
    part = partition_pairs(query, positive, x, y, cfg)
    assert [part.names[g] for g in part.group] == ["D1", "D2", "D3", "D4", "D1", "D2"]

    summary = write_partition(part, cfg, tmp_path)
    assert summary["groups"]["D1"] == {
        "count": 2,
        "ratio": pytest.approx(2 / 6),
        "mean_phi": pytest.approx(np.mean(part.phi[[0, 4]])),
    }
    assert summary["kd_ratio"] == pytest.approx(5 / 6)
    assert sum(summary["phi_histogram"]["counts"]) == 6
    on_disk = json.loads((tmp_path / "partition.json").read_text())
    assert on_disk["groups"]["D4"]["count"] == 1
    png = (tmp_path / "phi_histogram.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = read_partition(tmp_path)
    np.testing.assert_array_equal(back.x, x)
    np.testing.assert_array_equal(back.group, part.group)
    np.testing.assert_array_equal(back.phi, part.phi)  # repr() round-trips floats exactly
    assert back.lookup()[(1, int(positive[2]))] == pytest.approx(1 + (2 - 7) / (4 * np.log(8)))


def test_deeper_search_reports_true_ranks():
    db = np.eye(30, dtype=np.float32)
    q = _ordered_queries([np.arange(30)], 30)
    assert retrieval_ranks(db, q, [0], [25], depth=20)[0] == 21
    assert retrieval_ranks(db, q, [0], [25], depth=30)[0] == 26


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"method": "gp-x"}, "method"),
        ({"n_m": 5}, "n_m"),
        ({"constant_weights": [1, 2, 3]}, "constant_weights"),
        ({"search_depth": 10}, "search_depth"),
        ({"n_t": 0}, "n_t"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_partition_config_is_a_one_line_error(bad, key):
    with pytest.raises(ConfigError) as e:
        from_dict(PartitionConfig, bad, "partition")
    assert key in str(e.value) and "\n" not in str(e.value)
