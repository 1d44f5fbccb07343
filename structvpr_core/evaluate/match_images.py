"""One picture per query beside its top matches, to see at a glance where a model goes wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def _thumbnail(path: Path, height: int) -> np.ndarray:
    import cv2

    from ..images import read_image

    image = read_image(path)
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def save_match_images(
    dataset, predictions: np.ndarray, scores: np.ndarray, out_dir: str | Path, height: int = 160, progress: bool = True
) -> None:
    """One JPEG per query: the query (blue frame) beside its top matches, green if correct, red if wrong."""
    import cv2
    from tqdm import tqdm

    from ..atomic import atomic_write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pad = 6
    for i in tqdm(range(dataset.num_queries), desc="match images", unit="query", disable=not progress):
        tiles = [
            cv2.copyMakeBorder(
                _thumbnail(dataset.queries[i], height), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(200, 120, 0)
            )
        ]
        ok_top1 = False
        for rank, (j, s) in enumerate(zip(predictions[i], scores[i], strict=True)):
            if j < 0:
                continue
            good = j in dataset.positives[i]
            ok_top1 = ok_top1 or (rank == 0 and good)
            tile = cv2.copyMakeBorder(
                _thumbnail(dataset.database[j], height),
                pad,
                pad,
                pad,
                pad,
                cv2.BORDER_CONSTANT,
                value=(0, 170, 0) if good else (0, 0, 230),
            )
            cv2.putText(
                tile,
                f"#{rank + 1} {s:.3f}",
                (pad + 3, pad + 16),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
            tiles.append(tile)
        row = np.hstack([np.pad(t, ((0, height + 2 * pad - t.shape[0]), (0, 4), (0, 0))) for t in tiles])
        _ok, jpg = cv2.imencode(".jpg", row, [int(cv2.IMWRITE_JPEG_QUALITY), 85])
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(dataset.queries[i]).stem)[:60]
        name = f"q{i:06d}_{'ok' if ok_top1 else 'wrong'}_{stem}.jpg"
        atomic_write_bytes(out_dir / name, jpg.tobytes())
