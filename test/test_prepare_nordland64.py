"""scripts/prepare_nordland64.py: the seqslam nordland_trimmed layout to the folder-format set the config reads."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from structvpr_core.data import load_dataset


@pytest.fixture(scope="module")
def source(tmp_path_factory, corridor):
    """1800 frames per season (real Corridor pixels); winter lacks 3 frames, one summer frame is 128x64."""
    src = tmp_path_factory.mktemp("nordland_trimmed")
    frames = [cv2.imread(str(p)) for p in sorted((corridor / "ref").iterdir())[:10]]
    small = [cv2.resize(f, (64, 32), interpolation=cv2.INTER_AREA) for f in frames]
    missing_winter = {5, 1400, 1799}
    for season in ("summer", "winter"):
        (src / season).mkdir()
        for place in range(1800):
            if season == "winter" and place in missing_winter:
                continue
            image = small[place % 10] if place != 7 else cv2.resize(frames[7], (128, 64))
            cv2.imwrite(str(src / season / f"images-{10 * (place + 1):05d}.png"), image)
    return src


def test_layout_names_positions_and_size(source, tmp_path, repo_root):
    out = tmp_path / "nordland64"
    script = repo_root / "scripts" / "prepare_nordland64.py"
    ran = subprocess.run(
        [sys.executable, str(script), "--src", str(source), "--out", str(out)], capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert "1400 database (summer), 1399 queries (winter)" in ran.stdout
    assert "400 database (summer), 398 queries (winter)" in ran.stdout
    val = load_dataset(out, "folder", split="val")
    assert val.database[0].name == "@28000.00@0.00@summer-images-14010.png"
    assert np.allclose(val.db_coords[:, 0], 20.0 * np.arange(1400, 1800))
    # the same place in both seasons is a positive (25 m), the next-but-one is not
    q = next(i for i, p in enumerate(val.queries) if p.name.endswith("-14020.png"))
    assert val.positives[q].tolist() == [0, 1, 2]
    resized = cv2.imread(str(out / "train" / "database" / "@140.00@0.00@summer-images-00080.png"))
    assert resized.shape == (32, 64, 3)


def test_missing_summer_frame_is_an_error(source, tmp_path, repo_root):
    broken = tmp_path / "src"
    (broken / "summer").mkdir(parents=True)
    (broken / "winter").symlink_to(source / "winter")
    for p in (source / "summer").iterdir():
        if p.name != "images-00100.png":
            (broken / "summer" / p.name).symlink_to(p)
    script = repo_root / "scripts" / "prepare_nordland64.py"
    ran = subprocess.run(
        [sys.executable, str(script), "--src", str(broken), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 1 and "images-00100.png: missing" in ran.stderr and "Traceback" not in ran.stderr
