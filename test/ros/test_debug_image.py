"""The structvpr node's debug image: the rendering (no ROS) and the ~/debug_image topic over DDS.

Frames are views of the SYNTHETIC route: a place, another place, then the first place again
from the second lap, so that the third frame has a verified match to draw.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from ros_helpers import NodeProcess, spin_until, write_params

from structvpr_core.data.synthetic_route import RouteConfig, camera_matrix, make_route, render_frame
from structvpr_core.loopclosure import Candidate
from structvpr_ros.debug_image import CAPTION_H, KeyframeImages, render_debug

CFG = RouteConfig(street_length_m=20.0)


@pytest.fixture(scope="module")
def views():
    """(first place, another place, the first place again on the second lap) as BGR images."""
    frames = make_route(CFG)
    a = next(f for f in frames if f.lap == 0 and f.street == 1 and f.s == 8.0)
    b = next(f for f in frames if f.lap == 0 and f.street == 3 and f.s == 8.0)
    c = min((f for f in frames if f.lap == 1), key=lambda f: math.dist(f.pose.position, a.pose.position))
    return [render_frame(f, CFG) for f in (a, b, c)]


def test_render_debug_layout_caption_and_match_lines(views):
    from structvpr_core.verify import GeometricVerifier

    query, _, keyframe = views
    r = GeometricVerifier().verify(query, keyframe)
    assert r.inliers >= 15 and len(r.inlier_points[0]) == r.inliers
    cand = Candidate(7, 0.91, inliers=r.inliers, inlier_points=r.inlier_points)
    img = render_debug(query, cand, keyframe, "query 9")
    h, w = query.shape[:2]
    assert img.shape == (CAPTION_H + h, 2 * w, 3) and img.dtype == np.uint8
    plain = render_debug(query, Candidate(7, 0.91, inliers=r.inliers), keyframe, "query 9")  # no points: no lines
    assert np.array_equal(plain[CAPTION_H:, :w], query) and np.array_equal(plain[CAPTION_H:, w:], keyframe)
    drawn = np.any(img != plain, axis=2)
    assert drawn[:CAPTION_H].sum() == 0  # same caption
    assert drawn[CAPTION_H:, :w].sum() > 100 and drawn[CAPTION_H:, w:].sum() > 100  # lines reach both panels
    # A keyframe of another size is scaled to the query's height; no keyframe image: a placeholder.
    small = render_debug(query, cand, keyframe[::2, ::2])
    assert small.shape == img.shape
    none = render_debug(query, None, None)
    assert none.shape == img.shape and none[CAPTION_H:, w:].max() < 255


def test_keyframe_images_are_bounded_and_fall_back_to_the_source_file(views, tmp_path):
    import cv2

    store = KeyframeImages(max_keyframes=2)
    for i, v in enumerate(views, start=1):
        store.add(i, v)
    assert store.get(1) is None  # the oldest was dropped
    assert np.abs(store.get(3).astype(int) - views[2]).mean() < 3  # JPEG in memory
    cv2.imwrite(str(tmp_path / "kf.png"), views[0])
    assert np.array_equal(store.get(1, str(tmp_path / "kf.png")), views[0])


IMAGE_TOPIC = "/debug_test/image_raw"
INFO_TOPIC = "/debug_test/camera_info"
RESULT_TOPIC = "/structvpr/loop_closures"
DEBUG_TOPIC = "/structvpr/debug_image"


@pytest.mark.ros
def test_debug_image_topic_over_dds(ros_node, views, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from structvpr_msgs.msg import LoopClosureCandidates
    from structvpr_ros.candidates_msg import sec_to_stamp, stamp_to_sec
    from structvpr_ros.image_conversion import bgr_to_image, image_to_bgr

    w, h = CFG.size
    params = write_params(
        tmp_path / "params.yaml",
        {
            "image_topic": IMAGE_TOPIC,
            "camera_info_topic": INFO_TOPIC,
            "qos_reliability": "reliable",
            "map_path": str(tmp_path / "map"),
            "mode": "mapping",
            "verify": True,
            "temporal_exclusion_s": 1.0,
            "image_width": w,
            "image_height": h,
            "device": "cpu",
            "cpu_threads": 1,
            "save_map_on_shutdown": False,
            "debug_image": True,
        },
    )
    answers, debug = {}, {}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    subs = [
        ros_node.create_subscription(
            LoopClosureCandidates, RESULT_TOPIC, lambda m: answers.__setitem__(stamp_to_sec(m.header.stamp), m), 10
        ),
        ros_node.create_subscription(
            Image, DEBUG_TOPIC, lambda m: debug.__setitem__(stamp_to_sec(m.header.stamp), m), 10
        ),
    ]
    image_pub = ros_node.create_publisher(Image, IMAGE_TOPIC, reliable)
    info_pub = ros_node.create_publisher(CameraInfo, INFO_TOPIC, reliable)
    node = NodeProcess(params, tmp_path / "node.log")
    try:
        node.wait_ready(ros_node, IMAGE_TOPIC)
        assert spin_until(ros_node, lambda: ros_node.count_publishers(DEBUG_TOPIC) > 0, 10)
        info = CameraInfo(width=w, height=h)
        info.k = [float(v) for v in camera_matrix(CFG).ravel()]
        t0 = time.time()
        stamps = [round(t0) + 5.0 * i for i in range(3)]
        for stamp, view in zip(stamps, views, strict=True):
            info_pub.publish(info)
            spin_until(ros_node, lambda: False, 0.1)
            msg = bgr_to_image(view)
            msg.header.stamp, msg.header.frame_id = sec_to_stamp(stamp), "camera_optical"
            image_pub.publish(msg)
            assert spin_until(ros_node, lambda s=stamp: s in answers and s in debug, 60), node.output()[-2000:]
    finally:
        node.stop()
        for s in subs:
            ros_node.destroy_subscription(s)
        ros_node.destroy_publisher(image_pub)
        ros_node.destroy_publisher(info_pub)
    first, _, revisit = (answers[s] for s in stamps)
    assert not first.candidates
    best = revisit.candidates[0]
    assert best.map_id == first.query_id and best.inliers >= 15 and best.has_relative
    for stamp in stamps:
        msg = debug[stamp]
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("bgr8", 2 * w, CAPTION_H + h, 2 * w * 3)
        assert len(msg.data) == msg.step * msg.height and msg.header.frame_id == "camera_optical"
    img = image_to_bgr(debug[stamps[2]])
    left, right = img[CAPTION_H:, :w].astype(int), img[CAPTION_H:, w:].astype(int)
    # The query beside the first view (from the node's JPEG store), with match lines drawn over both.
    assert np.median(np.abs(left - views[2])) == 0 and np.median(np.abs(right - views[0])) <= 2
    assert (np.abs(left - views[2]).max(axis=2) > 60).sum() > 100
    caption = img[:CAPTION_H, w:]
    assert ((caption[:, :, 1] > 200) & (caption[:, :, 0] < 160)).sum() > 20  # the green "inliers" caption
    empty = image_to_bgr(debug[stamps[0]])
    assert empty[CAPTION_H:, w:].mean() < 60  # no candidate: the dark placeholder
