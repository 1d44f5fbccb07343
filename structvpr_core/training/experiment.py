"""A powered comparison of training variants: per seed stage I once, then stage II per variant, all evaluated.

``run_experiment(cfg, out, env)`` reads top to bottom:

1. per seed and stage-I *family* (``base``: plain StructVPR; others, e.g. ``pp``, add their
   ``set`` overrides such as ``model.label_features``) the training run ``OUT/seed<S>/<family>/``
   trains stage I once (``run.run_training`` with ``--resume`` semantics);
2. per variant and seed (variant-major: every seed of the first variant, then the next), the
   partition (when its method needs one) and stage II under ``--tag <variant>`` in its family's
   run directory, sharing that stage I;
3. every model is evaluated on the held-out split (``eval_split``): the untrained ImageNet
   student, the stage-I seg teacher and RGB branch of each family, and every variant's
   stage-II student. Each evaluation is cached in ``OUT/seed<S>/eval/<model>.npz`` (per query
   the rank of its first positive, 0 when beyond max N, and its cluster: the smallest index of
   its positives, i.e. its place) with the SHA-256 of the checkpoint it measured;
4. ``experiment_report.write_report`` rewrites ``results.csv``, ``summary.md`` and the figure
   from whatever evaluations exist, after every model: a killed experiment is summarised as
   far as it got, and rerunning the same command continues where it stopped.

With a synthetic base config each seed also generates its own data set (``data.synthetic.seed``
= the seed, ``data.root`` + ``-s<seed>``), so the seeds' queries are independent and can be
pooled; with a real data set (MSLS) the data stay and only the training seed changes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, atomic_write_json
from ..config import to_dict
from ..errors import ConfigError
from ..log import get_logger
from . import records
from .config import TrainConfig, load_train_config

log = get_logger(__name__)
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
REFERENCE_MODELS = ("untrained", "seg-teacher", "stage1-rgb")


@dataclass
class Family:
    """A stage I shared by several variants: its name and its overrides of the base config."""

    name: str
    set: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not NAME.match(self.name):
            raise ConfigError(f"name: lower-case letters, digits, '-', '_' or '.', got {self.name!r}")


@dataclass
class Variant:
    """One stage-II variant: its name (the run's --tag), its family and its overrides."""

    name: str
    family: str = "base"
    set: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # a subset of the experiment's seeds (None: all), for costly extras

    def validate(self) -> None:
        if not NAME.match(self.name) or self.name in REFERENCE_MODELS:
            raise ConfigError(f"name: a plain lower-case name other than {list(REFERENCE_MODELS)}, got {self.name!r}")


@dataclass
class ExperimentConfig:
    base: Path  # the training YAML every run starts from (relative to the working directory)
    variants: list[Variant]
    set: list[str] = field(default_factory=list)  # overrides of the base for every run
    families: list[Family] = field(default_factory=list)  # stage-I families besides "base"
    seeds: list[int] = field(default_factory=lambda: [0])
    eval_split: str = "test"
    recall_ns: list[int] = field(default_factory=lambda: [1, 5, 10])
    baseline: str = "none"  # every variant is compared with this one ...
    reference: str = "gp-d"  # ... and with this one (paired bootstrap over queries)
    bootstrap: int = 2000  # bootstrap replicates
    eval_batch_size: int = 32

    def validate(self) -> None:
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"variants: need at least one, with distinct names, got {names}")
        fams = {"base", *(f.name for f in self.families)}
        for v in self.variants:
            if v.family not in fams:
                raise ConfigError(f"variants: {v.name} names an unknown family {v.family!r} (known: {sorted(fams)})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: need at least one, distinct, got {self.seeds}")
        for v in self.variants:
            if v.seeds is not None and (not v.seeds or not set(v.seeds) <= set(self.seeds)):
                raise ConfigError(f"variants: {v.name}: seeds {v.seeds} must be a non-empty subset of {self.seeds}")
        if not self.recall_ns or 1 not in self.recall_ns or min(self.recall_ns) < 1:
            raise ConfigError(f"recall_ns: positive integers including 1, got {self.recall_ns}")
        if self.bootstrap < 100:
            raise ConfigError(f"bootstrap: at least 100 replicates, got {self.bootstrap}")


def load_experiment_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    from ..config import from_dict, load_yaml
    from .config import apply_override

    if not overrides:
        return load_yaml(path, ExperimentConfig)
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for item in overrides:
        apply_override(data, item)
    return from_dict(ExperimentConfig, data, where=Path(path).name)


def train_config(exp: ExperimentConfig, seed: int, family: str, variant: Variant | None = None) -> TrainConfig:
    """The training config of one (seed, family[, variant]): base + experiment + family + variant overrides."""
    fam = next((f.set for f in exp.families if f.name == family), [])
    sets = [*exp.set, *fam, *(variant.set if variant else []), f"seed={seed}", "progress=false"]
    cfg = load_train_config(exp.base, sets)
    if cfg.data.synthetic is not None:  # each seed its own synthetic set: independent queries
        root = f"{cfg.data.root}-s{seed}"
        cfg = load_train_config(exp.base, [*sets, f"data.synthetic.seed={seed}", f"data.root={root}"])
    return cfg


def is_synthetic(exp: ExperimentConfig) -> bool:
    """Whether the base config generates its data (every number then is synthetic)."""
    return train_config(exp, exp.seeds[0], "base").data.synthetic is not None


def check_variants(exp: ExperimentConfig) -> None:
    """Every (family, variant) training config loads: a typo fails before hours of training."""
    for v in exp.variants:
        train_config(exp, exp.seeds[0], v.family, v)


def stages_of(cfg: TrainConfig) -> list[str]:
    """Stage II alone when the method needs no partition (none, all), else partition and stage II."""
    return ["stage2"] if cfg.partition.method in ("none", "all") else ["partition", "stage2"]


# ---------------------------------------------------------------- evaluation (cached per model)


def first_positive_ranks(db: np.ndarray, qs: np.ndarray, positives, max_n: int) -> np.ndarray:
    """Per query the rank (1..max_n) of its first positive among the retrieved, 0 when none is in the top max_n."""
    from ..evaluate.recall import search

    _, pred = search(db, qs, max_n)
    ranks = np.zeros(len(qs), dtype=np.int32)
    for i, pos in enumerate(positives):
        hit = np.isin(pred[i], pos)
        if hit.any():
            ranks[i] = int(hit.argmax()) + 1
    return ranks


def evaluate_model(path: Path, name: str, build, kind: str, cfg: TrainConfig, exp, env, sha: str) -> dict:
    """Evaluate (or read the cached evaluation of) one model on the held-out split; return its row."""
    cached = _read_eval(path, sha)
    if cached is not None:
        return cached
    from ..data import load_dataset
    from .context import RunContext
    from .embed import embed

    started = time.perf_counter()
    test = load_dataset(cfg.data.root, cfg.data.format, split=exp.eval_split)
    keep = np.array([len(p) > 0 for p in test.positives])
    loader = RunContext(cfg=cfg, out=path.parent, env=env).loader(kind)
    model = build().to(env.device)
    kw = {"batch_size": exp.eval_batch_size, "workers": cfg.data.workers, "progress": False}
    db = embed(model, test.database, loader, env, desc=f"{name} db", **kw)
    qs = embed(model, [q for q, k in zip(test.queries, keep, strict=True) if k], loader, env, desc=name, **kw)
    positives = [p for p, k in zip(test.positives, keep, strict=True) if k]
    ranks = first_positive_ranks(db, qs, positives, max(exp.recall_ns))
    clusters = np.array([int(np.min(p)) for p in positives], dtype=np.int64)
    meta = {"model": name, "sha256": sha, "split": exp.eval_split, "seconds": round(time.perf_counter() - started, 2)}
    if env.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, ranks=ranks, clusters=clusters, meta=np.array(json.dumps(meta)))

        atomic_write(path, write)
    return _read_eval(path, sha) or {}


def _read_eval(path: Path, sha: str) -> dict | None:
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("sha256") != sha:
                return None
            return {"ranks": z["ranks"], "clusters": z["clusters"], **meta}
    except (OSError, ValueError, KeyError):
        return None


def _checkpoint_sha(path: Path) -> str:
    from ..weights import file_sha256

    return file_sha256(path)


# ---------------------------------------------------------------- the run


def run_experiment(exp: ExperimentConfig, out: str | Path, env, *, config_path: str | None = None) -> Path:
    """Run (or continue) the whole experiment under ``out``; return the path of summary.md.

    Variant-major: each variant (in config order) for every seed before the next variant, so a
    run stopped early has the first variants (put the central ones first) on every seed. A
    family's stage I (and its reference evaluations) runs when a seed first needs it.
    """
    from .experiment_report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "experiment.json", {"config": to_dict(exp), "config_path": config_path})
    synthetic = is_synthetic(exp)
    ready: set[tuple[int, str]] = set()
    for variant in exp.variants:
        for seed in variant.seeds if variant.seeds is not None else exp.seeds:
            if (seed, variant.family) not in ready:
                run_stage1(exp, out, env, seed, variant.family)
                ready.add((seed, variant.family))
                write_report(out, exp, synthetic)
            run_variant(exp, out, env, seed, variant)
            write_report(out, exp, synthetic)
    return write_report(out, exp, synthetic)


def run_stage1(exp: ExperimentConfig, out: Path, env, seed: int, family: str) -> None:
    """Stage I of one (seed, family) and the evaluation of its seg teacher, its RGB branch (and, for
    the base family, the untrained student)."""
    from ..checkpoint import build_model_from_checkpoint
    from .branches import architecture, build_branch
    from .distributed import seed_everything
    from .run import run_training

    seed_dir = out / f"seed{seed}"
    cfg = train_config(exp, seed, family)
    run_dir = seed_dir / family
    started = time.perf_counter()
    run_training(cfg, run_dir, env, stages=["stage1_seg", "stage1_rgb"], resume=True)
    log.info("seed %d, %s: stage I ready (%.0f s)", seed, family, time.perf_counter() - started)
    for ref, kind in (("seg-teacher", "seg"), ("stage1-rgb", "rgb")):
        ckpt = run_dir / f"stage1_{kind}" / records.BEST
        name = ref if family == "base" else f"{ref}-{family}"
        arch = architecture(kind, cfg)
        build = lambda c=ckpt, a=arch: build_model_from_checkpoint(c, expected_architecture=a)  # noqa: E731
        evaluate_model(seed_dir / "eval" / f"{name}.npz", name, build, kind, cfg, exp, env, _checkpoint_sha(ckpt))
    if family == "base":

        def untrained(c=cfg):
            seed_everything(c.seed + 3)  # as stage II's student before training
            return build_branch("rgb", c)

        evaluate_model(seed_dir / "eval" / "untrained.npz", "untrained", untrained, "rgb", cfg, exp, env, "")


def run_variant(exp: ExperimentConfig, out: Path, env, seed: int, variant: Variant) -> None:
    """The partition (if needed) and stage II of one (seed, variant) under --tag, then its evaluation."""
    from ..checkpoint import build_model_from_checkpoint
    from .branches import architecture
    from .run import run_training

    seed_dir = out / f"seed{seed}"
    cfg = train_config(exp, seed, variant.family, variant)
    run_dir = seed_dir / variant.family
    started = time.perf_counter()
    run_training(cfg, run_dir, env, stages=stages_of(cfg), resume=True, tag=variant.name)
    ckpt = run_dir / f"stage2-{variant.name}" / records.BEST
    arch = architecture("rgb", cfg)
    build = lambda: build_model_from_checkpoint(ckpt, expected_architecture=arch)  # noqa: E731
    path = seed_dir / "eval" / f"{variant.name}.npz"
    evaluate_model(path, variant.name, build, "rgb", cfg, exp, env, _checkpoint_sha(ckpt))
    log.info("seed %d, %s: done (%.0f s)", seed, variant.name, time.perf_counter() - started)
