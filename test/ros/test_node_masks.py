"""The node's StructVPR++ debug view: publish_masks publishes the student's soft label masks as an
overlay on ~/label_masks (real DDS, real Corridor frames); a plain StructVPR model refuses it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ros_helpers import REPO, TEST_IMAGE_SIZE, NodeProcess, spin_until, write_params

from structvpr_core.paths import corridor_root

pytestmark = pytest.mark.ros

IMAGE_TOPIC = "/masks_test/image_raw"
MASKS_TOPIC = "/structvpr/label_masks"


@pytest.fixture(scope="module")
def pp_checkpoint(tmp_path_factory):
    import torch

    from structvpr_core.checkpoint import save_checkpoint
    from structvpr_core.models import PP_RGB_ARCHITECTURE, build_pp_student
    from structvpr_core.slme import label_retrieval_weights

    torch.manual_seed(0)
    model = build_pp_student(pretrained=True, weights=label_retrieval_weights(6)).eval()
    path = tmp_path_factory.mktemp("pp") / "pp.pt"
    save_checkpoint(path, model, architecture=PP_RGB_ARCHITECTURE, descriptor_dim=model.dim, config={})
    return path


def test_label_masks_overlay_is_published(ros_node, pp_checkpoint, tmp_path):
    from sensor_msgs.msg import Image

    from structvpr_core.images import read_image
    from structvpr_core.maskview import LEGEND_ROW
    from structvpr_ros.image_conversion import bgr_to_image

    params = write_params(
        tmp_path / "params.yaml",
        {
            "image_topic": IMAGE_TOPIC,
            "map_path": str(tmp_path / "map"),
            "mode": "mapping",
            "checkpoint": str(pp_checkpoint),
            "device": "cpu",
            "backend": "torch",
            "cpu_threads": 1,
            "image_width": TEST_IMAGE_SIZE[0],
            "image_height": TEST_IMAGE_SIZE[1],
            "save_map_on_shutdown": False,
            "publish_masks": True,
        },
    )
    got = []
    sub = ros_node.create_subscription(Image, MASKS_TOPIC, got.append, 10)
    pub = ros_node.create_publisher(Image, IMAGE_TOPIC, 10)
    node = NodeProcess(params, tmp_path / "node.log")
    try:
        node.wait_ready(ros_node, IMAGE_TOPIC)
        frame = read_image(corridor_root() / "query" / "0000010.jpg")
        msg = bgr_to_image(frame)
        msg.header.stamp.sec, msg.header.frame_id = 1234, "cam"
        for _ in range(3):  # best effort: a frame may be dropped while the worker is busy
            pub.publish(msg)
            if spin_until(ros_node, lambda: bool(got), 10.0):
                break
        assert got, node.output()[-2000:]
    finally:
        code = node.stop()
        ros_node.destroy_subscription(sub)
        ros_node.destroy_publisher(pub)
    assert code == 0, node.output()[-2000:]
    out = got[0]
    w, h = TEST_IMAGE_SIZE
    assert (out.width, out.height, out.encoding) == (w, h + 2 * LEGEND_ROW, "bgr8")  # 320 px: 2 legend rows
    assert out.header.stamp.sec == 1234 and out.header.frame_id == "cam"
    pixels = np.frombuffer(bytes(out.data), np.uint8).reshape(out.height, out.width, 3)
    assert pixels[h:].min() < 50 and pixels[h:].max() == 255  # the legend: text on white


def test_publish_masks_needs_a_structvpr_pp_model(tmp_path):
    pytest.importorskip("rclpy")
    params = write_params(
        tmp_path / "p.yaml",
        {"map_path": str(tmp_path / "map"), "mode": "mapping", "device": "cpu", "publish_masks": True},
    )
    r = subprocess.run(
        [sys.executable, "-m", "structvpr_ros.vpr_node", "--ros-args", "--params-file", str(params)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "parameter 'publish_masks'" in r.stderr and "StructVPR++" in r.stderr, r.stderr
