"""Segmentation label maps on disk: one single-channel PNG of class ids per image.

The label-map root mirrors the image tree: the label map of ``<image_root>/a/b/x.jpg`` is
``<label_root>/a/b/x.png``. ``<label_root>/labelmaps.json`` names the taxonomy of the ids
(``ade20k``: official SceneParsing ids, 0 = unlabelled, 1..150; ``cityscapes``: train ids
0..18, 255 = ignore) and what produced them. A label map must have its image's size: a map
written at another resolution would silently misalign structure and appearance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_json
from ..errors import DatasetError
from ..log import get_logger

log = get_logger(__name__)

MANIFEST = "labelmaps.json"
FORMAT = "structvpr-labelmaps/1"


def read_label_map(path: str | Path) -> np.ndarray:
    """A label-map PNG as an (H, W) uint8 or uint16 array of class ids."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such label map")
    data = np.fromfile(path, dtype=np.uint8)
    label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if label is None:
        raise DatasetError(f"{path}: not a readable image")
    if label.ndim == 3:
        # A colour palette rendering is not a map of ids; a grey map saved as RGB is.
        if not all(np.array_equal(label[:, :, 0], label[:, :, c]) for c in range(1, label.shape[2])):
            raise DatasetError(f"{path}: colour image, expected a single-channel PNG of class ids")
        label = label[:, :, 0]
    if label.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: pixel type {label.dtype}, expected 8- or 16-bit class ids")
    return np.ascontiguousarray(label)


def encode_png(label_map: np.ndarray) -> bytes:
    """PNG bytes of a label map (8-bit when the ids allow it, else 16-bit)."""
    import cv2

    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"label map must be an H×W integer array, got {label_map.shape} {label_map.dtype}")
    if label_map.size and (label_map.min() < 0 or label_map.max() > 65535):
        raise ValueError("label map ids must lie in 0..65535")
    dtype = np.uint8 if not label_map.size or label_map.max() <= 255 else np.uint16
    ok, buf = cv2.imencode(".png", label_map.astype(dtype))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_label_map(path: str | Path, label_map: np.ndarray) -> None:
    """Write a label map as PNG, atomically (a crash never leaves a truncated map)."""
    atomic_write_bytes(path, encode_png(label_map))


def valid_ids(taxonomy: str) -> np.ndarray:
    """Every id a label map of ``taxonomy`` may hold: its classes and its ignore ids."""
    from ..errors import ConfigError
    from ..slme import load_taxonomy

    try:
        tax = load_taxonomy(taxonomy)
    except ConfigError as e:
        raise DatasetError(str(e)) from None
    return np.array(sorted(set(tax.class_ids) | set(tax.ignore_ids)), dtype=np.int64)


def check_ids(label_map: np.ndarray, taxonomy: str, where: str | Path) -> None:
    """``DatasetError`` if the map holds an id that ``taxonomy`` does not define."""
    present = np.unique(label_map)
    bad = np.setdiff1d(present, valid_ids(taxonomy))
    if bad.size:
        raise DatasetError(f"{where}: class id {int(bad[0])} is not in taxonomy {taxonomy!r}")


def write_manifest(label_root: str | Path, taxonomy: str, **info) -> None:
    atomic_write_json(Path(label_root) / MANIFEST, {"format": FORMAT, "taxonomy": taxonomy, **info})


def read_manifest(label_root: str | Path) -> dict | None:
    path = Path(label_root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("taxonomy"), str):
        raise DatasetError(f"{path}: manifest must be an object with a 'taxonomy' string")
    return data


def images_to_segment(image_root: str | Path, label_root: str | Path) -> list[Path]:
    """Every image under ``image_root`` (recursively, ``label_root`` left out when it lies inside)."""
    from ..images import list_images

    image_root = Path(image_root)
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: no such dataset directory")
    images = list_images(image_root, recursive=True, exclude=label_root)
    if not images:
        raise DatasetError(f"{image_root}: no images found")
    return images


def segment_images(
    images: list[Path],
    image_root: str | Path,
    label_root: str | Path,
    segmenter,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[int, int]:
    """Write the label map of each of ``images`` (under ``image_root``) to the mirrored path under ``label_root``.

    ``segmenter``: anything with ``name``, ``taxonomy`` and ``segment(bgr image) -> label map``
    (``segmentation.get_segmenter`` makes one; passing it in keeps this module free of models).
    Label maps already present are kept unless ``overwrite``, so an interrupted run resumes; a
    root written by another segmenter is refused. Returns (written, skipped).
    """
    from tqdm import tqdm

    from ..images import read_image

    image_root, label_root = Path(image_root), Path(label_root)
    manifest = read_manifest(label_root) if label_root.is_dir() else None
    if (
        manifest
        and not overwrite
        and (manifest.get("taxonomy") != segmenter.taxonomy or manifest.get("segmenter") != segmenter.name)
    ):
        raise DatasetError(
            f"{label_root / MANIFEST}: label maps here come from {manifest.get('segmenter')!r} "
            f"({manifest.get('taxonomy')}); use another --out or --overwrite"
        )
    write_manifest(label_root, segmenter.taxonomy, segmenter=segmenter.name, image_root=str(image_root.resolve()))
    written = skipped = 0
    for image_path in tqdm(images, desc="segment", unit="img", disable=not progress):
        target = (label_root / image_path.relative_to(image_root)).with_suffix(".png")
        if target.is_file() and not overwrite:
            skipped += 1
            continue
        write_label_map(target, segmenter.segment(read_image(image_path)))
        written += 1
    log.debug("%d label maps written, %d kept, under %s", written, skipped, label_root)
    return written, skipped


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image from its header (PIL reads only the header; OpenCV decodes as fallback)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except ImportError:
        from ..images import read_image

        h, w = read_image(path).shape[:2]
        return w, h
    except Exception as e:
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__})") from None


class LabelMapTree:
    """Label maps of the images under ``image_root``, stored under ``label_root``.

    ``taxonomy``: the taxonomy the caller (the training config) expects; it must agree with the
    root's manifest when there is one. ``check_ids`` also rejects ids outside the taxonomy.
    """

    def __init__(
        self, label_root: str | Path, image_root: str | Path, taxonomy: str | None = None, check_ids: bool = True
    ):
        self.label_root = Path(label_root)
        self.image_root = Path(image_root)
        if not self.label_root.is_dir():
            raise DatasetError(f"{self.label_root}: no such label-map directory")
        manifest = read_manifest(self.label_root)
        named = manifest["taxonomy"] if manifest else None
        if taxonomy and named and taxonomy != named:
            raise DatasetError(
                f"{self.label_root / MANIFEST}: label maps are {named!r}, the config expects {taxonomy!r}"
            )
        self.taxonomy = taxonomy or named
        if self.taxonomy is None:
            raise DatasetError(f"{self.label_root}: no {MANIFEST} naming the taxonomy, and none given")
        valid_ids(self.taxonomy)  # fail now on an unknown taxonomy name
        self.manifest = manifest or {}
        self.check_ids = check_ids

    def path_for(self, image: str | Path) -> Path:
        image = Path(image)
        try:
            rel = image.relative_to(self.image_root)
        except ValueError:
            raise DatasetError(f"{image}: not under the image root {self.image_root}") from None
        return (self.label_root / rel).with_suffix(".png")

    def read(self, image: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
        """The label map of ``image``; ``size`` = the image's (W, H) when known (read from its header otherwise)."""
        path = self.path_for(image)
        if not path.is_file():
            raise DatasetError(f"{path}: missing label map of {image}")
        label = read_label_map(path)
        w, h = size if size is not None else image_size(Path(image))
        if label.shape != (h, w):
            raise DatasetError(f"{path}: label map is {label.shape[1]}×{label.shape[0]}, its image is {w}×{h}")
        if self.check_ids:
            check_ids(label, self.taxonomy, path)
        return label

    def check(self, images: list[Path]) -> None:
        """Verify every image has a label map of its size (headers only, ids not read)."""
        for image in images:
            path = self.path_for(image)
            if not path.is_file():
                raise DatasetError(f"{path}: missing label map of {image}")
            if image_size(path) != image_size(Path(image)):
                raise DatasetError(f"{path}: size {image_size(path)} differs from its image {image_size(Path(image))}")
