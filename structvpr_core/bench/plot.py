"""One PNG summarising a bench result: extraction, search, node latency, training steps."""

from __future__ import annotations

import os
from pathlib import Path


def plot(result: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..atomic import atomic_write

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    machine = result.get("machine", {})
    fig.suptitle(
        f"structvpr bench{' --quick' if result.get('quick') else ''}: {machine.get('cpu', '?')}, "
        f"{result.get('threads', {}).get('torch', '?')} threads",
        fontsize=11,
    )

    ax = axes[0][0]
    sizes = [s for s, v in result.get("extraction", {}).items() if isinstance(v, dict) and "ratios" in v]
    variants = result.get("extraction", {}).get("variants", [])
    width = 0.8 / max(1, len(sizes))
    for i, size in enumerate(sizes):
        p50 = [result["extraction"][size][v].get("p50_ms", 0.0) for v in variants]  # 0: skipped here
        ax.bar(np.arange(len(variants)) + i * width, p50, width, label=size)
    ticks = np.arange(len(variants)) + width * (len(sizes) - 1) / 2
    ax.set_xticks(ticks, variants, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("ms per image (p50), batch 1")
    ax.set_title("extraction")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    for kind, per_size in (result.get("search") or {}).items():
        if not isinstance(per_size, dict):
            continue
        pts = sorted(
            (int(n), e["p50_ms"], e["top1_agreement"])
            for n, e in per_size.items()
            if isinstance(e, dict) and "p50_ms" in e
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kind)
            for n, ms, agr in pts:
                ax.annotate(f"{agr:.2f}", (n, ms), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.axhline(5.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("map size (SYNTHETIC 448-d descriptors)")
    ax.set_ylabel("ms per query (p50); labels: top-1 agreement")
    ax.set_title("map search")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    rates = [
        (k, v)
        for k, v in (result.get("node") or {}).items()
        if k.endswith("hz") and isinstance(v, dict) and "e2e_p50_ms" in v
    ]
    if rates:
        x = np.arange(len(rates))
        ax.bar(x - 0.2, [v["e2e_p50_ms"] for _, v in rates], 0.4, label="e2e p50")
        ax.bar(x + 0.2, [v["e2e_p95_ms"] for _, v in rates], 0.4, label="e2e p95")
        ax.set_xticks(x, [f"{k}\n{v['drops']}/{v['published']} dropped" for k, v in rates], fontsize=8)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, str((result.get("node") or {}).get("skipped", "no data"))[:80], ha="center", wrap=True)
    ax.set_ylabel("ms, image published -> candidates received")
    ax.set_title("ROS node end to end")

    ax = axes[1][1]
    tr = result.get("training") or {}
    keys = [k for k in ("stage1_step_ms", "stage2_step_ms", "stage1_seg_step_ms") if k in tr]
    if keys:
        ax.bar(range(len(keys)), [tr[k] for k in keys])
        ax.set_xticks(range(len(keys)), [k.replace("_step_ms", "") for k in keys])
        ax.set_title(
            f"training step, {tr.get('images_per_step')} images at {'x'.join(str(v) for v in tr.get('image_size', []))}"
        )
    else:
        ax.set_title("training step")
    ax.set_ylabel("ms per step (p50)")

    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
