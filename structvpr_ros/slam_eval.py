"""How much the loop closures helped: absolute trajectory error with evo, loop truth, a plot. No ROS.

``ate_rmse`` is the absolute trajectory error (RMSE of the position differences, metres) of an
estimate against ground truth, computed by the community's tool, evo (``evo.core``: trajectories
associated by stamp, aligned by SE(3) Umeyama without scale as ``evo_ape -a`` does, then the
translation-part APE statistic), not by hand. ``plot_route`` draws the trajectories top-down
with the loop closures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from structvpr_core.geometry import Pose


def _trajectory(stamps: Sequence[float], poses: Sequence[Pose]):
    from evo.core.trajectory import PoseTrajectory3D

    xyz = np.array([p.position for p in poses], dtype=float)
    wxyz = np.array([(p.orientation[3], *p.orientation[:3]) for p in poses], dtype=float)
    return PoseTrajectory3D(positions_xyz=xyz, orientations_quat_wxyz=wxyz, timestamps=np.asarray(stamps, float))


def ate_rmse(
    stamps_truth: Sequence[float],
    truth: Sequence[Pose],
    stamps_estimate: Sequence[float],
    estimate: Sequence[Pose],
    align: bool = True,
    max_diff_s: float = 0.01,
) -> float:
    """Absolute trajectory error (RMSE, metres) of ``estimate`` against ``truth`` (evo)."""
    from evo.core import metrics, sync

    ref, est = sync.associate_trajectories(
        _trajectory(stamps_truth, truth), _trajectory(stamps_estimate, estimate), max_diff=max_diff_s
    )
    if align:
        est.align(ref, correct_scale=False)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return float(ape.get_statistic(metrics.StatisticsType.rmse))


def plot_route(
    path: str | Path,
    truth: Sequence[Pose],
    odometry: Sequence[Pose],
    corrected: Sequence[Pose],
    loops: Sequence[tuple[Pose, Pose, bool, bool]] = (),
    title: str = "",
) -> Path:
    """Top-down PNG: ground truth, odometry, corrected trajectory, and loop closures drawn between
    the corrected poses of their two keyframes (``loops``: (pose a, pose b, true?, down-weighted
    by the robust kernel?); green true, red false, dotted when down-weighted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(poses):
        a = np.array([p.position[:2] for p in poses], dtype=float).reshape(-1, 2)
        return a[:, 0], a[:, 1]

    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    ax.plot(*xy(truth), color="0.55", lw=3, label="ground truth")
    ax.plot(*xy(odometry), color="tab:orange", lw=1.5, label="odometry")
    ax.plot(*xy(corrected), color="tab:blue", lw=1.5, label="corrected (pose graph)")
    labelled = set()
    for a, b, true, downweighted in loops:
        kind = ("true" if true else "false") + (", down-weighted" if downweighted else "")
        ax.plot(
            [a.position[0], b.position[0]],
            [a.position[1], b.position[1]],
            color="tab:green" if true else "tab:red",
            ls=":" if downweighted else "-",
            lw=0.8,
            alpha=0.8,
            label=None if kind in labelled else f"loop closure ({kind})",
        )
        labelled.add(kind)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
