"""GeometricVerifier on real image pairs (Debian opencv-doc: graf, leuven, home, building)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from structvpr_core.errors import ConfigError
from structvpr_core.images import read_image
from structvpr_core.verify import GeometricVerifier, LocalFeatures, VerifyConfig


@pytest.fixture(scope="module")
def sift():
    return GeometricVerifier()


@pytest.fixture(scope="module")
def imgs(opencv_data):
    names = ("graf1.png", "graf3.png", "leuvenA.jpg", "leuvenB.jpg", "home.jpg", "building.jpg")
    return {n.split(".")[0]: read_image(opencv_data / n) for n in names}


@pytest.fixture(scope="module")
def feats(sift, imgs):
    return {k: sift.extract_features(v) for k, v in imgs.items()}


def true_homography(opencv_data):
    fs = cv2.FileStorage(str(opencv_data / "H1to3p.xml"), cv2.FILE_STORAGE_READ)
    H = fs.getNode("H13").mat()
    fs.release()
    assert H is not None and H.shape == (3, 3)
    return H


def test_graf_pair_many_inliers_and_the_true_homography(sift, feats, opencv_data):
    r = sift.verify(feats["graf1"], feats["graf3"])
    assert r.inliers >= 150, r
    # Map a grid of graf1 pixels with the estimate and with the dataset's ground truth.
    H_true = true_homography(opencv_data)
    xs, ys = np.meshgrid(np.linspace(200, 600, 5), np.linspace(150, 500, 5))
    pts = np.stack([xs.ravel(), ys.ravel()], 1).reshape(-1, 1, 2)
    err = np.linalg.norm(cv2.perspectiveTransform(pts, r.model) - cv2.perspectiveTransform(pts, H_true), axis=2)
    assert np.median(err) < 3.0, f"median disagreement with H1to3p: {np.median(err):.2f} px"


def test_leuven_pair_many_inliers(sift, feats):
    assert sift.verify(feats["leuvenA"], feats["leuvenB"]).inliers >= 100


@pytest.mark.parametrize("a,b", [("graf1", "leuvenB"), ("home", "building"), ("leuvenA", "home")])
def test_unrelated_pairs_few_inliers(sift, feats, a, b):
    assert sift.verify(feats[a], feats[b]).inliers < 20


def test_orb_fast_option_and_fundamental_matrix(imgs):
    orb_h = GeometricVerifier(VerifyConfig(feature="orb"))
    orb_f = GeometricVerifier(VerifyConfig(feature="orb", ransac="fundamental", method="ransac"))
    for v in (orb_h, orb_f):
        good = v.verify(imgs["leuvenA"], imgs["leuvenB"]).inliers
        bad = v.verify(imgs["leuvenA"], imgs["home"]).inliers
        assert good >= 80 and bad < good / 4, (v.config, good, bad)
    r = orb_f.verify(imgs["graf1"], imgs["graf3"])
    # a fundamental matrix has rank 2
    assert r.model is not None and np.linalg.matrix_rank(r.model, tol=1e-6 * np.abs(r.model).max()) == 2


def test_stored_features_give_the_same_result_as_images(sift, imgs, feats):
    stored = LocalFeatures.from_bytes(feats["leuvenB"].to_bytes())
    assert stored.kind == "sift" and stored.descriptors.dtype == np.uint8 and len(stored) == len(feats["leuvenB"])
    assert np.array_equal(stored.keypoints, feats["leuvenB"].keypoints)
    a = sift.verify(imgs["leuvenA"], stored).inliers
    b = sift.verify(imgs["leuvenA"], imgs["leuvenB"]).inliers
    assert abs(a - b) <= 0.05 * b  # RANSAC is randomised; the matches are identical


def test_relative_pose_with_intrinsics(sift, feats, imgs):
    h, w = imgs["leuvenA"].shape[:2]
    K = np.array([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1]])
    r = sift.verify(feats["leuvenA"], feats["leuvenB"], K=K)
    assert r.R is not None and r.t is not None
    assert np.allclose(r.R @ r.R.T, np.eye(3), atol=1e-6) and np.isclose(np.linalg.det(r.R), 1.0)
    assert np.isclose(np.linalg.norm(r.t), 1.0)
    assert np.degrees(np.arccos(np.clip((np.trace(r.R) - 1) / 2, -1, 1))) < 45  # same street


def test_small_images_are_upscaled_to_the_working_resolution(sift, imgs):
    small = cv2.resize(imgs["leuvenA"], (160, 120), interpolation=cv2.INTER_AREA)
    f = sift.extract_features(small)
    assert f.scale == pytest.approx(2.0) and f.image_size == (160, 120)
    assert f.keypoints[:, 0].max() < 160 and f.keypoints[:, 1].max() < 120  # original coordinates


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [((480, 640, 3), (480, 640, 3)), ((1, 1, 3), (1, 1)), ((5, 7), (480, 640, 3)), ((15, 900, 3), (900, 15, 3))],
)
def test_textureless_and_tiny_images_give_zero_inliers(sift, a_shape, b_shape):
    a, b = np.full(a_shape, 128, np.uint8), np.zeros(b_shape, np.uint8)
    r = sift.verify(a, b)
    assert r.inliers == 0 and r.model is None


def test_config_validation_and_feature_kind_mismatch(feats):
    with pytest.raises(ConfigError, match="feature"):
        GeometricVerifier(VerifyConfig(feature="surf"))
    with pytest.raises(ConfigError, match="ratio"):
        GeometricVerifier(VerifyConfig(ratio=1.5))
    with pytest.raises(ConfigError, match="stored local features are 'sift'"):
        GeometricVerifier(VerifyConfig(feature="orb")).verify(feats["graf1"], feats["graf3"])
