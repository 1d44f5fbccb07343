"""The node's parameters: names, defaults, documentation and validation.

``NodeParams`` is a plain dataclass (no ROS needed to build or validate it);
``declare_and_read(node)`` declares every field as a ROS parameter, reads the values given
on the command line or in the params file, and returns a validated ``NodeParams``. A bad
value raises ``ConfigError`` naming the parameter, and the node refuses to start.
config/vpr_node.yaml lists the same parameters with the same defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from structvpr_core.config import from_dict
from structvpr_core.errors import ConfigError

# ROS parameters every rclpy node may carry that are not ours.
_ROS_BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}

DESCRIPTIONS = {
    "image_topic": "Camera topic (sensor_msgs/Image, or CompressedImage when compressed is true).",
    "compressed": "Subscribe to sensor_msgs/CompressedImage (e.g. <camera>/image_raw/compressed).",
    "camera_info_topic": "Optional sensor_msgs/CameraInfo topic; its K is used by geometric verification. '' = none.",
    "pose_topic": "Optional pose topic for mapping mode (keyframe poses). '' = none.",
    "pose_type": "Message type on pose_topic: 'odometry' (nav_msgs/Odometry) or 'pose_stamped' (geometry_msgs/PoseStamped).",
    "pose_max_gap_s": "Largest gap between two poses, or between the newest pose and an image, to attach a pose to it.",
    "map_path": "Map database directory. Localization: a prebuilt map (read-only). Mapping: loaded if present, else created; saved there.",
    "checkpoint": "Model checkpoint (.pt, or an .onnx from structvpr export). '' = the ImageNet-initialised RGB branch; must match the map's model.",
    "device": "Where the model runs: auto (cuda if available), cuda or cpu.",
    "backend": "Inference runtime: auto (CUDA torch on a GPU, ONNX Runtime on a CPU), torch, onnxruntime or tensorrt.",
    "cpu_threads": "CPU threads of the model, torch and ONNX Runtime (0 = library default).",
    "image_width": "Model input width in pixels; must match the map.",
    "image_height": "Model input height in pixels; must match the map.",
    "top_k": "Number of candidates searched and published per query.",
    "min_score": "Candidates with a lower descriptor similarity (inner product, -1..1) are not published.",
    "verify": "Geometric verification of candidates (local features + RANSAC).",
    "verify_feature": "Local features for verification: sift or orb.",
    "min_inliers": "Verified candidates with fewer RANSAC inliers are not published.",
    "mode": "localization (search a prebuilt map) or mapping (grow the map online; loop closures within a session).",
    "temporal_exclusion_s": "Mapping: keyframes more recent than this (seconds before the query) are not candidates.",
    "keyframe_min_interval_s": "Mapping: least time between two keyframes added to the map.",
    "keyframe_min_distance_m": "Mapping: least travelled distance between two keyframes (needs poses).",
    "keyframe_max_similarity": "Mapping: a frame this similar (or more) to the previous keyframe is not added (novelty).",
    "session": "Mapping: session name stored with every keyframe added.",
    "save_map_on_shutdown": "Mapping: save the map to map_path when the node shuts down.",
    "qos_reliability": "Image subscription reliability: best_effort (also receives from reliable publishers) or reliable.",
    "qos_depth": "Image subscription queue depth (the node keeps only the newest frame anyway).",
    "frame_id": "frame_id written into published headers; '' = the image's own frame_id.",
    "diagnostics_period_s": "Period of /diagnostics messages in seconds.",
}


@dataclass
class NodeParams:
    image_topic: str = "/camera/image_raw"
    compressed: bool = False
    camera_info_topic: str = ""
    pose_topic: str = ""
    pose_type: Literal["odometry", "pose_stamped"] = "odometry"
    pose_max_gap_s: float = 0.5
    map_path: str = ""
    checkpoint: str = ""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = "auto"
    cpu_threads: int = 0
    image_width: int = 640
    image_height: int = 480
    top_k: int = 5
    min_score: float = 0.0
    verify: bool = False
    verify_feature: Literal["sift", "orb"] = "sift"
    min_inliers: int = 15
    mode: Literal["localization", "mapping"] = "localization"
    temporal_exclusion_s: float = 30.0
    keyframe_min_interval_s: float = 0.0
    keyframe_min_distance_m: float = 0.0
    keyframe_max_similarity: float = 1.0
    session: str = "default"
    save_map_on_shutdown: bool = True
    qos_reliability: Literal["best_effort", "reliable"] = "best_effort"
    qos_depth: int = 5
    frame_id: str = ""
    diagnostics_period_s: float = 1.0

    def validate(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"parameter '{name}': {rule}, got {getattr(self, name)!r}")

        need(bool(self.image_topic.strip()) and " " not in self.image_topic, "image_topic",
             "must be a topic name")
        need(" " not in self.camera_info_topic, "camera_info_topic", "must be a topic name or ''")
        need(" " not in self.pose_topic, "pose_topic", "must be a topic name or ''")
        need(self.pose_max_gap_s > 0, "pose_max_gap_s", "must be > 0")
        need(bool(self.map_path.strip()), "map_path", "must name the map directory")
        if self.mode == "localization" and not Path(self.map_path).exists():
            raise ConfigError(f"parameter 'map_path': no map at {self.map_path} "
                              "(localization mode needs a prebuilt map; build one with structvpr build-map)")
        if self.checkpoint and not Path(self.checkpoint).is_file():
            raise ConfigError(f"parameter 'checkpoint': no such file {self.checkpoint}")
        need(self.cpu_threads >= 0, "cpu_threads", "must be >= 0")
        need(32 <= self.image_width <= 8192, "image_width", "must be in 32..8192")
        need(32 <= self.image_height <= 8192, "image_height", "must be in 32..8192")
        need(1 <= self.top_k <= 1000, "top_k", "must be in 1..1000")
        need(-1.0 <= self.min_score <= 1.0, "min_score", "must be in [-1, 1]")
        need(self.min_inliers >= 0, "min_inliers", "must be >= 0")
        need(self.temporal_exclusion_s >= 0, "temporal_exclusion_s", "must be >= 0")
        need(self.keyframe_min_interval_s >= 0, "keyframe_min_interval_s", "must be >= 0")
        need(self.keyframe_min_distance_m >= 0, "keyframe_min_distance_m", "must be >= 0")
        need(-1.0 < self.keyframe_max_similarity <= 1.0, "keyframe_max_similarity", "must be in (-1, 1]")
        need(1 <= self.qos_depth <= 1000, "qos_depth", "must be in 1..1000")
        need(self.diagnostics_period_s > 0, "diagnostics_period_s", "must be > 0")

    def detector_config(self):
        """The core's DetectorConfig for these parameters."""
        from structvpr_core.loopclosure import DetectorConfig

        return DetectorConfig(
            top_k=self.top_k, min_score=self.min_score, verify=self.verify,
            min_inliers=self.min_inliers, mode=self.mode,
            temporal_exclusion_s=self.temporal_exclusion_s,
            keyframe_min_interval_s=self.keyframe_min_interval_s,
            keyframe_min_distance_m=self.keyframe_min_distance_m,
            keyframe_max_similarity=self.keyframe_max_similarity,
            session=self.session,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_width, self.image_height)


def params_from_dict(values: dict) -> NodeParams:
    """Validated ``NodeParams`` from plain values; errors name the parameter."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(NodeParams)})
    if unknown:
        raise ConfigError(f"unknown parameter '{unknown[0]}' (known: {', '.join(sorted(DESCRIPTIONS))})")
    try:
        return from_dict(NodeParams, values, where="")
    except ConfigError as e:
        msg = str(e).lstrip(": ")
        if msg.startswith("parameter '"):
            raise ConfigError(msg) from None
        # Type errors from from_dict read "name: expected ..."; say it is a parameter.
        name, _, rest = msg.partition(": ")
        raise ConfigError(f"parameter '{name}': {rest}") from None


def declare_and_read(node) -> NodeParams:
    """Declare all parameters on ``node`` and return their validated values.

    Parameters are declared with dynamic typing so that a value of the wrong type reaches
    our validation (and its message naming the parameter) instead of an rclpy exception.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    defaults = NodeParams()
    values = {}
    for field in dataclasses.fields(NodeParams):
        descriptor = ParameterDescriptor(description=DESCRIPTIONS[field.name], dynamic_typing=True)
        param = node.declare_parameter(field.name, getattr(defaults, field.name), descriptor)
        values[field.name] = param.value
    # A misspelt name in a params file would otherwise be ignored silently. rclpy keeps the
    # overrides given to the node in a private attribute; check them when it is there.
    overrides = getattr(node, "_parameter_overrides", None) or {}
    for name in overrides:
        if name not in values and name not in _ROS_BUILTIN_PARAMETERS and "." not in name:
            values[name] = overrides[name].value
    return params_from_dict(values)
