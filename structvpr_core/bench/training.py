"""Training step time on the CPU: stage I (RGB branch, triplet loss) and stage II (student + T +
φ-weighted distillation with the teacher's descriptors cached, so the teacher does not run).

One step = forward of a batch of tuples (q, p, n) through the trained network, the loss of
``training.losses_kd.tuple_loss``, backward and an Adam update (the training config's default
optimiser), with the modules of ``training.stage`` (``TrainNet``). Inputs are real Corridor
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
    from ..preprocess import normalise_nchw
    from ..export import default_eval_dataset
    from ..images import list_images, read_image, resize_image

    n = batch * tuple_len
    root = default_eval_dataset()
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

    from ..losses import Projector
    from ..models import build_rgb_branch, build_seg_branch
    from ..training.losses_kd import tuple_loss
    from ..training.stage import TrainNet
    from .timing import summarise

    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(0)
    batch, negatives = int(cfg["batch"]), int(cfg["negatives"])
    w, h = cfg["image_size"]
    t = 2 + negatives
    x_np, source = _inputs(batch, (w, h), t)
    x = torch.from_numpy(x_np)
    slme = torch.rand(batch * t, 6, h, w)                     # synthetic SLME-shaped input for the seg branch
    teacher = torch.nn.functional.normalize(torch.randn(batch, t, 480), dim=2)   # synthetic cached teacher
    phi = torch.ones(batch)
    margin = 0.1

    nets = {
        "stage1": TrainNet(build_rgb_branch(pretrained=True)),
        "stage2": TrainNet(build_rgb_branch(pretrained=True), Projector(448, 480)),
        "stage1_seg": TrainNet(build_seg_branch(6)),
    }
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-5) for k, n in nets.items()}

    def step(name: str) -> None:
        net, opt = nets[name], opts[name]
        net.train()
        out = net(slme if name == "stage1_seg" else x)
        student = out[0].view(batch, t, -1)
        if name == "stage2":
            loss, _, _ = tuple_loss(student, margin, out[1].view(batch, t, -1), teacher, phi)
        else:
            loss, _, _ = tuple_loss(student, margin)
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
            step(name)   # untimed lead-in: the previous stage's buffers are freed, this one's faulted in
            for _ in range(min(block, repeats - len(times[name]))):
                started = time.perf_counter()
                step(name)
                times[name].append(time.perf_counter() - started)
    stats = {k: summarise(v) for k, v in times.items()}
    return {
        "stage1_step_ms": stats["stage1"]["p50_ms"], "stage2_step_ms": stats["stage2"]["p50_ms"],
        "stage1_seg_step_ms": stats["stage1_seg"]["p50_ms"],
        "stage2_over_stage1": stats["stage2"]["p50_ms"] / stats["stage1"]["p50_ms"],
        "stats": stats, "batch_tuples": batch, "images_per_step": batch * t, "negatives_per_query": negatives,
        "image_size": [w, h], "optimizer": "adam", "threads": int(cfg["threads"]), "inputs": source,
        "teacher_descriptors": "cached (synthetic unit vectors: values do not change the cost)",
    }
