"""The structvpr node's debug image: the query frame beside its best match. No ROS.

``render_debug`` draws the query (left) and the best candidate's keyframe (right) at the query's
height, a caption with the keyframe id, descriptor score and inliers, and, when the candidate was
verified, lines between its inlier matches (at most ``MAX_LINES``, evenly picked).

The keyframe images come from ``KeyframeImages``: frames the node itself added to the map
(mapping mode; kept JPEG-encoded in memory, the newest ``max_keyframes``), else the keyframe's
``source`` when it is a readable image file (maps built from folders). A map built from a bag
keeps no images: the right panel then says so.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

MAX_LINES = 60
CAPTION_H = 26
_GREY = (90, 90, 90)


class KeyframeImages:
    """Map id -> keyframe image, for the debug view (bounded memory)."""

    def __init__(self, max_keyframes: int = 1000, jpeg_quality: int = 90):
        self.max_keyframes = max_keyframes
        self.jpeg_quality = jpeg_quality
        self._jpegs: OrderedDict[int, bytes] = OrderedDict()

    def add(self, map_id: int, bgr: np.ndarray) -> None:
        import cv2

        ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality])
        if not ok:
            return
        self._jpegs[int(map_id)] = buf.tobytes()
        while len(self._jpegs) > self.max_keyframes:
            self._jpegs.popitem(last=False)

    def get(self, map_id: int, source: str = "") -> np.ndarray | None:
        import cv2

        data = self._jpegs.get(int(map_id))
        if data is not None:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if source and Path(source).is_file():
            from structvpr_core.errors import ImageError
            from structvpr_core.images import read_image

            try:
                return read_image(source)
            except ImageError:
                return None
        return None


def _text(img: np.ndarray, text: str, x: int, colour=(255, 255, 255)) -> None:
    import cv2

    cv2.putText(img, text, (x + 6, CAPTION_H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def render_debug(
    query: np.ndarray, candidate=None, keyframe: np.ndarray | None = None, caption: str = ""
) -> np.ndarray:
    """BGR image: caption strip on top; query left, keyframe right (scaled to the query's height).

    ``candidate``: the best structvpr_core Candidate (map_id, score, inliers, inlier_points) or
    None; ``keyframe``: its image, or None when not available.
    """
    import cv2

    h, w = query.shape[:2]
    if keyframe is not None:
        scale = h / keyframe.shape[0]
        right = cv2.resize(keyframe, (max(1, round(keyframe.shape[1] * scale)), h), interpolation=cv2.INTER_AREA)
    else:
        scale = 1.0
        right = np.full_like(query, 40)
        note = "no candidate" if candidate is None else "keyframe image not available"
        cv2.putText(right, note, (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (220, 220, 220), 1, cv2.LINE_AA)
    canvas = np.zeros((CAPTION_H + h, w + right.shape[1], 3), np.uint8)
    canvas[:CAPTION_H] = _GREY
    canvas[CAPTION_H:, :w] = query
    canvas[CAPTION_H:, w:] = right
    _text(canvas, caption or "query", 0)
    if candidate is not None:
        verified = candidate.inliers is not None and candidate.inliers >= 0
        info = f"keyframe {candidate.map_id}  score {candidate.score:.2f}"
        info += f"  inliers {candidate.inliers}" if verified else "  (not verified)"
        _text(canvas, info, w, (120, 255, 120) if verified else (255, 255, 255))
        points = getattr(candidate, "inlier_points", None)
        if keyframe is not None and points is not None and len(points[0]):
            pa, pb = (np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in points)
            pick = np.linspace(0, len(pa) - 1, min(MAX_LINES, len(pa))).round().astype(int)
            for (xa, ya), (xb, yb) in zip(pa[pick], pb[pick], strict=True):
                a = (round(xa), round(ya) + CAPTION_H)
                b = (round(w + xb * scale), round(yb * scale) + CAPTION_H)
                cv2.line(canvas, a, b, (60, 220, 60), 1, cv2.LINE_AA)
                cv2.circle(canvas, a, 2, (0, 255, 255), -1)
                cv2.circle(canvas, b, 2, (0, 255, 255), -1)
    return canvas
