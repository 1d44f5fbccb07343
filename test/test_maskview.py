"""`structvpr masks`: a StructVPR++ student's soft label masks drawn over real Corridor frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from structvpr_core.checkpoint import save_checkpoint
from structvpr_core.cli import main
from structvpr_core.errors import ConfigError
from structvpr_core.extractor import Extractor
from structvpr_core.images import list_images, read_image
from structvpr_core.maskview import LABEL_COLOURS, LEGEND_ROW, label_names, render_overlay
from structvpr_core.models import PP_RGB_ARCHITECTURE, RGB_ARCHITECTURE, build_pp_student, build_rgb_branch
from structvpr_core.slme import label_retrieval_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("masks")
    torch.manual_seed(0)
    pp = build_pp_student(pretrained=True, weights=label_retrieval_weights(6)).eval()
    save_checkpoint(d / "pp.pt", pp, architecture=PP_RGB_ARCHITECTURE, descriptor_dim=832, config={})
    plain = build_rgb_branch(pretrained=False).eval()
    save_checkpoint(d / "plain.pt", plain, architecture=RGB_ARCHITECTURE, descriptor_dim=448, config={})
    return d


def test_render_overlay_blends_the_label_colours():
    bgr = np.full((32, 48, 3), 100, np.uint8)
    masks = np.zeros((6, 2, 3), np.float32)
    masks[2] = 1.0  # all sky
    out = render_overlay(bgr, masks, alpha=0.5, legend=False)
    sky_bgr = np.array(LABEL_COLOURS["sky"][::-1], np.float32)
    assert out.shape == (32, 48, 3) and np.abs(out.astype(np.float32) - (50 + 0.5 * sky_bgr)).max() <= 1
    half = np.zeros((3, 2, 3), np.float32)
    half[0], half[2] = 0.5, 0.5  # C = 3: sky_ground / static, evenly
    mixed = render_overlay(bgr, half, alpha=1.0, legend=False)
    want = 0.5 * np.array(LABEL_COLOURS["sky_ground"][::-1]) + 0.5 * np.array(LABEL_COLOURS["static"][::-1])
    assert np.abs(mixed[10, 10].astype(np.float32) - want).max() <= 1
    assert render_overlay(bgr, masks).shape == (32 + 6 * LEGEND_ROW, 48, 3)  # narrow: one label per legend row
    assert label_names(6) == ["vegetation", "dynamic", "sky", "ground", "buildings", "other"]
    with pytest.raises(ConfigError, match="alpha"):
        render_overlay(bgr, masks, alpha=2.0)


def test_masks_command_on_corridor_frames(ckpts, corridor, tmp_path, capsys):
    frames = list_images(corridor / "query")[:3]
    out = tmp_path / "overlays"
    args = ["masks", *map(str, frames), "--checkpoint", str(ckpts / "pp.pt"), "--size", "320", "240"]
    code = main([*args, "--out", str(out), "--device", "cpu", "--backend", "torch", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "wrote 3 overlays" in printed
    pngs = sorted(out.glob("*_masks.png"))
    assert [p.name for p in pngs] == [f"{f.stem}_masks.png" for f in frames]
    picture = cv2.imread(str(pngs[0]))
    assert picture.shape == (240 + 2 * LEGEND_ROW, 320, 3)  # 320 px: three labels per legend row
    # the picture is the image blended with the mask-weighted label colours
    ex = Extractor(ckpts / "pp.pt", backend="torch", image_size=(320, 240))
    image = ex.prepare(read_image(frames[0]))
    masks = ex.masks([image])[0]
    assert np.array_equal(picture, render_overlay(image, masks))
    assert np.abs(picture[:240].astype(int) - image.astype(int)).mean() > 5  # colour was added


def test_masks_of_a_plain_structvpr_model_is_a_one_line_error(ckpts, corridor, tmp_path, capsys):
    frame = str(list_images(corridor / "query")[0])
    code = main(["masks", frame, "--checkpoint", str(ckpts / "plain.pt"), "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "has no label masks" in err and "StructVPR++" in err


def test_help_explains(capsys):
    with pytest.raises(SystemExit):
        main(["masks", "--help"])
    text = capsys.readouterr().out
    assert "no" in text and "segmentation network" in text and "--checkpoint" in text
