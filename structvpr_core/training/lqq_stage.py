"""The lqq stage: a low-quality-query student distilled from a frozen teacher, from any unlabelled images.

Reads top to bottom: the images of the configured folders and bag topics (``image_sources``),
a held-out split of them for validation (never the test queries: only the configured sources
are read); the teacher's checkpoint (``lqq.teacher``) loaded twice, as the student to train and
as the frozen teacher of the ``lqq`` distillation; then the shared epoch loop with a batch
source that mines nothing (``batches.ImageBatches``) and a validation of the distillation's
loss on the held-out images (``validation.DistillationValidation``; ``best.pt`` has the lowest
``val_mse``). The checkpoints name the teacher's fingerprint as ``query_encoder_for``.

``RUN/lqq[-TAG]/split.json`` lists the training and validation images.
"""

from __future__ import annotations

from ..atomic import atomic_write_json
from ..config import to_dict
from ..log import get_logger
from .batches import ImageBatches
from .distill_lqq import load_rgb_branch, teacher_source
from .distillation import build_distillation
from .distributed import seed_everything
from .image_sources import collect_images, holdout_split
from .stage import StageSetup, run_stage
from .validation import DistillationValidation

log = get_logger(__name__)

STAGE = "lqq"
FRAMES_DIR = "lqq_frames"


def train_lqq(ctx) -> dict:
    """Train the low-quality-query student; ``ctx`` is the run's ``RunContext``."""
    cfg, lqq, env = ctx.cfg, ctx.cfg.lqq, ctx.env
    seed_everything(cfg.seed + 5)
    out = ctx.stage_dir(STAGE)
    paths = collect_images(lqq, ctx.out / FRAMES_DIR, env, progress=cfg.progress)
    train_idx, val_idx = holdout_split(len(paths), lqq.val_fraction, lqq.val_block, cfg.seed)
    train_paths, val_paths = [paths[i] for i in train_idx], [paths[i] for i in val_idx]

    student = load_rgb_branch(teacher_source(lqq.teacher, ctx))  # the teacher's architecture and weights
    distillation = build_distillation(STAGE, student, cfg)  # freezes the student's early stages
    distillation.prepare(ctx)  # the frozen teacher
    source, fingerprint = distillation.teacher_source, distillation.teacher_fingerprint
    teacher = {"source": str(source or lqq.teacher), "fingerprint": fingerprint}
    _check_teacher_size(source, cfg.data.image_size)
    validation = None
    if val_paths:
        validation = DistillationValidation(
            val_paths,
            parts=("mse", "ickd"),
            select="mse",
            views=distillation.validation_views(),
            reference=distillation.teacher,
            batch_size=lqq.batch_size,
        )
    if env.is_main:
        log.info(
            "lqq: %d training and %d validation images; teacher %s; degradations %s",
            len(train_paths),
            len(val_paths),
            teacher["source"],
            " | ".join(lqq.degradations),
        )
        out.mkdir(parents=True, exist_ok=True)
        split = {"train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths]}
        atomic_write_json(out / "split.json", split)
    setup = StageSetup(
        name=STAGE,
        index=5,
        out_dir=out,
        stage_cfg=lqq.stage_config(),
        branch=student,
        loader=ctx.loader("rgb"),
        distillation=distillation,
        source=ImageBatches(train_paths, lqq.images_per_epoch),
        validation=validation,
        query_encoder_for=distillation.teacher_fingerprint,
        checkpoint_config={
            "stage": STAGE,
            "image_size": list(cfg.data.image_size),
            "teacher": teacher,
            "degradations": list(lqq.degradations),
            "train": to_dict(cfg),
        },
    )
    return run_stage(setup, cfg, env, ctx.budget)


def _check_teacher_size(source, image_size) -> None:
    """Warn when a teacher checkpoint was trained at another input size than the one configured."""
    if source is None:
        return
    from ..checkpoint import load_checkpoint

    trained = (load_checkpoint(source).get("config") or {}).get("image_size")
    if trained is not None and list(trained) != list(image_size):
        log.warning(
            "lqq: the teacher %s was trained at %s, the student at data.image_size %s: "
            "it will query maps the teacher builds at %s",
            source,
            trained,
            list(image_size),
            list(image_size),
        )
