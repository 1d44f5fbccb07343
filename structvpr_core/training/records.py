"""What a training stage leaves on disk, and reading it back for ``--resume``.

Each stage writes under ``RUN/<stage>/`` (rank 0 only):

- ``state.pt``: the resume state, replaced atomically after every epoch: the branch's weights
  (``branch``), the distillation's trainable modules (``modules``: name → weights, e.g. T as
  ``projector``; older files hold T as ``projector`` at the top level), optimiser and AMP-scaler
  state, the last finished epoch, the global step, the best validation result so far. Loaded
  with ``weights_only=True``.
- ``best.pt``: the model with the best validation result (Recall@1; the lqq stage: the lowest
  ``val_mse``; with ``validate_start`` the starting model competes as epoch 0)
  (``structvpr_core.checkpoint`` format; stage I seg: ``structvpr-seg-mobilenetl``, RGB branches:
  ``structvpr-rgb-mobilenetv2``; StructVPR++: ``structvpr-pp-seg-mobilenetl`` and
  ``structvpr-pp-rgb-mobilenetv2``, loadable by the ``Extractor``; the lqq student also names its
  teacher's fingerprint as ``query_encoder_for``). Without a validation split: the last epoch's model.
- ``last.pt``: the model after the last finished epoch (same format).
- ``log.csv``: one row per epoch; columns ``epoch`` (1-based; with ``validate_start`` a first row
  0, the starting model's validation, without losses), ``steps`` (optimiser steps in
  the epoch), ``tuples`` (training tuples; the lqq stage: images), ``loss``, ``loss_vpr``,
  ``loss_kd`` (means over the epoch's steps and ranks; ``loss = loss_vpr + loss_kd``,
  ``loss_kd`` is 0 in stage I, ``loss_vpr`` 0 in the lqq stage), ``lr``, ``seconds`` (wall
  time of the epoch), then the validation's columns (empty when the epoch was not validated):
  ``R@N`` for each N of ``recall_ns`` on the validation split (stages I and II); the lqq
  stage's ``val_mse``, ``val_ickd``, ``val_loss`` (student on degraded held-out images against
  the teacher on the good ones) and ``val_mse_init``, ``val_ickd_init``, ``val_loss_init`` (the
  same for the untrained student, i.e. the teacher itself on the degraded images).
- ``steps.csv``: one row per optimiser step: ``epoch``, ``step`` (global, 1-based), ``loss``,
  ``loss_vpr``, ``loss_kd``.
- ``tensorboard/`` (``tensorboard: true``): the step losses as ``<stage>/loss…`` (with a
  distillation's named parts as ``<stage>/loss_kd_<part>``) and ``<stage>/val_R@N``.
- ``done.json``: written last; the stage is complete (epochs, best epoch and its validation
  result as ``best_recalls``, the lqq stage ``best_val``, seconds).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..atomic import atomic_write, atomic_write_json, atomic_write_text
from ..errors import CheckpointError, ConfigError

STATE = "state.pt"
BEST = "best.pt"
LAST = "last.pt"
LOG = "log.csv"
STEPS = "steps.csv"
DONE = "done.json"
STEP_COLUMNS = ["epoch", "step", "loss", "loss_vpr", "loss_kd"]


def log_columns(metric_columns: list[str]) -> list[str]:
    """The columns of ``log.csv``: the epoch's training figures, then the validation's own."""
    return ["epoch", "steps", "tuples", "loss", "loss_vpr", "loss_kd", "lr", "seconds", *metric_columns]


class CsvLog:
    """An append-only CSV file; ``keep`` rewrites it with only the rows a resumed run keeps."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = columns

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            # A crash can cut the last line short: keep only complete rows.
            return [r for r in csv.DictReader(f) if None not in r.values() and None not in r]

    def keep(self, predicate) -> None:
        rows = [r for r in self.rows() if predicate(r)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, row: dict) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k, "")) for k in self.columns})


class StageLog:
    """The logs of one stage: ``log.csv``, ``steps.csv`` and, when asked, TensorBoard events.

    Every rank calls it the same way; only the main rank (``enabled``) writes.
    """

    def __init__(self, out: Path, name: str, metric_columns: list[str], enabled: bool):
        self.out = Path(out)
        self.name = name
        self.enabled = enabled
        self.epochs = CsvLog(self.out / LOG, log_columns(metric_columns))
        self.steps = CsvLog(self.out / STEPS, STEP_COLUMNS)
        self.writer = None

    def restart(self, epoch: int, step: int) -> None:
        """Keep the rows up to the last finished ``epoch`` and its last ``step`` (0, 0: a new stage, no rows;
        a row 0 of an earlier start is validated again)."""
        if self.enabled:
            self.epochs.keep(lambda r: epoch > 0 and int(r["epoch"]) <= epoch)
            self.steps.keep(lambda r: int(r["step"]) <= step)

    def open_tensorboard(self, step: int) -> None:
        """Also write TensorBoard events (``out/tensorboard``), dropping any after ``step`` (a resumed run)."""
        if not self.enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard: true needs the 'tensorboard' package installed") from None
        self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=step + 1)

    def step(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        """One step: ``loss``, ``loss_vpr``, ``loss_kd`` (CSV and TensorBoard), named parts (TensorBoard only)."""
        if not self.enabled:
            return
        self.steps.append({"epoch": epoch, "step": step, **losses})
        if self.writer is not None:
            for k, v in losses.items():
                self.writer.add_scalar(f"{self.name}/{k}", v, step)

    def epoch(self, row: dict, metrics: dict[str, float] | None, step: int) -> None:
        """One finished epoch: its ``log.csv`` row and, when validated, its validation columns (e.g. ``R@1``)."""
        if not self.enabled:
            return
        self.epochs.append({**row, **(metrics or {})})
        if self.writer is not None:
            for k, v in (metrics or {}).items():
                self.writer.add_scalar(f"{self.name}/{k if k.startswith('val_') else f'val_{k}'}", v, step)
            self.writer.flush()

    def seconds(self) -> float:
        """Wall time of the stage's epochs so far (over resumed invocations too)."""
        return sum(float(r["seconds"]) for r in self.epochs.rows()) if self.enabled else 0.0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def save_state(path: Path, state: dict) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: unreadable resume state ({type(e).__name__}); delete it to restart the stage"
        ) from None


def read_done(stage_dir: Path) -> dict | None:
    path = Path(stage_dir) / DONE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_done(stage_dir: Path, info: dict) -> None:
    atomic_write_json(Path(stage_dir) / DONE, info)
