"""A picture of what a StructVPR++ student takes for each label: its soft masks as a coloured overlay.

The student's label head gives, for free in the same forward pass, C soft masks at stride 16
(``Extractor.masks``); no segmentation network runs. Each label has a colour (``LABEL_COLOURS``,
the README's legend); a pixel's overlay colour is the mask-weighted mix of the label colours
(bilinearly upsampled to the image), blended over the image with ``alpha``; a legend strip
under the picture names the labels with their presence (mean mask value) in this image.

``render_overlay`` is pure numpy/OpenCV (the node's debug topic uses it); ``write_mask_overlays``
is the ``structvpr masks`` pipeline (images → PNGs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .log import get_logger

log = get_logger(__name__)

# RGB colours per label cluster, in the SLME channel order (slme.channel_names).
LABEL_COLOURS = {
    "vegetation": (40, 170, 40),  # green
    "dynamic": (220, 30, 30),  # red
    "sky": (60, 140, 230),  # blue
    "ground": (150, 60, 170),  # purple
    "buildings": (245, 150, 30),  # orange
    "other": (160, 160, 160),  # grey
    "sky_ground": (60, 140, 230),  # blue (C = 3)
    "static": (245, 150, 30),  # orange (C = 3)
}
LEGEND_ROW, LEGEND_CELL = 15, 100  # legend row height and smallest cell width (pixels)

default_conf = {
    "image_size": (640, 480),  # W, H: the network input; the overlay has this size
    "alpha": 0.5,  # weight of the colour over the image
    "legend": True,
    "device": "auto",
    "backend": "auto",
}


def label_names(clusters: int) -> list[str]:
    """The names of the C label clusters (C = 6 or 3), in mask channel order."""
    from .slme import SLMEConfig, channel_names

    if clusters not in (3, 6):
        raise ConfigError(f"label masks: expected 3 or 6 clusters, got {clusters}")
    return channel_names(SLMEConfig(clusters=clusters))


def render_overlay(bgr: np.ndarray, masks: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
    """The overlay (H[+legend], W, 3) uint8 BGR of soft masks (C, h, w) over the image ``bgr`` (H, W, 3) uint8."""
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: expected a value in [0, 1], got {alpha}")
    masks = np.asarray(masks, dtype=np.float32)
    names = label_names(masks.shape[0])
    h, w = bgr.shape[:2]
    colours_bgr = np.array([LABEL_COLOURS[n][::-1] for n in names], dtype=np.float32)  # (C, 3)
    up = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in masks])  # (C, H, W)
    colour = np.einsum("chw,ck->hwk", up, colours_bgr)
    out = np.clip((1.0 - alpha) * bgr.astype(np.float32) + alpha * colour, 0, 255).astype(np.uint8)
    if not legend:
        return out
    return np.concatenate([out, _legend(names, masks.mean(axis=(1, 2)), w)], axis=0)


def _legend(names: list[str], presence: np.ndarray, width: int) -> np.ndarray:
    """White strip(s) with a colour swatch, the name and the presence of each label (rows of >= 100 px cells)."""
    import cv2

    per_row = max(1, min(len(names), width // LEGEND_CELL))
    rows = -(-len(names) // per_row)
    strip = np.full((rows * LEGEND_ROW, width, 3), 255, np.uint8)
    cell = width // per_row
    for i, (name, p) in enumerate(zip(names, presence, strict=True)):
        x, y = (i % per_row) * cell, (i // per_row) * LEGEND_ROW
        cv2.rectangle(strip, (x + 2, y + 3), (x + 11, y + 12), LABEL_COLOURS[name][::-1], thickness=-1)
        text = f"{name} {round(100 * float(p))}%"
        cv2.putText(strip, text, (x + 14, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def write_mask_overlays(
    paths: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    conf: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Write ``<out_dir>/<image stem>_masks.png`` for every image; returns per image its output and presence.

    ``checkpoint``: a StructVPR++ student (``.pt``, or its ``.onnx`` export, which has the masks output).
    """
    from tqdm import tqdm

    from .atomic import atomic_write_bytes
    from .config import merge_conf
    from .extractor import Extractor
    from .images import read_image

    conf = merge_conf(default_conf, conf, "masks")
    extractor = Extractor(
        checkpoint, device=conf["device"], image_size=tuple(conf["image_size"]), backend=conf["backend"]
    )
    if not extractor.has_masks:
        raise ConfigError(
            f"{checkpoint}: {extractor.fingerprint['architecture']} has no label masks; "
            "masks need a StructVPR++ student (model.label_features in training)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for path in tqdm([Path(p) for p in paths], desc="masks", unit="img", disable=not progress):
        image = extractor.prepare(read_image(path), name=str(path))
        masks = extractor.masks([image])[0]
        picture = render_overlay(image, masks, alpha=conf["alpha"], legend=conf["legend"])
        name = _unique(f"{path.stem}_masks.png", used)
        target = out_dir / name
        atomic_write_bytes(target, _png(picture))
        presence = dict(zip(label_names(len(masks)), (float(v) for v in masks.mean(axis=(1, 2))), strict=True))
        results.append({"image": str(path), "overlay": str(target), "presence": presence})
        log.debug("%s -> %s %s", path, target, presence)
    return results


def _unique(name: str, used: set) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``… before the suffix when two images share a stem."""
    stem, n, candidate = name[: -len(".png")], 1, name
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}.png"
    used.add(candidate)
    return candidate


def _png(bgr: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
