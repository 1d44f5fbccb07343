"""The training curve of a stage: validation Recall@N per epoch (and the training loss), from its ``log.csv``.

``plot_curve`` reads the rows ``records`` writes (epochs without a validation have empty R@N
cells and are skipped for the recall lines) and draws the recall columns on the left axis, the
epoch's mean training loss on the right one. ``start`` adds the untrained model's figures as
epoch 0 (e.g. the ImageNet initialisation measured with ``structvpr eval`` at the same input
size), so the curve shows what training gained. ``training/plot_curve.py`` is the command.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write
from ..errors import ConfigError
from .records import CsvLog, log_columns


def read_curve(log_csv: str | Path, metrics: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(epoch, value), ...]}`` for ``metrics`` and ``loss``, the epochs that have a value."""
    path = Path(log_csv)
    if not path.is_file():
        raise ConfigError(f"{path}: no such log (a stage's log.csv, e.g. RUN/stage1_rgb/log.csv)")
    rows = CsvLog(path, log_columns([])).rows()
    if not rows:
        raise ConfigError(f"{path}: no finished epoch in the log")
    missing = [m for m in metrics if m not in rows[0]]
    if missing:
        known = [k for k in rows[0] if k not in log_columns([])]
        raise ConfigError(f"{path}: no column {missing[0]!r} (validation columns: {', '.join(known) or 'none'})")
    curve = {}
    for name in [*metrics, "loss"]:
        curve[name] = [(int(r["epoch"]), float(r[name])) for r in rows if r.get(name, "") != ""]
    return curve


def plot_curve(
    log_csv: str | Path,
    out: str | Path,
    *,
    metrics: list[str] | None = None,
    start: dict[str, float] | None = None,
    title: str = "",
) -> Path:
    """Write ``out`` (PNG): ``metrics`` (default ``R@1``) per epoch, the mean training loss on a second axis.

    ``start``: ``{metric: value}`` of the untrained model, drawn at epoch 0 and as a dotted line.
    """
    from matplotlib.figure import Figure  # object API: no pyplot state, renders with Agg

    metrics = list(metrics or ["R@1"])
    curve = read_curve(log_csv, metrics)
    fig = Figure(figsize=(6.4, 3.8), dpi=110)
    ax = fig.add_subplot()
    for i, name in enumerate(metrics):
        points = curve[name]
        if start and name in start:
            points = [(0, start[name]), *points]
            ax.axhline(start[name], color=f"C{i}", linestyle=":", linewidth=1)
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", color=f"C{i}", label=f"validation {name}")
        best = max(range(len(ys)), key=ys.__getitem__)
        ax.annotate(f"{ys[best]:.3f}", (xs[best], ys[best]), fontsize=8, textcoords="offset points", xytext=(0, 6))
    ax.set_xlabel("epoch" + (" (0: untrained start, dotted)" if start else ""))
    ax.set_ylabel("Recall@N")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    loss = curve["loss"]
    if loss:
        ax2 = ax.twinx()
        xs, ys = zip(*loss, strict=True)
        ax2.plot(xs, ys, color="grey", linestyle="--", linewidth=1, label="training loss")
        ax2.set_ylabel("mean training loss", color="grey")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    return out
