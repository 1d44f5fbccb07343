"""The experiment's report from its cached evaluations: results.csv, summary.md and one figure.

``write_report(out, exp)`` reads ``OUT/seed<S>/eval/<model>.npz`` (written by ``experiment``)
for every seed and model that exists, so it summarises a finished or a partial experiment:

- ``results.csv``: one row per (seed, model): queries, Recall@N, the training seconds of its
  stage, the per-query file the bootstrap reads;
- ``summary.md``: per model the mean ± 95 % CI of Recall@1/5 across seeds (Student t) and the
  pooled recall over every seed's queries ± its binomial 95 % half-width; then the paired
  bootstrap (stratified by seed, clustered by place) of each variant against the baseline and
  against the reference variant; every number labelled synthetic when the data are;
- ``recall.png``: Recall@1 per model, pooled with its 95 % interval, and each seed's value.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, atomic_write_text
from .stats import binomial_halfwidth, mean_ci, paired_bootstrap

FIGURE = "recall.png"


def model_order(exp) -> list[str]:
    """Reference models first (untrained, seg teacher, stage-I RGB of each family), then the variants."""
    fams = [f.name for f in exp.families if any(v.family == f.name for v in exp.variants)]
    refs = ["untrained", "seg-teacher", "stage1-rgb"]
    refs += [f"{r}-{f}" for f in fams for r in ("seg-teacher", "stage1-rgb")]
    return refs + [v.name for v in exp.variants]


def planned(exp, model: str) -> list[int]:
    """The seeds a model is planned for: a variant's ``seeds`` (all when unset); a family's stage-I
    models on the seeds of its variants."""
    every = list(exp.seeds)
    for v in exp.variants:
        if v.name == model:
            return list(v.seeds) if v.seeds is not None else every
    fam = next((f.name for f in exp.families if model.endswith(f"-{f.name}")), None)
    if fam is None:
        return every
    seeds = set()
    for v in exp.variants:
        if v.family == fam:
            seeds |= set(v.seeds if v.seeds is not None else every)
    return [s for s in every if s in seeds]


def load_evaluations(out: Path, exp) -> dict[tuple[int, str], dict]:
    """{(seed, model): {"ranks", "clusters", "seconds", ...}} for every cached evaluation present."""
    found = {}
    for seed in exp.seeds:
        for name in model_order(exp):
            path = out / f"seed{seed}" / "eval" / f"{name}.npz"
            if not path.is_file():
                continue
            with np.load(path) as z:
                found[(seed, name)] = {
                    "ranks": z["ranks"],
                    "clusters": z["clusters"],
                    "path": path,
                    **json.loads(str(z["meta"])),
                }
    return found


def hits(ev: dict, n: int) -> np.ndarray:
    r = ev["ranks"]
    return ((r >= 1) & (r <= n)).astype(np.float64)


def _train_seconds(out: Path, exp, seed: int, name: str) -> float | None:
    variant = next((v for v in exp.variants if v.name == name), None)
    if variant is None:
        return None
    run = out / f"seed{seed}" / variant.family
    total = 0.0
    for stage in (f"partition-{name}", f"stage2-{name}"):
        done = run / stage / "done.json"
        if done.is_file():
            total += float(json.loads(done.read_text(encoding="utf-8")).get("seconds", 0.0))
    return round(total, 1)


def results_rows(out: Path, exp, evals: dict) -> list[dict]:
    rows = []
    for (seed, name), ev in sorted(evals.items(), key=lambda kv: (kv[0][0], model_order(exp).index(kv[0][1]))):
        row = {"seed": seed, "model": name, "queries": int(ev["ranks"].size)}
        row.update({f"R@{n}": round(float(hits(ev, n).mean()), 5) for n in exp.recall_ns})
        row["train_seconds"] = _train_seconds(out, exp, seed, name)
        row["hits_file"] = str(ev["path"].relative_to(out))
        rows.append(row)
    return rows


def _pooled(evals, seeds, name, n):
    h = np.concatenate([hits(evals[(s, name)], n) for s in seeds])
    return float(h.mean()), binomial_halfwidth(float(h.mean()), h.size), h.size


def compare(evals: dict, exp, a: str, b: str, n: int) -> dict | None:
    """Paired bootstrap of model a − model b on the seeds where both were evaluated."""
    seeds = [s for s in exp.seeds if (s, a) in evals and (s, b) in evals]
    if not seeds or a == b:
        return None
    ha = np.concatenate([hits(evals[(s, a)], n) for s in seeds])
    hb = np.concatenate([hits(evals[(s, b)], n) for s in seeds])
    strata = np.concatenate([np.full(evals[(s, a)]["ranks"].size, s) for s in seeds])
    clusters = np.concatenate([evals[(s, a)]["clusters"] for s in seeds])
    result = paired_bootstrap(ha, hb, strata, clusters, n_boot=exp.bootstrap, seed=0)
    # Across seeds: the per-seed differences (each includes both runs' training noise), Student t.
    per_seed = [hits(evals[(s, a)], n).mean() - hits(evals[(s, b)], n).mean() for s in seeds]
    seed_mean, seed_half = mean_ci(per_seed)
    return {**result, "seeds": seeds, "seed_mean": seed_mean, "seed_half": seed_half}


def _seed_text(c: dict) -> str:
    if len(c["seeds"]) < 2:
        return "—"
    lo, hi = c["seed_mean"] - c["seed_half"], c["seed_mean"] + c["seed_half"]
    return f"{100 * c['seed_mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _p_text(p: float, n_boot: int) -> str:
    """The p-value, or its resolution limit when no replicate crossed 0."""
    return f"< {2 / n_boot:.4f}" if p <= 1.0 / n_boot else f"{p:.3f}"


def summary_markdown(out: Path, exp, evals: dict, synthetic: bool) -> str:
    tag = "SYNTHETIC " if synthetic else ""
    meta = out / "experiment.json"
    config_path = json.loads(meta.read_text(encoding="utf-8")).get("config_path") if meta.is_file() else None
    lines = [
        f"# Experiment summary ({tag.strip() or 'real data'})",
        "",
        f"Config: `{config_path or '?'}`; "
        f"seeds {exp.seeds}; held-out split `{exp.eval_split}`. "
        + ("Every number here is **synthetic** (generated data). " if synthetic else ""),
        "",
        "Recall in %. *Across seeds*: mean ± Student-t 95 % half-width of the per-seed recalls. "
        "*Pooled*: over every evaluated seed's queries ± the binomial 95 % half-width "
        "(queries of one place are correlated, so the pooled interval is optimistic; the paired "
        "bootstrap below resamples whole places).",
        "",
        f"| model | seeds | queries (pooled) | {tag}R@1 across seeds | {tag}R@1 pooled "
        f"| {tag}R@5 across seeds | {tag}R@5 pooled |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in model_order(exp):
        seeds = [s for s in exp.seeds if (s, name) in evals]
        if not seeds:
            continue
        cells = []
        for n in (1, 5):
            m, h = mean_ci([hits(evals[(s, name)], n).mean() for s in seeds])
            p, ph, size = _pooled(evals, seeds, name, n)
            across = f"{100 * m:.1f} ± {100 * h:.1f}" if len(seeds) > 1 else f"{100 * m:.1f} (1 seed)"
            cells += [across, f"{100 * p:.1f} ± {100 * ph:.1f}"]
        lines.append(f"| {name} | {len(seeds)} | {size} | " + " | ".join(cells) + " |")
    for n in (1, 5):
        lines += [
            "",
            f"## Paired bootstrap, {tag}Recall@{n} (percentage points; {exp.bootstrap} replicates, "
            "stratified by seed, clustered by place)",
            "",
            "The bootstrap resamples the test queries of one training run per seed; the last column "
            "is the mean per-seed difference with its Student-t 95 % CI, which also carries the "
            "run-to-run training noise.",
            "",
            "| variant | vs | difference | 95 % CI | p | CI excludes 0 | seeds | across seeds (paired t) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in exp.variants:
            for other in (exp.baseline, exp.reference):
                if v.name == exp.baseline and other == exp.reference:
                    continue  # the mirror of "reference vs baseline"
                c = compare(evals, exp, v.name, other, n)
                if c is None:
                    continue
                lines.append(
                    f"| {v.name} | {other} | {100 * c['diff']:+.1f} | [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}] "
                    f"| {_p_text(c['p'], exp.bootstrap)} | {'yes' if c['excludes_zero'] else 'no'} "
                    f"| {len(c['seeds'])} | {_seed_text(c)} |"
                )
    missing = [
        f"seed {s} {m}" for s in exp.seeds for m in model_order(exp) if (s, m) not in evals and s in planned(exp, m)
    ]
    lines += ["", "Missing (not yet run): " + (", ".join(missing) if missing else "none") + "."]
    return "\n".join(lines) + "\n"


def figure(path: Path, exp, evals: dict, synthetic: bool) -> None:
    from matplotlib.figure import Figure

    names = [m for m in model_order(exp) if any((s, m) in evals for s in exp.seeds)]
    fig = Figure(figsize=(max(6, 0.8 * len(names) + 2), 4), dpi=110)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        seeds = [s for s in exp.seeds if (s, name) in evals]
        p, h, _ = _pooled(evals, seeds, name, 1)
        colour = "tab:grey" if i < len(names) - len(exp.variants) else "tab:blue"
        ax.errorbar(i, 100 * p, yerr=100 * h, fmt="o", color=colour, capsize=4)
        per_seed = [100 * hits(evals[(s, name)], 1).mean() for s in seeds]
        ax.plot([i + 0.15] * len(per_seed), per_seed, "x", color="black", alpha=0.6, markersize=4)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(("synthetic " if synthetic else "") + "Recall@1 (%)")
    ax.set_title(
        f"{'SYNTHETIC: ' if synthetic else ''}Recall@1 on held-out {exp.eval_split}, pooled over seeds "
        "(95 % binomial CI); x = each seed",
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def write_report(out: str | Path, exp, synthetic: bool) -> Path:
    """Rewrite results.csv, summary.md and the figure from the evaluations present; return summary.md's path.

    ``synthetic``: the data are generated (every number is labelled synthetic).
    """
    out = Path(out)
    evals = load_evaluations(out, exp)
    rows = results_rows(out, exp, evals)
    buf = io.StringIO()
    columns = ["seed", "model", "queries", *(f"R@{n}" for n in exp.recall_ns), "train_seconds", "hits_file"]
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    summary = out / "summary.md"
    atomic_write_text(summary, summary_markdown(out, exp, evals, synthetic))
    if evals:
        figure(out / FIGURE, exp, evals, synthetic)
    return summary
