"""scripts/demo.py on a folder-format split (database/, queries/, @east@north@ names), over real DDS.

The demo builds a map of the split's database folder with `structvpr build-map`, starts the
node, replays the query folder through it and compares with `structvpr query`; its Recall@1
must equal `structvpr eval`'s on the same split, model and input size. The set: 8 real Corridor
places (every 5th frame; the reference pass as database/, the query pass as queries/), 64x32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest
from ros_helpers import REPO

SIZE = (64, 32)


@pytest.fixture(scope="module")
def folder_split(tmp_path_factory, corridor):
    root = tmp_path_factory.mktemp("folder-demo")
    for kind, src in (("database", "ref"), ("queries", "query")):
        frames = sorted((corridor / src).iterdir())
        (root / "val" / kind).mkdir(parents=True)
        for place in range(8):
            image = cv2.resize(cv2.imread(str(frames[place * 5])), SIZE, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / "val" / kind / f"@{20.0 * place:.2f}@0.00@{kind}-{place:03d}.png"), image)
    return root


def test_demo_answers_a_folder_split_as_eval_scores_it(folder_split, tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not installed (run inside install/setup.bash)")
    pytest.importorskip("structvpr_msgs.msg", reason="structvpr_msgs is not built (source install/setup.bash)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    size = [str(v) for v in SIZE]
    demo_cmd = [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(tmp_path / "demo")]
    demo_cmd += [
        "--data",
        str(folder_split),
        "--format",
        "folder",
        "--split",
        "val",
        "--size",
        *size,
        "--device",
        "cpu",
    ]
    demo = subprocess.run(demo_cmd, capture_output=True, text=True, env=env, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    totals = json.loads((tmp_path / "demo" / "results.json").read_text())["totals"]
    assert totals["queries"] == totals["answered"] == 8 and totals["database"] == 8
    assert totals["recall@1"] == totals["offline_recall@1"]
    eval_cmd = [sys.executable, "-m", "structvpr_core.cli", "eval", "--dataset", str(folder_split), "--split", "val"]
    eval_cmd += [
        "--size",
        *size,
        "--device",
        "cpu",
        "--no-cache",
        "--no-progress",
        "--json",
        str(tmp_path / "eval.json"),
    ]
    ev = subprocess.run(eval_cmd, capture_output=True, text=True, env=env, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    recall = json.loads((tmp_path / "eval.json").read_text())["recall"]
    assert totals["recall@1"] == pytest.approx(recall["1"]) and totals["recall@5"] == pytest.approx(recall["5"])
