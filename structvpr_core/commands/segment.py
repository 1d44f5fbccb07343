"""``structvpr segment``: write one label-map PNG per image of a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "segment"
HELP = "segment every image of a dataset into label-map PNGs (class ids) for training the seg branch"
DESCRIPTION = """\
Run a semantic segmenter over every image under DIR (recursively) and write its label map, a
single-channel PNG of class ids of the image's size, to SEGROOT at the same relative path
(x/y/img.jpg -> SEGROOT/x/y/img.png). SEGROOT/labelmaps.json names the taxonomy (ade20k or
cityscapes, from the model) and the segmenter. Existing label maps are kept, so an interrupted
run resumes where it stopped (--overwrite redoes them).

Segmenters (optional extra: pip install transformers): segformer (nvidia/segformer-b0-finetuned-
ade-512-512), segformer-b0..b5-ade, segformer-b0..b5-cityscapes, segformer:<hub id or directory>.
Weights are never downloaded: a hub id must already be in the local Hugging Face cache.

Example:
  structvpr segment --dataset data/pitts30k --segmenter segformer-b2-ade --out data/pitts30k-labels
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="image tree to segment")
    p.add_argument("--segmenter", default="segformer", metavar="NAME", help="segmenter name (default: segformer)")
    p.add_argument("--out", type=Path, required=True, metavar="SEGROOT", help="label-map root (mirrors DIR)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="recompute label maps that already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.labelmaps import images_to_segment, segment_images
    from ..segmentation import get_segmenter

    images = images_to_segment(args.dataset, args.out)
    segmenter = get_segmenter(args.segmenter, device=args.device)  # after the cheap checks: loading weights is slow
    written, skipped = segment_images(
        images, args.dataset, args.out, segmenter, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(f"{written} label maps written, {skipped} already present, under {args.out} ({segmenter.taxonomy})")
    return 0
