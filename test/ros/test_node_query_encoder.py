"""The node with a query encoder (``query_checkpoint``) over real DDS: its teacher's map accepts it, another refuses.

The map is the ImageNet RGB branch's (``corridor_map``); the student is that branch with perturbed
weights saved as a query encoder for it (``make_student``: a query encoder by declaration, the
test is about the acceptance rule and the plumbing, not about quality). The camera is the real use
of a query encoder: CompressedImage at low JPEG quality.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from ros_helpers import REPO, TEST_IMAGE_SIZE, NodeProcess, spin_until, write_params

pytestmark = pytest.mark.ros

IMAGE_TOPIC = "/lqq_test/image_raw/compressed"
RESULT_TOPIC = "/structvpr/loop_closures"
JPEG_QUALITY = 30
FRAMES = (5, 30, 55, 80, 105)  # query frame indices along the route


def _params(path, map_path, student) -> dict:
    return {
        "image_topic": IMAGE_TOPIC,
        "compressed": True,
        "map_path": str(map_path),
        "query_checkpoint": str(student),
        "device": "cpu",
        "cpu_threads": 1,
        "image_width": TEST_IMAGE_SIZE[0],
        "image_height": TEST_IMAGE_SIZE[1],
        "top_k": 5,
        "mode": "localization",
    }


@pytest.fixture(scope="module")
def student(make_student):
    from structvpr_core.extractor import Extractor

    teacher = Extractor(None, device="cpu", image_size=TEST_IMAGE_SIZE, backend="torch")
    return make_student(teacher.fingerprint, name="node_student")


def test_query_encoder_answers_compressed_frames_against_its_teachers_map(ros_node, corridor_map, student, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from structvpr_core.extractor import Extractor
    from structvpr_core.images import read_image
    from structvpr_core.mapdb import MapDatabase
    from structvpr_msgs.msg import LoopClosureCandidates
    from structvpr_ros.image_conversion import bgr_to_compressed, compressed_to_bgr

    # What the node must answer: the student's top-5 in the teacher's map, for the frames as sent.
    extractor = Extractor(student, device="cpu", image_size=TEST_IMAGE_SIZE)  # also fills the ONNX cache
    mapdb = MapDatabase.load(
        corridor_map["path"], expected_fingerprint=extractor.fingerprint, query_encoder_for=extractor.query_encoder_for
    )
    messages, expected = {}, {}
    for k, i in enumerate(FRAMES):
        header = Header(frame_id="lqq_cam")
        header.stamp.sec = 100 + k
        msg = bgr_to_compressed(read_image(corridor_map["queries"][i]), header, quality=JPEG_QUALITY)
        messages[(100 + k, 0)] = msg
        hits = mapdb.search(extractor.embed([compressed_to_bgr(msg)]), 5)[0]
        expected[(100 + k, 0)] = [mapdb.keyframe(kid).source for kid, _ in hits]
    mapdb.close()

    got: dict = {}
    sub = ros_node.create_subscription(
        LoopClosureCandidates,
        RESULT_TOPIC,
        lambda m: got.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), m),
        50,
    )
    pub = ros_node.create_publisher(
        CompressedImage, IMAGE_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    node = NodeProcess(
        write_params(tmp_path / "params.yaml", _params(tmp_path, corridor_map["path"], student)), tmp_path / "node.log"
    )
    try:
        node.wait_ready(ros_node, IMAGE_TOPIC)
        assert f"queries embedded by {student}" in node.output()
        for stamp, msg in messages.items():
            # One frame at a time (the node keeps only the newest); again if a fresh match missed it.
            for _ in range(5):
                pub.publish(msg)
                if spin_until(ros_node, lambda stamp=stamp: stamp in got, 5):
                    break
            assert stamp in got, f"no answer for frame {stamp}:\n{node.output()[-2000:]}"
    finally:
        code = node.stop()
        ros_node.destroy_publisher(pub)
        ros_node.destroy_subscription(sub)
    assert code == 0, node.output()[-2000:]
    for stamp, sources in expected.items():
        answer = got[stamp]
        assert answer.header.frame_id == "lqq_cam" and answer.query_id == 0
        # Same frames, same student, same map: the node's ranking is the in-process one.
        assert [c.source for c in answer.candidates][:1] == sources[:1]
        assert len(answer.candidates) == 5


def test_query_encoder_is_refused_by_another_models_map(ros_node, corridor_map, student, tmp_path):
    """A map built by another model: the node does not start, and its one-line error names both models."""
    import torch

    from structvpr_core.checkpoint import save_checkpoint
    from structvpr_core.extractor import Extractor
    from structvpr_core.mapdb import MapDatabase
    from structvpr_core.models import RGB_ARCHITECTURE, build_rgb_branch

    torch.manual_seed(0)
    other = tmp_path / "other_model.pt"
    save_checkpoint(
        other, build_rgb_branch(pretrained=False), architecture=RGB_ARCHITECTURE, descriptor_dim=448, config={}
    )
    ex = Extractor(other, device="cpu", image_size=TEST_IMAGE_SIZE, backend="torch")
    refs = corridor_map["refs"][:3]
    db = MapDatabase.create(ex.fingerprint, ex.dim, meta={"checkpoint": str(other)})
    db.add(ex.embed_paths(refs, progress=False), [{"source": str(p)} for p in refs])
    db.save(tmp_path / "other_map")

    params = write_params(tmp_path / "params.yaml", _params(tmp_path, tmp_path / "other_map", student))
    r = subprocess.run(
        [sys.executable, "-m", "structvpr_ros.vpr_node", "--ros-args", "--params-file", str(params)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )
    assert r.returncode == 1, r.stderr[-2000:]
    (line,) = [x for x in r.stderr.splitlines() if "error:" in x]
    assert line.startswith("structvpr_node: error: ") and "Traceback" not in r.stderr
    assert f"built with {other} (structvpr-rgb-mobilenetv2" in line
    assert "the query encoder was trained for ImageNet RGB branch (structvpr-rgb-mobilenetv2" in line
