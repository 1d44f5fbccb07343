"""Query degradations: the spec parser, determinism, and the effect of each step on real images."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from structvpr_core.degrade import (
    Degradation,
    DegradationSet,
    degrade,
    parse_degradation,
    parse_degradation_set,
    video_available,
)
from structvpr_core.errors import ConfigError, ImageError
from structvpr_core.images import read_image, resize_image

needs_av = pytest.mark.skipif(not video_available(), reason="PyAV (pip install av) is not installed")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def ref_images(corridor) -> list[np.ndarray]:
    """Five real Corridor reference images (160×120)."""
    paths = sorted((corridor / "ref").glob("*.jpg"))[::10][:5]
    assert len(paths) == 5
    return [read_image(p) for p in paths]


@pytest.fixture(scope="module")
def vga(ref_images) -> np.ndarray:
    """A 640×480 image with structure at several scales (a real image upscaled, plus a fine grating)."""
    image = resize_image(ref_images[0], (640, 480)).astype(np.int16)
    image[:, ::2] += 20
    return np.clip(image, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("", "none"),
        ("none", "none"),
        ("  NONE ", "none"),
        ("size=160x120,jpeg=10", "size=160x120,jpeg=10"),
        (" size = 160X120 , JPEG = 10 ", "size=160x120,jpeg=10"),
        ("scale=0.25,interp=area", "scale=0.25,interp=area"),
        ("scale=0.250", "scale=0.25"),
        ("scale=2", "scale=2.0"),
        ("scale=0.25..0.75", "scale=0.25..0.75"),
        ("jpeg=30", "jpeg=30"),
        ("jpeg=10..50", "jpeg=10..50"),
        ("jpeg=30..30", "jpeg=30"),
        ("gray", "gray"),
        ("bits=4", "bits=4"),
        ("h264=qp:40", "h264=qp:40"),
        ("h265=QP:30..48", "h265=qp:30..48"),
        ("size=320x240,interp=linear,jpeg=95", "size=320x240,interp=linear,jpeg=95"),
        ("jpeg=50,size=80x60,jpeg=50,gray", "jpeg=50,size=80x60,jpeg=50,gray"),
    ],
)
def test_parse_gives_back_the_canonical_spec(spec, canonical):
    parsed = parse_degradation(spec, check_backends=False)
    assert str(parsed) == canonical
    assert parse_degradation(canonical, check_backends=False) == parsed
    assert parse_degradation(parsed) is parsed


def test_none_and_empty_are_the_identity():
    for spec in (None, "", "none"):
        assert parse_degradation(spec).is_identity
    assert not parse_degradation("gray").is_identity


@pytest.mark.parametrize(
    "spec, message",
    [
        ("foo=3", r"bad token 'foo=3': unknown key 'foo'; allowed: size=WxH, scale=F .*jpeg=Q \(1\.\.100\)"),
        ("size=160x120,blur", r"bad token 'blur': unknown key 'blur'; allowed: size=WxH"),
        ("size=160x", r"bad token 'size=160x': size takes WxH with W, H in 1\.\.16384"),
        ("size=0x120", r"bad token 'size=0x120': size takes WxH"),
        ("scale=0", r"bad token 'scale=0': scale must lie in \(0\.0, 4\.0\]"),
        ("scale=5", r"bad token 'scale=5': scale must lie in"),
        ("scale=big", r"bad token 'scale=big': scale must be a number or a range LO\.\.HI"),
        ("jpeg=0", r"bad token 'jpeg=0': JPEG quality must lie in 1\.\.100"),
        ("jpeg=101", r"JPEG quality must lie in 1\.\.100"),
        ("jpeg=1.5", r"bad token 'jpeg=1.5': JPEG quality must be an integer or a range LO\.\.HI in 1\.\.100"),
        ("jpeg=50..10", r"bad token 'jpeg=50..10': JPEG quality must lie in 1\.\.100 \(with LO ≤ HI\)"),
        ("jpeg", r"bad token 'jpeg': 'jpeg' needs a value"),
        ("jpeg=", r"'jpeg' needs a value"),
        ("bits=9", r"bad token 'bits=9': bits must lie in 1\.\.8"),
        ("gray=1", r"bad token 'gray=1': 'gray' takes no value"),
        ("none,jpeg=10", r"bad token 'none': 'none' must stand alone"),
        ("h264=40", r"bad token 'h264=40': h264 takes qp:QP with QP in 0\.\.51"),
        ("h265=qp:52", r"bad token 'h265=qp:52': QP must lie in 0\.\.51"),
        ("interp=area", r"bad token 'interp=area': interp must directly follow a size= or scale= step"),
        ("jpeg=10,interp=area", r"interp must directly follow"),
        ("scale=0.5,interp=area,interp=cubic", r"bad token 'interp=cubic': interp must directly follow"),
        ("scale=0.5,interp=fast", r"bad token 'interp=fast': interp must be one of area\|linear\|cubic\|nearest"),
    ],
)
def test_bad_specs_fail_on_one_line_naming_the_token(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_degradation(spec, check_backends=False)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"degradation spec '{spec}'")


# ------------------------------------------------------------------------------------------------ determinism


def test_random_spec_is_deterministic_under_a_seed(ref_images):
    spec = parse_degradation("scale=0.3..0.9,jpeg=10..60,bits=3..8")
    image = ref_images[0]
    first = spec.apply(image, np.random.default_rng(7))
    again = spec.apply(image, np.random.default_rng(7))
    assert np.array_equal(first, again)
    resolved = spec.resolve(np.random.default_rng(7))
    assert not resolved.is_random and np.array_equal(resolved.apply(image), first)
    drawn = {str(spec.resolve(np.random.default_rng(seed))) for seed in range(10)}
    assert len(drawn) == 10, drawn  # the seed matters


def test_random_spec_needs_a_generator(ref_images):
    with pytest.raises(ConfigError, match=r"'jpeg=10\.\.50' draws random values: apply\(\) needs"):
        parse_degradation("jpeg=10..50").apply(ref_images[0])


def test_fixed_spec_needs_no_generator_and_repeats(ref_images):
    spec = parse_degradation("size=80x60,jpeg=20")
    assert not spec.is_random
    assert np.array_equal(spec.apply(ref_images[1]), degrade(ref_images[1], "size=80x60,jpeg=20"))


# ------------------------------------------------------------------------------------------------ steps


def test_identity_returns_the_same_pixels_in_a_new_array(ref_images):
    image = ref_images[2]
    for spec in ("none", ""):
        out = degrade(image, spec)
        assert out is not image and out.dtype == np.uint8 and np.array_equal(out, image)
    same_size = degrade(image, "size=160x120")
    assert same_size is not image and np.array_equal(same_size, image)


def test_jpeg_quality_lowers_psnr_monotonically(ref_images):
    for image in ref_images:
        scores = [psnr(image, degrade(image, f"jpeg={q}")) for q in (10, 30, 50, 90)]
        assert scores == sorted(scores) and scores[0] + 5 < scores[-1], scores
        assert degrade(image, "jpeg=10").shape == image.shape


@pytest.mark.parametrize(
    "spec, shape",
    [
        ("size=160x120", (120, 160, 3)),
        ("size=80x60,jpeg=10", (60, 80, 3)),
        ("scale=0.25", (120, 160, 3)),
        ("scale=0.75,interp=linear", (360, 480, 3)),  # VPR4LQQ's 480×360
        ("scale=0.375,interp=cubic", (180, 240, 3)),  # VPR4LQQ's 240×180
        ("scale=0.5,interp=nearest,scale=2.0", (480, 640, 3)),
        ("size=1x1", (1, 1, 3)),
    ],
)
def test_size_and_scale_shapes(vga, spec, shape):
    out = degrade(vga, spec)
    assert out.shape == shape and out.dtype == np.uint8


def test_scale_rounds_half_up_and_never_to_zero():
    image = np.zeros((77, 101, 3), np.uint8)
    assert degrade(image, "scale=0.5").shape == (39, 51, 3)
    assert degrade(image, "scale=0.001").shape == (1, 1, 3)


def test_default_interpolation_is_the_package_resize(vga):
    assert np.array_equal(degrade(vga, "size=160x120"), resize_image(vga, (160, 120)))
    assert not np.array_equal(degrade(vga, "size=160x120"), degrade(vga, "size=160x120,interp=nearest"))
    up = degrade(vga[:4, :4], "scale=2,interp=nearest")
    assert np.array_equal(up, np.repeat(np.repeat(vga[:4, :4], 2, axis=0), 2, axis=1))


def test_steps_apply_in_the_order_written(ref_images):
    image = ref_images[3]
    a, b = degrade(image, "size=80x60,jpeg=10"), degrade(image, "jpeg=10,size=80x60")
    assert a.shape == b.shape == (60, 80, 3) and not np.array_equal(a, b)


def test_gray_gives_equal_channels(ref_images):
    out = degrade(ref_images[0], "gray")
    assert out.shape == ref_images[0].shape
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert len(np.unique(ref_images[0][..., 0].astype(int) - ref_images[0][..., 2])) > 1  # the input was colour


def test_bit_depth_reduction():
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    assert np.array_equal(degrade(ramp, "bits=8"), ramp)
    assert np.unique(degrade(ramp, "bits=1")).tolist() == [0, 255]
    four = np.unique(degrade(ramp, "bits=4"))
    assert len(four) == 16 and four[0] == 0 and four[-1] == 255
    assert np.all(np.diff(degrade(ramp, "bits=3")[0, :, 0].astype(int)) >= 0)  # order preserved


def test_input_is_normalised_like_everywhere_else():
    grey = np.full((6, 8), 100, np.uint8)
    assert degrade(grey, "jpeg=90").shape == (6, 8, 3)
    with pytest.raises(ImageError):
        degrade(np.zeros((0, 4, 3), np.uint8), "gray")


# ------------------------------------------------------------------------------------------------ sets


def test_degradation_set_round_trip_and_sampling():
    text = "none|size=160x120,jpeg=30|jpeg=10"
    choices = parse_degradation_set(text)
    assert isinstance(choices, DegradationSet) and str(choices) == text
    assert parse_degradation_set(["none", "size=160x120,jpeg=30", "jpeg=10"]) == choices
    assert parse_degradation_set(str(choices)) == choices
    picks = [str(choices.sample(np.random.default_rng(3))) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same pick
    rng = np.random.default_rng(0)
    assert {str(choices.sample(rng)) for _ in range(60)} == {"none", "size=160x120,jpeg=30", "jpeg=10"}
    assert all(isinstance(c, Degradation) for c in choices.choices)


def test_degradation_set_apply_is_deterministic(ref_images):
    choices = parse_degradation_set(["scale=0.5,jpeg=10..90", "gray,bits=2..5"])
    outs = [[choices.apply(im, np.random.default_rng(11)) for im in ref_images] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*outs, strict=True))


def test_degradation_set_errors():
    with pytest.raises(ConfigError, match="degradation set is empty"):
        parse_degradation_set([])
    with pytest.raises(ConfigError, match=r"bad token 'jpeg=0'"):
        parse_degradation_set("none|jpeg=0")


# ------------------------------------------------------------------------------------------------ video


def test_missing_pyav_is_a_one_line_config_error(monkeypatch, ref_images):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    assert not video_available()
    with pytest.raises(ConfigError, match=r"^h264=/h265= degradations need PyAV.*: pip install av$"):
        parse_degradation("jpeg=50,h265=qp:40")
    spec = parse_degradation("h264=qp:40", check_backends=False)
    with pytest.raises(ConfigError, match="pip install av"):
        spec.apply(ref_images[0])


@needs_av
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_video_reencode_shape_and_psnr_drops_with_qp(codec, ref_images):
    for image in ref_images[:3]:
        scores = []
        for qp in (15, 30, 45):
            out = degrade(image, f"{codec}=qp:{qp}")
            assert out.shape == image.shape and out.dtype == np.uint8
            scores.append(psnr(image, out))
        assert all(np.isfinite(scores)) and scores[0] > scores[1] > scores[2] > 15.0, scores


@needs_av
@pytest.mark.parametrize("codec", ["h264", "h265"])
@pytest.mark.parametrize("hw", [(23, 37), (3, 5), (120, 161)])
def test_video_handles_odd_and_tiny_sizes(codec, hw):
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    assert degrade(image, f"{codec}=qp:30").shape == (*hw, 3)


@needs_av
def test_video_is_deterministic(ref_images):
    spec = parse_degradation("h265=qp:30..48")
    a = spec.apply(ref_images[4], np.random.default_rng(5))
    b = spec.apply(ref_images[4], np.random.default_rng(5))
    assert np.array_equal(a, b)
