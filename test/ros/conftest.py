"""Fixtures for tests over real DDS (see ros_helpers for the isolated ROS environment)."""

from __future__ import annotations

import os
import shutil

import pytest

# Importing ros_helpers sets the ROS environment variables before any test imports rclpy.
from ros_helpers import CORRIDOR, LOG_DIR, TEST_IMAGE_SIZE, corridor_files


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(LOG_DIR, ignore_errors=True)


def _need_ros():
    pytest.importorskip("rclpy", reason="rclpy is not installed (run inside install/setup.bash)")
    pytest.importorskip("structvpr_msgs.msg", reason="structvpr_msgs is not built (source install/setup.bash)")


@pytest.fixture(scope="session")
def ros_node():
    """An rclpy node in the test process (for publishing and collecting messages)."""
    _need_ros()
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f"structvpr_test_{os.getpid()}")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def corridor_map(tmp_path_factory):
    """A map of corridor/ref at TEST_IMAGE_SIZE, plus the in-process top-5 of every query.

    The in-process results use the same extractor and map search as `structvpr query`:
    the node must reproduce them.
    """
    if not (CORRIDOR / "ground_truth.csv").is_file():
        pytest.fail(f"Corridor data not found at {CORRIDOR} (set STRUCTVPR_CORRIDOR)")
    import torch

    from structvpr_core.extractor import Extractor
    from structvpr_core.mapdb import MapDatabase

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the node processes run beside this one on a small machine
    try:
        refs, queries = corridor_files("ref"), corridor_files("query")
        ex = Extractor(None, device="cpu", image_size=TEST_IMAGE_SIZE, batch_size=8)
        db = MapDatabase.create(ex.fingerprint, ex.dim)
        db.add(
            ex.embed_paths(refs, progress=False),
            [{"stamp": float(i), "source": str(p), "session": "corridor-ref"} for i, p in enumerate(refs)],
        )
        path = tmp_path_factory.mktemp("maps") / "corridor"
        db.save(path)
        hits = db.search(ex.embed_paths(queries, progress=False), 5)
    finally:
        torch.set_num_threads(threads)
    expected = [[db.keyframe(kid).source for kid, _ in row] for row in hits]
    return {"path": path, "refs": refs, "queries": queries, "expected_sources": expected}
