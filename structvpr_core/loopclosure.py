"""Loop-closure detection: "have I been here before?", independent of ROS.

Per incoming frame ``LoopClosureDetector.process``:

1. keyframe policy, cheap part: skip frames closer than ``keyframe_min_interval_s`` in time
   or (when poses are given) ``keyframe_min_distance_m`` in travelled distance to the last
   keyframe — before any network runs;
2. extract the global descriptor; novelty: skip the frame if its similarity to the last
   keyframe's descriptor exceeds ``keyframe_max_similarity``;
3. search the map for the top-K (score >= ``min_score``); in mapping mode keyframes of the
   current session newer than ``stamp - temporal_exclusion_s`` are excluded (the robot is
   trivially "here" where it was a moment ago); with ``label_rescore`` (StructVPR++ students
   only, off by default) re-order them by the label-aware alignment of
   ``models.label_scores.aligned_scores`` on the stored map descriptors, which becomes their score;
4. optionally verify the candidates geometrically, re-rank them by inliers and drop those
   with fewer than ``min_inliers``;
5. in mapping mode add the keyframe (with local features when verifying) to the map.

Memory is bounded: the detector keeps only the last keyframe's stamp, pose and descriptor;
only the map grows. Not re-entrant: call ``process`` from one thread (the map itself is
thread-safe, so another thread may save it meanwhile; ``set_config`` may be called from another
thread too, the new thresholds apply from the next frame).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from .errors import ConfigError, MapError
from .geometry import Pose
from .log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's settings: one immutable value, replaced whole by ``LoopClosureDetector.set_config``.

    ``validate`` holds the one rule per field; the ROS node's parameters of the same names are
    checked by it too (it names them as parameters).
    """

    top_k: int = 5
    min_score: float = 0.0
    verify: bool = False
    min_inliers: int = 15
    mode: Literal["localization", "mapping"] = "localization"
    temporal_exclusion_s: float = 30.0
    keyframe_min_interval_s: float = 0.0
    keyframe_min_distance_m: float = 0.0
    keyframe_max_similarity: float = 1.0  # novelty: 1.0 = every frame is novel enough
    session: str = "default"
    verify_candidates: int = 0  # how many search results to verify (0 = top_k)
    # StructVPR++ only: re-order the fetched candidates by the min-presence label alignment
    # (label_features.aligned_scores). Off: measured, no consistent gain (README, StructVPR++).
    label_rescore: bool = False

    # What ``set_config`` may change while frames are processed: thresholds read per frame.
    # mode and session decide what the map is and receives; they stay as the detector was built.
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = (
        "top_k",
        "min_score",
        "verify",
        "min_inliers",
        "verify_candidates",
        "temporal_exclusion_s",
        "keyframe_min_interval_s",
        "keyframe_min_distance_m",
        "keyframe_max_similarity",
        "label_rescore",
    )

    def validate(self, name: Callable[[str], str] = str) -> None:
        """ConfigError for the first bad field; ``name(field)`` is how the message names the field
        (the node passes ``lambda f: f"parameter '{f}'"``)."""

        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{name(key)}: {rule}, got {getattr(self, key)!r}")

        # 1000 bounds the work of one frame (verification runs per candidate) and stays within
        # what GPU faiss indexes can return; a typo set on a live node must not stall it.
        need(1 <= self.top_k <= 1000, "top_k", "must be in 1..1000")
        need(self.mode in ("localization", "mapping"), "mode", "expected 'localization' or 'mapping'")
        need(-1.0 <= self.min_score <= 1.0, "min_score", "must be in [-1, 1] (cosine similarity)")
        need(self.min_inliers >= 0, "min_inliers", "must be >= 0")
        for field_name in ("temporal_exclusion_s", "keyframe_min_interval_s", "keyframe_min_distance_m"):
            v = getattr(self, field_name)
            need(v >= 0 and math.isfinite(v), field_name, "must be a finite number >= 0")
        # -1 is left out: a unit descriptor is at least -1 similar to any other, so no frame after
        # the first would ever be novel (mapping would silently stop adding keyframes).
        need(
            -1.0 < self.keyframe_max_similarity <= 1.0,
            "keyframe_max_similarity",
            "must be in (-1, 1] (1 = no novelty test)",
        )
        need(bool(self.session), "session", "must be a non-empty string")
        need(self.verify_candidates >= 0, "verify_candidates", "must be >= 0")


@dataclass
class Candidate:
    map_id: int
    score: float
    stamp: float | None = None
    pose: Pose | None = None
    source: str = ""
    inliers: int | None = None  # None = not verified
    relative_rotation: np.ndarray | None = None  # 3×3: X_map = R · X_query + t
    relative_translation: np.ndarray | None = None  # (3,), unit length (monocular)
    inlier_points: tuple[np.ndarray, np.ndarray] | None = None  # verified matches (query, map pixels)


@dataclass
class Detection:
    is_keyframe: bool
    query_id: int = 0  # map id of this frame when mapping mode added it, else 0
    candidates: list[Candidate] = field(default_factory=list)  # best first
    extract_ms: float = 0.0
    search_ms: float = 0.0
    verify_ms: float = 0.0


class KeyframePolicy:
    """Decides which frames become keyframes; O(1) state (the last keyframe only)."""

    def __init__(self, min_interval_s: float = 0.0, min_distance_m: float = 0.0, max_similarity: float = 1.0):
        self.min_interval_s = min_interval_s
        self.min_distance_m = min_distance_m
        self.max_similarity = max_similarity
        self.reset()

    def reset(self) -> None:
        self.last_stamp: float | None = None
        self.last_descriptor: np.ndarray | None = None
        self._prev_pose: Pose | None = None
        self._travelled = 0.0

    def due(self, stamp: float, pose: Pose | None) -> bool:
        """Time/distance test, before extraction. Tracks the travelled path length."""
        if pose is not None:
            if self._prev_pose is not None:
                self._travelled += pose.distance_to(self._prev_pose)
            self._prev_pose = pose
        if self.last_stamp is None:
            return True
        if stamp < self.last_stamp:  # time went backwards (bag restarted, sim reset): start over
            self.reset()
            self._prev_pose = pose
            return True
        if stamp - self.last_stamp < self.min_interval_s:
            return False
        if self.min_distance_m > 0 and pose is not None and self._travelled < self.min_distance_m:
            return False
        return True

    def novel(self, descriptor: np.ndarray) -> bool:
        if self.max_similarity >= 1.0 or self.last_descriptor is None:
            return True
        return float(np.dot(descriptor, self.last_descriptor)) <= self.max_similarity

    def accept(self, stamp: float, descriptor: np.ndarray | None = None) -> None:
        """Record that the frame at ``stamp`` became a keyframe."""
        self.last_stamp = stamp
        if descriptor is not None:
            self.last_descriptor = np.array(descriptor, dtype=np.float32, copy=True)
        self._travelled = 0.0


class LoopClosureDetector:
    """Keyframe policy + map search + optional geometric verification (+ map growth in mapping mode)."""

    def __init__(self, extractor, mapdb, config: DetectorConfig, verifier=None, camera_matrix=None):
        config.validate()
        if extractor.dim != mapdb.dim:
            raise MapError(f"the extractor makes {extractor.dim}-d descriptors, the map holds {mapdb.dim}-d ones")
        fp = getattr(extractor, "fingerprint", None)
        teacher = getattr(extractor, "query_encoder_for", None)
        if fp is not None:
            mapdb.check_fingerprint(fp, query_encoder_for=teacher)
        self._label_layout = getattr(extractor, "label_layout", None)
        self._architecture = (fp or {}).get("architecture", "not one")
        self._check_label_rescore(config, mapdb)
        if teacher is not None and config.mode == "mapping":
            raise ConfigError(
                "mode mapping: the model is a query encoder (a low-quality-query student): it may query "
                "its teacher's map but not add keyframes to one; map with the teacher"
            )
        self._extractor = extractor
        self._mapdb = mapdb
        self._verifier = verifier
        if config.verify:
            self._ensure_verifier()
        self.config = config  # read it freely; change it with set_config
        self._K = None if camera_matrix is None else np.asarray(camera_matrix, dtype=np.float64).reshape(3, 3)
        self._policy = KeyframePolicy(
            config.keyframe_min_interval_s, config.keyframe_min_distance_m, config.keyframe_max_similarity
        )
        self._warned_unverifiable = False

    @property
    def mapdb(self):
        return self._mapdb

    @property
    def verifier(self):
        return self._verifier

    def set_config(self, config: DetectorConfig) -> None:
        """Use ``config`` from the next frame on; ConfigError (and the old config kept) if it is bad.

        Safe while ``process`` runs in another thread: the config is immutable and ``process``
        takes it once per frame, so a frame never mixes old and new settings.
        """
        self.check_config(config)
        if config.verify:
            self._ensure_verifier()  # before the swap: the worker sees verify=True only with a verifier
        self.config = config

    def check_config(self, config: DetectorConfig) -> None:
        """ConfigError if ``set_config(config)`` would refuse it: a bad value, a change to a field
        outside ``DetectorConfig.RUNTIME_FIELDS``, or label_rescore this model or map cannot give.
        Changes nothing (the node asks before it accepts a parameter change)."""
        config.validate()
        for f in fields(DetectorConfig):
            if f.name not in DetectorConfig.RUNTIME_FIELDS and getattr(config, f.name) != getattr(self.config, f.name):
                raise ConfigError(
                    f"{f.name}: cannot change while the detector runs, "
                    f"got {getattr(config, f.name)!r} (is {getattr(self.config, f.name)!r})"
                )
        self._check_label_rescore(config, self._mapdb)

    def _check_label_rescore(self, config: DetectorConfig, mapdb) -> None:
        """ConfigError when ``label_rescore`` is asked for and this model or map cannot give it."""
        if not config.label_rescore:
            return
        if self._label_layout is None:
            raise ConfigError(
                f"label_rescore: needs a StructVPR++ student (its label parts); the model is {self._architecture}"
            )
        if not mapdb.exact_vectors:
            raise ConfigError(
                f"label_rescore: the map's {mapdb.index_type} index stores compressed codes, not the "
                "descriptors the re-scoring needs; use a flat, ivfflat or hnsw map"
            )

    def _rescore(self, desc: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        """Candidates re-ordered (best first) by the label-aware alignment, which becomes their score."""
        from .models.label_scores import aligned_scores

        if not candidates:
            return candidates
        stored = self._mapdb.vectors([c.map_id for c in candidates])
        scores = aligned_scores(desc, stored, *self._label_layout)
        for c, s in zip(candidates, scores, strict=True):
            c.score = float(s)
        order = np.argsort(-scores, kind="stable")
        return [candidates[i] for i in order]

    def _ensure_verifier(self) -> None:
        if self._verifier is None:
            from .verify import GeometricVerifier

            self._verifier = GeometricVerifier()

    def set_camera_matrix(self, K) -> None:
        """Intrinsics for the relative pose (e.g. from a camera_info message); None to disable."""
        self._K = None if K is None else np.asarray(K, dtype=np.float64).reshape(3, 3)

    def reset(self) -> None:
        """Forget the session state (last keyframe). Keyframes already added to the map stay in
        it (reload the map from disk to drop unsaved ones); they remain subject to temporal
        exclusion by their stamps."""
        self._policy.reset()

    def process(self, image_bgr: np.ndarray, stamp: float, pose: Pose | None = None, source: str = "") -> Detection:
        cfg = self.config  # once per frame: set_config may swap it from another thread meanwhile
        policy = self._policy
        policy.min_interval_s, policy.min_distance_m, policy.max_similarity = (
            cfg.keyframe_min_interval_s,
            cfg.keyframe_min_distance_m,
            cfg.keyframe_max_similarity,
        )
        stamp = float(stamp)
        if not policy.due(stamp, pose):
            return Detection(is_keyframe=False)

        t0 = time.perf_counter()
        desc = np.asarray(self._extractor.embed([image_bgr]), dtype=np.float32).reshape(-1)
        extract_ms = (time.perf_counter() - t0) * 1e3
        if not policy.novel(desc):
            return Detection(is_keyframe=False, extract_ms=extract_ms)

        t1 = time.perf_counter()
        n_fetch = max(cfg.top_k, cfg.verify_candidates) if cfg.verify else cfg.top_k
        exclude = None
        if cfg.mode == "mapping":
            exclude = self._mapdb.recent_ids(cfg.session, stamp - cfg.temporal_exclusion_s)
        hits = self._mapdb.search(desc[None], n_fetch, min_score=cfg.min_score, exclude_ids=exclude)[0]
        candidates = []
        for kid, score in hits:
            kf = self._mapdb.keyframe(kid)
            candidates.append(Candidate(kid, score, kf.stamp, kf.pose, kf.source))
        if cfg.label_rescore:
            candidates = self._rescore(desc, candidates)
        search_ms = (time.perf_counter() - t1) * 1e3

        verify_ms = 0.0
        query_features = None
        if cfg.verify:
            t2 = time.perf_counter()
            query_features = self._verifier.extract_features(image_bgr)
            if candidates:
                candidates = self._verify(query_features, candidates, cfg.min_inliers)
            verify_ms = (time.perf_counter() - t2) * 1e3
        candidates = candidates[: cfg.top_k]

        query_id = 0
        if cfg.mode == "mapping":
            kf = {"stamp": stamp, "pose": pose, "session": cfg.session, "source": source}
            feats = [query_features] if query_features is not None else None
            query_id = self._mapdb.add(desc[None], [kf], local_features=feats)[0]
        policy.accept(stamp, desc)
        return Detection(True, query_id, candidates, extract_ms, search_ms, verify_ms)

    def _map_features(self, cand: Candidate):
        feats = self._mapdb.local_features(cand.map_id)
        if feats is not None:
            return feats
        # No stored features: fall back to the keyframe's image when it is a readable file.
        if cand.source and Path(cand.source).is_file():
            from .errors import ImageError
            from .images import read_image

            try:
                return self._verifier.extract_features(read_image(cand.source))
            except ImageError:
                pass
        if not self._warned_unverifiable:
            log.warning(
                "map keyframe %d has no local features and no readable image: candidates "
                "like it cannot be verified and are dropped (build the map with features)",
                cand.map_id,
            )
            self._warned_unverifiable = True
        return None

    def _verify(self, query_features, candidates: list[Candidate], min_inliers: int) -> list[Candidate]:
        verified = []
        for c in candidates:
            feats = self._map_features(c)
            if feats is None:
                continue
            r = self._verifier.verify(query_features, feats, K=self._K)
            c.inliers = r.inliers
            c.relative_rotation, c.relative_translation = r.R, r.t
            c.inlier_points = r.inlier_points
            if r.inliers >= min_inliers:
                verified.append(c)
        verified.sort(key=lambda c: (-c.inliers, -c.score))
        return verified
