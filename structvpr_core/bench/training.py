"""Training step time on the CPU: stage I (RGB branch, triplet loss) and stage II (student + T +
φ-weighted distillation with the teacher's descriptors cached, so the teacher does not run).

One step = forward of a batch of tuples (q, p, n) through the trained network and the loss, as
the training loop computes them (``training.stage.TrainNet`` and ``tuple_losses``; stage II with
``training.distill_structvpr.StructVPRDistillation``), backward and an Adam update (the training
config's default optimiser). Inputs are real Corridor
frames when present (else synthetic noise, labelled); the cached teacher descriptors are
synthetic unit vectors: their values do not change the cost. Stage I of the seg branch
(MobileNet-L on 6-channel SLME input) is timed too, for completeness. The stages take turns in
blocks of ``block`` timed steps, each block after one untimed step: switching networks frees
one's activation memory and faults in the other's, which measured ~1 s extra on the first step
at 640×480 (it made stage I look slower than stage II when steps alternated one by one).
"""

from __future__ import annotations

import time

import numpy as np


def _inputs(batch: int, size: tuple[int, int], tuple_len: int) -> tuple[np.ndarray, str]:
    from ..images import list_images, read_image, resize_image
    from ..paths import corridor_if_present
    from ..preprocess import normalise_nchw

    n = batch * tuple_len
    root = corridor_if_present()
    if root is not None:
        paths = list_images(root / "ref")[:n]
        rgb = np.stack([resize_image(read_image(p), size)[:, :, ::-1] for p in paths])
        source = f"{root}/ref (real)"
    else:
        rgb = np.random.default_rng(0).integers(0, 256, (n, size[1], size[0], 3), dtype=np.uint8)
        source = "synthetic noise images"
    return normalise_nchw(np.ascontiguousarray(rgb)), source


def run(cfg: dict) -> dict:
    import torch

    from ..models import build_rgb_branch, build_seg_branch
    from ..training.distill_structvpr import StructVPRDistillation
    from ..training.distillation import TrainBatch
    from ..training.stage import TrainNet, tuple_losses
    from .timing import summarise

    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(0)
    batch, negatives = int(cfg["batch"]), int(cfg["negatives"])
    w, h = cfg["image_size"]
    t = 2 + negatives
    x_np, source = _inputs(batch, (w, h), t)
    images = torch.from_numpy(x_np).view(batch, t, 3, h, w)
    slme = torch.rand(batch, t, 6, h, w)  # synthetic SLME-shaped input for the seg branch
    # Tuple b is [query b, database images b·(t-1) … b·(t-1)+t-2]: each image has its cached teacher descriptor.
    rows = np.array([[b, *range(b * (t - 1), (b + 1) * (t - 1))] for b in range(batch)], dtype=np.int64)
    margin = 0.1

    def unit(n: int) -> np.ndarray:
        return torch.nn.functional.normalize(torch.randn(n, 480), dim=1).numpy()

    student = build_rgb_branch(pretrained=True)
    structvpr = StructVPRDistillation(student, cfg=None)
    structvpr.use_teacher(unit(batch * (t - 1)), unit(batch), lambda q, p: np.ones(len(q), dtype=np.float32))
    nets = {
        "stage1": TrainNet(build_rgb_branch(pretrained=True)),
        "stage2": TrainNet(student, structvpr),
        "stage1_seg": TrainNet(build_seg_branch(6)),
    }
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-5) for k, n in nets.items()}
    batches = {
        "stage1": TrainBatch(images, rows),
        "stage2": TrainBatch(images, rows),
        "stage1_seg": TrainBatch(slme, rows),
    }

    def step(name: str) -> None:
        net, opt = nets[name], opts[name]
        net.train()
        loss, _, _, _ = tuple_losses(net, net.distillation, batches[name], margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {k: [] for k in nets}
    for _ in range(int(cfg["warmup"])):
        for name in nets:
            step(name)
    repeats, block = int(cfg["repeats"]), int(cfg.get("block", 2))
    while min(len(t) for t in times.values()) < repeats:
        for name in nets:
            step(name)  # untimed lead-in: the previous stage's buffers are freed, this one's faulted in
            for _ in range(min(block, repeats - len(times[name]))):
                started = time.perf_counter()
                step(name)
                times[name].append(time.perf_counter() - started)
    stats = {k: summarise(v) for k, v in times.items()}
    return {
        "stage1_step_ms": stats["stage1"]["p50_ms"],
        "stage2_step_ms": stats["stage2"]["p50_ms"],
        "stage1_seg_step_ms": stats["stage1_seg"]["p50_ms"],
        "stage2_over_stage1": stats["stage2"]["p50_ms"] / stats["stage1"]["p50_ms"],
        "stats": stats,
        "batch_tuples": batch,
        "images_per_step": batch * t,
        "negatives_per_query": negatives,
        "image_size": [w, h],
        "optimizer": "adam",
        "threads": int(cfg["threads"]),
        "inputs": source,
        "teacher_descriptors": "cached (synthetic unit vectors: values do not change the cost)",
    }
