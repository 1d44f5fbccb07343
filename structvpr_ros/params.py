"""The node's parameters: names, defaults, documentation and validation.

``NodeParams`` is a plain dataclass (no ROS needed to build or validate it). Its detector
settings (top_k, min_score, ...) are those of the core's ``DetectorConfig``: the defaults and
the rules are the core's, ``validate`` lets ``DetectorConfig`` check them (naming the
parameter) and checks only what is the node's own. ``declare_and_read(node)`` declares every
field as a ROS parameter, reads the values given on the command line or in the params file, and
returns a validated ``NodeParams``; a bad value raises ``ConfigError`` naming the parameter, and
the node refuses to start. ``LIVE_PARAMETERS`` may change while the node runs (``with_changes``
checks such a change); the others are declared read-only. config/vpr_node.yaml lists the same
parameters with the same defaults.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from structvpr_core.backends.providers import BACKENDS
from structvpr_core.config import from_dict
from structvpr_core.errors import ConfigError
from structvpr_core.images import DEFAULT_MAX_IMAGE_PIXELS, MAX_INPUT_SIDE, MIN_INPUT_SIDE
from structvpr_core.loopclosure import DetectorConfig

# ROS parameters every rclpy node may carry that are not ours.
_ROS_BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}

DESCRIPTIONS = {
    "image_topic": "Camera topic (sensor_msgs/Image, or CompressedImage when compressed is true).",
    "compressed": "Subscribe to sensor_msgs/CompressedImage (e.g. <camera>/image_raw/compressed).",
    "camera_info_topic": "Optional sensor_msgs/CameraInfo topic; its K is used by geometric verification. '' = none.",
    "pose_topic": "Optional pose topic for mapping mode (keyframe poses). '' = none.",
    "pose_type": (
        "Message type on pose_topic: 'odometry' (nav_msgs/Odometry) or 'pose_stamped' (geometry_msgs/PoseStamped)."
    ),
    "pose_max_gap_s": "Largest gap between two poses, or between the newest pose and an image, to attach a pose to it.",
    "map_path": (
        "Map database directory. Localization: a prebuilt map (read-only). Mapping: loaded if present, "
        "else created; saved there."
    ),
    "checkpoint": (
        "Model checkpoint (.pt, or an .onnx from structvpr export). '' = the ImageNet-initialised RGB "
        "branch; must match the map's model."
    ),
    "query_checkpoint": (
        "Model that embeds the camera frames when it differs from the map's: a query encoder (low-quality-query "
        "student, .pt or .onnx) trained for the map's model. '' = checkpoint. Localization only."
    ),
    "device": "Where the model runs: auto (cuda if available), cuda or cpu.",
    "backend": "Inference runtime: auto (CUDA torch on a GPU; on a CPU the fastest runtime that passes parity, "
    "measured once per machine and model), torch, onnxruntime, openvino, openvino-bf16, openvino-fp16 or tensorrt.",
    "cpu_threads": "CPU threads of the model, torch and ONNX Runtime (0 = library default).",
    "image_width": "Model input width in pixels; must match the map.",
    "image_height": "Model input height in pixels; must match the map.",
    "top_k": "Number of candidates searched and published per query.",
    "min_score": "Candidates with a lower descriptor similarity (inner product, -1..1) are not published.",
    "verify": "Geometric verification of candidates (local features + RANSAC).",
    "verify_feature": "Local features for verification: sift or orb.",
    "label_rescore": (
        "StructVPR++ checkpoints only: re-order the top_k candidates by the label-aware alignment (each label "
        "weighted by the smaller of its two presences), which becomes their score. Off: no consistent gain measured."
    ),
    "min_inliers": "Verified candidates with fewer RANSAC inliers are not published.",
    "mode": "localization (search a prebuilt map) or mapping (grow the map online; loop closures within a session).",
    "temporal_exclusion_s": "Mapping: keyframes more recent than this (seconds before the query) are not candidates.",
    "keyframe_min_interval_s": "Mapping: least time between two keyframes added to the map.",
    "keyframe_min_distance_m": "Mapping: least travelled distance between two keyframes (needs poses).",
    "keyframe_max_similarity": (
        "Mapping: a frame more similar than this to the last keyframe is not added (1 = no novelty test)."
    ),
    "session": "Mapping: session name stored with every keyframe added.",
    "save_map_on_shutdown": "Mapping: save the map to map_path when the node shuts down.",
    "max_image_pixels": (
        "Largest camera frame (width x height) decoded; a compressed frame whose header claims more is "
        "skipped before decoding (decompression bombs)."
    ),
    "qos_reliability": (
        "Image subscription reliability: best_effort (also receives from reliable publishers) or reliable."
    ),
    "qos_depth": "Image subscription queue depth (the node keeps only the newest frame anyway).",
    "frame_id": "frame_id written into published headers; '' = the image's own frame_id.",
    "diagnostics_period_s": "Period of /diagnostics messages in seconds.",
    "publish_masks": (
        "Debug view: publish the StructVPR++ student's soft label masks as a coloured overlay (sensor_msgs/Image "
        "bgr8) on ~/label_masks for every processed keyframe. Needs a StructVPR++ checkpoint; costs one more "
        "forward pass per keyframe."
    ),
    "debug_image": (
        "Publish ~/debug_image (query beside its best match, score, inliers, match lines); rendered only "
        "while someone subscribes."
    ),
}


_DETECTOR = DetectorConfig()  # the defaults of the detector's parameters


def _parameter(name: str) -> str:
    return f"parameter '{name}'"


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
    query_checkpoint: str = ""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    backend: str = "auto"  # one of structvpr_core.backends.providers.BACKENDS
    cpu_threads: int = 0
    image_width: int = 640
    image_height: int = 480
    top_k: int = _DETECTOR.top_k
    min_score: float = _DETECTOR.min_score
    verify: bool = _DETECTOR.verify
    verify_feature: Literal["sift", "orb"] = "sift"
    min_inliers: int = _DETECTOR.min_inliers
    label_rescore: bool = _DETECTOR.label_rescore
    mode: Literal["localization", "mapping"] = _DETECTOR.mode
    temporal_exclusion_s: float = _DETECTOR.temporal_exclusion_s
    keyframe_min_interval_s: float = _DETECTOR.keyframe_min_interval_s
    keyframe_min_distance_m: float = _DETECTOR.keyframe_min_distance_m
    keyframe_max_similarity: float = _DETECTOR.keyframe_max_similarity
    session: str = _DETECTOR.session
    save_map_on_shutdown: bool = True
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    qos_reliability: Literal["best_effort", "reliable"] = "best_effort"
    qos_depth: int = 5
    frame_id: str = ""
    diagnostics_period_s: float = 1.0
    publish_masks: bool = False
    debug_image: bool = False

    def validate(self) -> None:
        """The node's own values here; the detector's are checked by DetectorConfig (one rule, in the core).

        Files are looked for by ``check_files``, at start only.
        """

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{_parameter(name)}: {rule}, got {getattr(self, name)!r}")

        need(bool(self.image_topic.strip()) and " " not in self.image_topic, "image_topic", "must be a topic name")
        need(" " not in self.camera_info_topic, "camera_info_topic", "must be a topic name or ''")
        need(" " not in self.pose_topic, "pose_topic", "must be a topic name or ''")
        need(self.pose_max_gap_s > 0, "pose_max_gap_s", "must be > 0")
        need(bool(self.map_path.strip()), "map_path", "must name the map directory")
        need(
            not self.query_checkpoint or self.mode == "localization",
            "query_checkpoint",
            "a query encoder only queries a map (mode localization); mapping adds the frames to the map",
        )
        need(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")
        need(self.cpu_threads >= 0, "cpu_threads", "must be >= 0")
        sides = f"must be in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE}"
        need(MIN_INPUT_SIDE <= self.image_width <= MAX_INPUT_SIDE, "image_width", sides)
        need(MIN_INPUT_SIDE <= self.image_height <= MAX_INPUT_SIDE, "image_height", sides)
        need(self.max_image_pixels >= 1, "max_image_pixels", "must be >= 1")
        self.detector_config().validate(name=_parameter)
        need(1 <= self.qos_depth <= 1000, "qos_depth", "must be in 1..1000")
        need(self.diagnostics_period_s > 0, "diagnostics_period_s", "must be > 0")

    def check_files(self) -> None:
        """The map (localization) and the checkpoint must exist; checked when the node starts."""
        if self.mode == "localization" and not Path(self.map_path).exists():
            raise ConfigError(
                f"parameter 'map_path': no map at {self.map_path} "
                "(localization mode needs a prebuilt map; build one with structvpr build-map)"
            )
        for name in ("checkpoint", "query_checkpoint"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ConfigError(f"parameter '{name}': no such file {value}")

    def detector_config(self) -> DetectorConfig:
        """The core's DetectorConfig for these parameters (the fields of the same names)."""
        return DetectorConfig(**{name: getattr(self, name) for name in _DETECTOR_PARAMETERS})

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_width, self.image_height)


# Our parameters (rclpy declares a few of its own on every node: use_sim_time ...).
PARAMETER_NAMES = frozenset(f.name for f in dataclasses.fields(NodeParams))
# The node's parameters that are DetectorConfig fields (verify_candidates is not one: it is top_k).
_DETECTOR_PARAMETERS = tuple(f.name for f in dataclasses.fields(DetectorConfig) if f.name in PARAMETER_NAMES)
# The parameters applied while the node runs: the detector settings it may change between frames.
# The others (topics, model, map, mode, QoS) shape what was set up at start and are read-only.
LIVE_PARAMETERS = frozenset(DetectorConfig.RUNTIME_FIELDS) & PARAMETER_NAMES


def params_from_dict(values: dict) -> NodeParams:
    """Validated ``NodeParams`` from plain values (and its files checked); errors name the parameter."""
    unknown = sorted(set(values) - PARAMETER_NAMES)
    if unknown:
        raise ConfigError(f"unknown parameter '{unknown[0]}' (known: {', '.join(sorted(DESCRIPTIONS))})")
    params = _typed(values)
    params.check_files()
    return params


def with_changes(params: NodeParams, changes: dict) -> NodeParams:
    """``params`` with ``changes`` made while the node runs: ConfigError naming the parameter when
    one is not live or its value is bad. The files checked at start are not looked for again."""
    fixed = sorted(set(changes) - LIVE_PARAMETERS)
    if fixed:
        raise ConfigError(f"parameter '{fixed[0]}': read-only, it takes effect only when the node starts")
    return _typed({**dataclasses.asdict(params), **changes})


def _typed(values: dict) -> NodeParams:
    """``NodeParams`` with the declared types, validated; errors name the parameter."""
    return typed_parameters(NodeParams, values)


def typed_parameters(cls, values: dict):
    """Dataclass ``cls`` of a node's parameters from plain values, with the declared types and
    validated; a ``ConfigError`` names the parameter (``parameter 'x': ...``)."""
    try:
        return from_dict(cls, values, where="")
    except ConfigError as e:
        msg = str(e).lstrip(": ")
        if msg.startswith("parameter '"):
            raise ConfigError(msg) from None
        # Type errors from from_dict read "name: expected ..."; say it is a parameter.
        name, _, rest = msg.partition(": ")
        raise ConfigError(f"parameter '{name}': {rest}") from None


# rcl's reading of a scalar parameter value (rcl_yaml_param_parser, get_value): these words are
# booleans, then an integer (strtol, base 0), then a float (strtod, and YAML's .inf/.nan), else a string.
_RCL_TRUE = {"Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_RCL_FALSE = {"N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_RCL_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_RCL_SPECIAL_FLOATS = {".nan": math.nan, ".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf}


def _rcl_scalar(text: str):
    if text in _RCL_TRUE or text in _RCL_FALSE:
        return text in _RCL_TRUE
    if _RCL_INT.fullmatch(text):
        sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
        base = 16 if digits[:2] in ("0x", "0X") else 8 if len(digits) > 1 and digits[0] == "0" else 10
        return sign * int(digits, base)
    if text.lower() in _RCL_SPECIAL_FLOATS:
        return _RCL_SPECIAL_FLOATS[text.lower()]
    try:
        return float(text)
    except ValueError:
        return text


def rcl_value(text: str):
    """The value rcl gives ``-p name:=TEXT``: a YAML scalar typed by rcl's rules (quoted = string),
    or a list of them; ``text`` itself when it is not YAML."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.style in ("'", '"') else _rcl_scalar(node.value)
    if isinstance(node, yaml.SequenceNode):
        return [c.value if c.style in ("'", '"') else _rcl_scalar(c.value) for c in node.value if hasattr(c, "style")]
    return text


def command_line_values(argv, node_names) -> dict:
    """The values given by ``-p NAME:=VALUE`` / ``--param`` in the ``--ros-args`` sections of
    ``argv`` (the last one wins), typed as rcl types them; ``NODE:NAME:=VALUE`` counts when NODE is
    one of ``node_names``."""
    values, in_ros, args = {}, False, list(argv or [])
    for i, arg in enumerate(args):
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg in ("-p", "--param") and i + 1 < len(args):
            name, sep, text = args[i + 1].partition(":=")
            if not sep:
                continue
            node, colon, param = name.rpartition(":")
            if colon and node not in node_names:
                continue
            values[param] = rcl_value(text)
    return values


def declare_and_read(node, argv=None) -> NodeParams:
    """Declare all parameters on ``node`` and return their validated values.

    Parameters are declared with dynamic typing so that a value of the wrong type reaches
    our validation (and its message naming the parameter) instead of an rclpy exception; all but
    ``LIVE_PARAMETERS`` are read-only, so that rclpy refuses to set them on a running node.

    ``argv``: the command line the node was started with. rcl keeps one slot per type for a
    parameter given twice, and rclpy reads bool, then int, then float, then string: so with
    ``--params-file`` holding ``top_k: 5``, ``-p top_k:=abc`` (or ``:=2.5``) comes out as the
    file's 5 and the mistake is lost. An override whose rcl type differs from the value rclpy
    reports is therefore taken from ``argv`` itself, and validated like any other value.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    defaults = NodeParams()
    values = {}
    for field in dataclasses.fields(NodeParams):
        descriptor = ParameterDescriptor(
            description=DESCRIPTIONS[field.name], dynamic_typing=True, read_only=field.name not in LIVE_PARAMETERS
        )
        param = node.declare_parameter(field.name, getattr(defaults, field.name), descriptor)
        values[field.name] = param.value
    names = {node.get_name(), node.get_fully_qualified_name(), node.get_fully_qualified_name().lstrip("/")}
    for name, value in command_line_values(argv, names).items():
        if name in values and type(value) is not type(values[name]):
            values[name] = value  # the override rclpy lost behind another source's value of another type
    # A misspelt name in a params file would otherwise be ignored silently. rclpy keeps the
    # overrides given to the node in a private attribute; check them when it is there.
    overrides = getattr(node, "_parameter_overrides", None) or {}
    for name in overrides:
        if name not in values and name not in _ROS_BUILTIN_PARAMETERS and "." not in name:
            values[name] = overrides[name].value
    return params_from_dict(values)
