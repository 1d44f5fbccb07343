"""The ``structvpr`` node: camera images in, loop-closure candidates out.

Thin by design: parameters and messages in, ``structvpr_core.LoopClosureDetector`` calls,
messages out. Processing never queues behind the camera: the image callback only stores
the newest frame in a one-slot buffer (a frame replaced before it was processed counts as
dropped) and one worker thread processes whatever is newest when it becomes free. A frame that
fails (malformed, a decompression bomb, any exception in extraction, search or verification)
costs that frame only: it is counted, logged rate-limited and, when it repeats, reported in
/diagnostics at ERROR with its cause (frame_failures.py); ~/reset clears that state.

Topics:   sub  <image_topic> (Image or CompressedImage), [camera_info_topic], [pose_topic]
          pub  ~/loop_closures (structvpr_msgs/LoopClosureCandidates), /diagnostics,
               [~/label_masks (sensor_msgs/Image): publish_masks, a StructVPR++ debug view]
               [~/debug_image] (sensor_msgs/Image, with debug_image: true; see debug_image.py)
Services: ~/save_map, ~/reset (std_srvs/Trigger)
Run:      structvpr_node --ros-args --params-file config/vpr_node.yaml -p map_path:=MAP

The detector's thresholds (top_k, min_score, verify, min_inliers, temporal_exclusion_s, the
keyframe_* parameters and label_rescore) may be changed while the node runs (`ros2 param set /structvpr top_k 10`):
they are checked like at start and apply from the next frame. The other parameters are read-only.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback

import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from structvpr_core.errors import ConfigError, MapError
from structvpr_core.images import limit_decoder_pixels

from .candidates_msg import detection_to_msg, pose_from_msg, stamp_to_sec
from .debug_image import KeyframeImages, render_debug
from .detector_setup import build_detector
from .entry import own_arguments, parameter_help, run_with_rclpy
from .frame_failures import FrameFailures, LogLimiter
from .image_conversion import bgr_to_image, compressed_to_bgr, image_to_bgr
from .latest_slot import LatestSlot
from .node_health import NodeState, health
from .params import DESCRIPTIONS, LIVE_PARAMETERS, PARAMETER_NAMES, NodeParams, declare_and_read, with_changes
from .pose_buffer import PoseBuffer
from .session_save import save_session
from .stats import NodeStats

NODE_NAME = "structvpr"


class VprNode(Node):
    def __init__(self, ros_argv: list[str] | None = None, **node_kwargs) -> None:
        """``ros_argv``: the command line rclpy was initialised with (see ``declare_and_read``)."""
        super().__init__(NODE_NAME, **node_kwargs)
        # destroy_node may come for a half-made node (rclpy destroys the nodes of its context at
        # shutdown, also one whose set-up failed): it stops and saves only what was started.
        self._worker: threading.Thread | None = None
        self._stopped = False
        self.save_error: str | None = None  # why the session could not be saved at shutdown (exit 1)
        self._last_save_error: str | None = None  # a failed ~/save_map, until one succeeds
        argv = [*(ros_argv or []), *(node_kwargs.get("cli_args") or [])]
        self.params = declare_and_read(self, argv)  # ConfigError -> the node refuses to start
        p = self.params
        limit_decoder_pixels(p.max_image_pixels)  # OpenCV's own limit too (before it is imported)
        log = self.get_logger()
        query_model = f", queries embedded by {p.query_checkpoint}" if p.query_checkpoint else ""
        log.info(
            f"loading model ({p.checkpoint or 'ImageNet RGB branch'}{query_model}, device {p.device}) "
            f"and map {p.map_path} ({p.mode})"
        )
        self._detector, extractor = build_detector(p, log)
        if p.publish_masks and not extractor.has_masks:
            raise ConfigError(
                f"parameter 'publish_masks': the model ({extractor.fingerprint['architecture']}) has no label "
                "masks; it needs a StructVPR++ checkpoint"
            )
        self._extractor = extractor
        self._device = str(extractor.device)
        self._warm_up(extractor)

        self._lock = threading.Lock()  # the detector: used by the worker and by ~/reset
        self._slot: LatestSlot = LatestSlot()
        self._stats = NodeStats()
        self._failures = FrameFailures()  # per-frame failures: counted, logged rate-limited, reported
        self._input_log = LogLimiter()  # unusable camera_info / pose messages
        self._poses = PoseBuffer()
        self._stop = threading.Event()
        self._worker_error: str | None = None

        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        from structvpr_msgs.msg import LoopClosureCandidates

        self._pub = self.create_publisher(LoopClosureCandidates, "~/loop_closures", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._masks_pub = None
        if p.publish_masks:
            from sensor_msgs.msg import Image

            self._masks_pub = self.create_publisher(Image, "~/label_masks", 2)
        self._debug_pub = None
        if p.debug_image:
            from sensor_msgs.msg import Image

            self._debug_pub = self.create_publisher(Image, "~/debug_image", 2)
            self._keyframe_images = KeyframeImages()
        self._create_subscriptions()
        self.create_service(Trigger, "~/save_map", self._on_save_map)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        # After declare_and_read: rclpy calls these for declarations too. Check, then apply.
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._start_worker()
        kind = "CompressedImage" if p.compressed else "Image"
        log.info(
            f"ready: {kind} on {self._resolved(p.image_topic)} ({p.qos_reliability}, depth "
            f"{p.qos_depth}) -> {self._pub.topic_name}; map has {len(self._detector.mapdb)} "
            f"keyframes; device {self._device}"
        )

    # ---- set-up -------------------------------------------------------------------------

    def _warm_up(self, extractor) -> None:
        """One inference at start so that the first real frame is not slower than the rest."""
        import numpy as np

        w, h = self.params.image_size
        extractor.embed([np.zeros((h, w, 3), np.uint8)])

    def _resolved(self, topic: str) -> str:
        return self.resolve_topic_name(topic)

    def _image_qos(self) -> QoSProfile:
        p = self.params
        # Best effort also matches reliable publishers; reliable does not match best-effort ones.
        rel = ReliabilityPolicy.BEST_EFFORT if p.qos_reliability == "best_effort" else ReliabilityPolicy.RELIABLE
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.qos_depth, reliability=rel)

    def _create_subscriptions(self) -> None:
        p = self.params
        if p.compressed:
            from sensor_msgs.msg import CompressedImage as ImageType
        else:
            from sensor_msgs.msg import Image as ImageType
        self.create_subscription(ImageType, p.image_topic, self._on_image, self._image_qos())
        if p.camera_info_topic:
            from sensor_msgs.msg import CameraInfo

            self.create_subscription(CameraInfo, p.camera_info_topic, self._on_camera_info, self._image_qos())
        if p.pose_topic:
            if p.pose_type == "odometry":
                from nav_msgs.msg import Odometry

                self.create_subscription(
                    Odometry, p.pose_topic, lambda m: self._on_pose(m.header.stamp, m.pose.pose), 50
                )
            else:
                from geometry_msgs.msg import PoseStamped

                self.create_subscription(PoseStamped, p.pose_topic, lambda m: self._on_pose(m.header.stamp, m.pose), 50)

    # ---- parameters changed at run time (executor thread) ---------------------------------

    def _check_parameters(self, parameters):
        """Accept a change only if the new values pass the same checks as at start (no effect yet):
        the parameters' rules, then the detector's (e.g. label_rescore needs a StructVPR++ model)."""
        from rcl_interfaces.msg import SetParametersResult

        try:
            changed = with_changes(self.params, _own(parameters))
            self._detector.check_config(changed.detector_config())  # what only the model and map know
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        """Swap in the accepted values; the worker picks the detector's new config on its next frame."""
        changes = _own(parameters)
        if not changes:
            return
        self.params = with_changes(self.params, changes)  # a new object: the worker reads one per frame
        self._detector.set_config(self.params.detector_config())
        self.get_logger().info(
            "parameters changed: " + ", ".join(f"{name}={getattr(self.params, name)!r}" for name in changes)
        )

    # ---- callbacks (executor thread): keep them short -------------------------------------

    def _on_image(self, msg) -> None:
        self._stats.on_received()
        self._slot.put((msg, time.monotonic()))

    def _on_camera_info(self, msg) -> None:
        import numpy as np

        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0:
            self._detector.set_camera_matrix(K)
        else:
            self._input_warning(f"ignoring camera_info with an unusable K {K.ravel().tolist()}")

    def _on_pose(self, stamp, pose_msg) -> None:
        p, q = pose_msg.position, pose_msg.orientation
        values = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
        try:
            if not all(math.isfinite(v) for v in values):
                raise ValueError("not finite")
            pose = pose_from_msg(pose_msg)
        except Exception as e:  # a callback must not raise: it would stop the executor
            self._input_warning(f"ignoring a pose on {self.params.pose_topic} ({e}): {values}")
            return
        self._poses.add(stamp_to_sec(stamp), pose)

    def _on_save_map(self, request, response):
        if self.params.mode != "mapping":
            response.success = False
            response.message = "localization mode: the map is read-only (use mode: mapping to grow and save it)"
            return response
        try:
            n = self._save_map()
            response.success, response.message = True, f"saved {n} keyframes to {self.params.map_path}"
            self._last_save_error = None
        except Exception as e:  # report, never kill the node from a service call
            response.success, response.message = False, f"save failed: {e}"
            self._last_save_error = response.message
        (self.get_logger().info if response.success else self.get_logger().error)(response.message)
        return response

    def _on_reset(self, request, response):
        """Forget the session state and the recent failures; restart processing if it had stopped."""
        with self._lock:
            self._detector.reset()
        self._poses.clear()
        self._failures.reset()
        response.success, response.message = True, "session state reset"
        if self._worker is not None and not self._worker.is_alive() and not self._stop.is_set():
            self._worker_error = None
            self._start_worker()
            response.message += "; processing restarted"
        self.get_logger().info(response.message)
        return response

    def _save_map(self) -> int:
        # The map database is thread-safe: saving does not stop the worker for its duration.
        mapdb = self._detector.mapdb
        mapdb.save(self.params.map_path)
        return len(mapdb)

    # ---- processing (worker thread) ---------------------------------------------------------

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="structvpr-worker", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._slot.take(timeout=0.2)
                if item is not None:
                    self._handle(item)
        except Exception:  # not a frame's failure (those stay in _handle): keep it visible
            self._worker_error = traceback.format_exc(limit=5)
            self.get_logger().error(f"processing thread died:\n{self._worker_error}")

    def _handle(self, item) -> None:
        """Process one (message, arrival time); any exception costs this frame only."""
        msg = item[0]
        try:
            self._process(*item)
        except Exception as e:  # cv2.error, sqlite3 errors, MapError, bugs ...: the next frame goes on
            self._frame_failed(msg, e, malformed=False)

    def _frame_failed(self, msg, exc: Exception, malformed: bool) -> None:
        (self._stats.on_malformed if malformed else self._stats.on_failed)()
        text = self._failures.record(exc, malformed=malformed)
        if text is None:  # rate-limited
            return
        where = f"(stamp {stamp_to_sec(msg.header.stamp):.3f}, frame '{msg.header.frame_id}')"
        if malformed:
            self.get_logger().warning(f"skipping malformed image {where}: {text}")
        else:
            self.get_logger().error(f"frame not processed {where}: {text}")

    def _input_warning(self, text: str) -> None:
        ok, suppressed = self._input_log.allow()
        if ok:
            self.get_logger().warning(text + (f" ({suppressed} more not logged)" if suppressed else ""))

    def _process(self, msg, t_rx: float) -> None:
        p = self.params
        try:
            if p.compressed:
                bgr = compressed_to_bgr(msg, p.max_image_pixels)
            else:
                bgr = image_to_bgr(msg, p.max_image_pixels)
        except Exception as e:  # ImageError, cv2.error, MemoryError ...: the frame is malformed
            self._frame_failed(msg, e, malformed=True)
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:  # an unstamped camera: use arrival time for temporal exclusion
            stamp = self.get_clock().now().nanoseconds * 1e-9
        pose = self._poses.at(stamp, p.pose_max_gap_s) if p.pose_topic else None
        with self._lock:  # any exception here is the frame's failure (see _handle)
            det = self._detector.process(bgr, stamp, pose=pose, source=f"{p.image_topic}@{stamp:.9f}")
        if not det.is_keyframe:  # the keyframe policy skipped it: nothing to publish
            self._stats.on_skipped()
            return
        header = msg.header
        if p.frame_id:
            header.frame_id = p.frame_id
        out = detection_to_msg(det, header)
        if self._stop.is_set():
            return
        self._pub.publish(out)
        self._stats.on_processed(det.extract_ms, det.search_ms, det.verify_ms, (time.monotonic() - t_rx) * 1000.0)
        if self._masks_pub is not None:
            self._publish_masks(bgr, header)
        if self._debug_pub is not None:
            self._publish_debug(det, bgr, out.header)

    def _publish_masks(self, bgr, header) -> None:
        """The debug overlay of the student's soft label masks (after the candidates: never delays them)."""
        from structvpr_core.maskview import render_overlay

        image = self._extractor.prepare(bgr)
        overlay = render_overlay(image, self._extractor.masks([image])[0])
        self._masks_pub.publish(bgr_to_image(overlay, header))

    def _publish_debug(self, det, bgr, header) -> None:
        """The query beside its best match, only while someone subscribes (rendering costs a few ms)."""
        if det.query_id:
            self._keyframe_images.add(det.query_id, bgr)
        if self._debug_pub.get_subscription_count() == 0:
            return
        best = det.candidates[0] if det.candidates else None
        keyframe = self._keyframe_images.get(best.map_id, best.source) if best is not None else None
        caption = f"query {det.query_id}" if det.query_id else "query"
        self._debug_pub.publish(bgr_to_image(render_debug(bgr, best, keyframe, caption), header))

    # ---- diagnostics ------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        failures, problem = self._failures.status()
        last = self._failures.last
        level, message, values = health(
            NodeState(
                stats=self._stats.snapshot(),
                worker_alive=self._worker is not None and self._worker.is_alive(),
                worker_error=self._worker_error,
                failures=failures,
                failure_problem=problem,
                recent_failures=self._failures.recent_count(),
                last_failure=last.cause if last else "",
                last_save_error=self._last_save_error,
                dropped=self._slot.dropped,
                map_size=len(self._detector.mapdb),
                mode=self.params.mode,
                device=self._device,
                image_topic=self._resolved(self.params.image_topic),
            )
        )
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: loop closure",
            hardware_id=self._device,
            level=getattr(DiagnosticStatus, level),
            message=message,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    # ---- shutdown ---------------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Stop processing, destroy the ROS entities, then save the map (mapping mode, save_map_on_shutdown).

        The save is logged after the entities are gone: at shutdown (Ctrl-C, SIGTERM) the context
        is usually gone already, and only without its rosout publisher does the node's logger
        write to the console without a complaint about that publisher.
        """
        if self._stopped:
            return
        self._stopped = True
        started = self._worker is not None
        if started:
            self._stop.set()
            self._slot.close()
            self._worker.join(timeout=30.0)
        super().destroy_node()
        if started and self.params.mode == "mapping" and self.params.save_map_on_shutdown:
            self.save_error = save_session(self._detector.mapdb, self.params.map_path, self.get_logger())


def _own(parameters) -> dict:
    """The changes to our parameters (rclpy's own, such as use_sim_time, are left to rclpy)."""
    return {param.name: param.value for param in parameters if param.name in PARAMETER_NAMES}


def print_help() -> None:
    defaults = NodeParams()
    print(
        parameter_help(
            __doc__,
            "config/vpr_node.yaml",
            {name: (getattr(defaults, name), text) for name, text in DESCRIPTIONS.items()},
            live=LIVE_PARAMETERS,
        )
    )


def _run_node(argv: list[str]) -> None:
    node = VprNode(ros_argv=argv)  # ConfigError, MapError ...: the node refuses to start (one line, exit 1)
    try:
        rclpy.spin(node)
    finally:
        node.destroy_node()
        if node.save_error:  # a mapping session not saved where asked: exit 1, whatever ended the spin
            raise MapError(node.save_error)


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    own = own_arguments(argv)
    if "-h" in own or "--help" in own:
        print_help()
        return 0
    return run_with_rclpy("structvpr_node", args, lambda: _run_node(sys.argv if args is None else list(args)))


if __name__ == "__main__":
    sys.exit(main())
