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
    from tqdm import tqdm

    from ..data.labelmaps import read_manifest, write_label_map, write_manifest
    from ..errors import DatasetError
    from ..images import list_images, read_image
    from ..segmentation import get_segmenter

    if not args.dataset.is_dir():
        raise DatasetError(f"{args.dataset}: no such dataset directory")
    images = list_images(args.dataset, recursive=True, exclude=args.out)
    if not images:
        raise DatasetError(f"{args.dataset}: no images found")
    segmenter = get_segmenter(args.segmenter, device=args.device)
    manifest = read_manifest(args.out) if args.out.is_dir() else None
    if manifest and not args.overwrite and (manifest.get("taxonomy") != segmenter.taxonomy
                                            or manifest.get("segmenter") != segmenter.name):
        raise DatasetError(f"{args.out / 'labelmaps.json'}: label maps here come from {manifest.get('segmenter')!r} "
                           f"({manifest.get('taxonomy')}); use another --out or --overwrite")
    write_manifest(args.out, segmenter.taxonomy, segmenter=segmenter.name, image_root=str(args.dataset.resolve()))
    done = skipped = 0
    for image_path in tqdm(images, desc="segment", unit="img", disable=args.no_progress):
        target = (args.out / image_path.relative_to(args.dataset)).with_suffix(".png")
        if target.is_file() and not args.overwrite:
            skipped += 1
            continue
        write_label_map(target, segmenter.segment(read_image(image_path)))
        done += 1
    print(f"{done} label maps written, {skipped} already present, under {args.out} ({segmenter.taxonomy})")
    return 0
