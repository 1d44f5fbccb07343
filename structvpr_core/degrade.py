"""Query degradations: one spec string, shared by eval, training and bench.

A robot's map is built from good images; its queries may arrive downscaled, JPEG-compressed or
re-encoded by a video link. A *degradation spec* says how to turn a good image into such a
query. Its syntax (our design):

    spec   := "" | "none" | step ("," step)*          steps apply in the order written
    step   := "size=" W "x" H                          resize to exactly W×H pixels (1..16384)
            | "scale=" F                               resize by factor F, 0 < F ≤ 4
            | "interp=" area|linear|cubic|nearest      interpolation of the size/scale step just before it
            | "jpeg=" Q                                JPEG round trip at quality Q (1..100), OpenCV
            | "gray"                                   greyscale, kept as 3 equal channels
            | "bits=" N                                N bits per channel (1..8), like a low-depth PNG
            | "h264=qp:" QP | "h265=qp:" QP            one frame through H.264 / H.265 at QP 0..51 (PyAV)

Any number (F, Q, N, QP) may be a range ``LO..HI``, drawn uniformly per image from the
``np.random.Generator`` passed to ``apply``: ``jpeg=10..50``, ``h265=qp:30..48``. Without a
range, a degradation is deterministic and needs no generator. Without ``interp``, shrinking uses
area averaging and enlarging bilinear interpolation, as ``images.resize_image`` does.

The output has the degraded size: a low-resolution query reaches the model when the extractor
resizes it back to its input size (downscale, then upscale). Training samples from a set of
specs, written as a list or joined by ``|``: ``"none|size=160x120,jpeg=30|jpeg=10"``; its
``sample(rng)`` picks one per image or batch.

For reference, VPR4LQQ degraded 640×480 images by bilinear downscaling to 480×360, 320×240 and
240×180 (``size=320x240,interp=linear,jpeg=95``), and re-encoded video with H.265 at QP 30–48
(``h265=qp:30..48``).

Video re-encoding needs the optional PyAV wheel (``pip install av``), which ships its own FFmpeg
with libx264 and libx265. The frame goes through yuv420p; a single frame is an intra frame.
"""

from __future__ import annotations

import fractions
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Self

import cv2
import numpy as np

from .errors import ConfigError
from .images import resize_image, to_bgr8

MAX_SIDE = 16384
INTERPOLATIONS = {name: getattr(cv2, f"INTER_{name.upper()}") for name in ("area", "linear", "cubic", "nearest")}
VIDEO_CODECS = {"h264": ("libx264", "h264"), "h265": ("libx265", "hevc")}  # key: (encoder, decoder)
ALLOWED = (
    "size=WxH, scale=F (0<F≤4), interp=area|linear|cubic|nearest, jpeg=Q (1..100), gray, "
    "bits=N (1..8), h264=qp:QP, h265=qp:QP (QP 0..51), none; numbers may be ranges LO..HI"
)
_VIDEO_MIN_SIDE = 16  # libx265 refuses frames smaller than this


@dataclass(frozen=True)
class Range:
    """A number ``lo..hi`` drawn uniformly (integers: inclusive); a fixed value when ``lo == hi``."""

    lo: int | float
    hi: int | float

    @property
    def is_random(self) -> bool:
        return self.lo != self.hi

    def sample(self, rng: np.random.Generator) -> Range:
        """A fixed range holding one value drawn from ``rng`` (itself when already fixed)."""
        if not self.is_random:
            return self
        if isinstance(self.lo, int):
            value: int | float = int(rng.integers(self.lo, self.hi + 1))
        else:
            value = float(rng.uniform(self.lo, self.hi))
        return Range(value, value)

    def __str__(self) -> str:
        return f"{self.lo!r}..{self.hi!r}" if self.is_random else repr(self.lo)


class _Step:
    """Base of the steps: ``RANGED`` names the one field that may be a random ``Range``."""

    RANGED: ClassVar[str] = ""

    @property
    def is_random(self) -> bool:
        ranged = getattr(self, self.RANGED) if self.RANGED else None
        return ranged is not None and ranged.is_random

    def resolve(self, rng: np.random.Generator) -> Self:
        """This step with its range replaced by a value drawn from ``rng``."""
        return replace(self, **{self.RANGED: getattr(self, self.RANGED).sample(rng)}) if self.is_random else self


@dataclass(frozen=True)
class Resize(_Step):
    """Resize to ``size`` = (W, H) or by ``scale``; ``interp`` None: area to shrink, bilinear to enlarge."""

    size: tuple[int, int] | None = None
    scale: Range | None = None
    interp: str | None = None
    RANGED: ClassVar[str] = "scale"

    def target_size(self, image: np.ndarray) -> tuple[int, int]:
        """The output (W, H) for ``image``."""
        if self.size is not None:
            return self.size
        h, w = image.shape[:2]
        return max(1, int(w * self.scale.lo + 0.5)), max(1, int(h * self.scale.lo + 0.5))  # half rounds up

    def apply(self, image: np.ndarray) -> np.ndarray:
        size = self.target_size(image)
        if self.interp is None:
            return resize_image(image, size)
        if size == (image.shape[1], image.shape[0]):
            return image
        return cv2.resize(image, size, interpolation=INTERPOLATIONS[self.interp])

    def __str__(self) -> str:
        head = f"size={self.size[0]}x{self.size[1]}" if self.size is not None else f"scale={self.scale}"
        return head if self.interp is None else f"{head},interp={self.interp}"


@dataclass(frozen=True)
class Jpeg(_Step):
    """JPEG encode and decode at ``quality`` (OpenCV's encoder, 4:2:0)."""

    quality: Range
    RANGED: ClassVar[str] = "quality"

    def apply(self, image: np.ndarray) -> np.ndarray:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality.lo])
        if not ok:  # pragma: no cover - OpenCV fails only on invalid input, which to_bgr8 excludes
            raise RuntimeError(f"OpenCV could not JPEG-encode a {image.shape} image")
        return cv2.imdecode(data, cv2.IMREAD_COLOR)

    def __str__(self) -> str:
        return f"jpeg={self.quality}"


@dataclass(frozen=True)
class Gray(_Step):
    """Greyscale (OpenCV's BT.601 weights), replicated to three channels."""

    def apply(self, image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)

    def __str__(self) -> str:
        return "gray"


@dataclass(frozen=True)
class Bits(_Step):
    """Keep the top ``bits`` bits of each channel, re-expanded to the full 0..255 range."""

    bits: Range
    RANGED: ClassVar[str] = "bits"

    def apply(self, image: np.ndarray) -> np.ndarray:
        levels = (1 << self.bits.lo) - 1
        codes = (image >> (8 - self.bits.lo)).astype(np.uint16)
        return ((codes * 255 + levels // 2) // levels).astype(np.uint8)

    def __str__(self) -> str:
        return f"bits={self.bits}"


@dataclass(frozen=True)
class Video(_Step):
    """One frame encoded with ``codec`` ("h264" or "h265") at constant ``qp``, decoded back (PyAV)."""

    codec: str
    qp: Range
    RANGED: ClassVar[str] = "qp"

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        pad_h, pad_w = max(_VIDEO_MIN_SIDE, h + h % 2) - h, max(_VIDEO_MIN_SIDE, w + w % 2) - w
        padded = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE) if pad_h or pad_w else image
        return np.ascontiguousarray(_video_round_trip(padded, self.codec, self.qp.lo)[:h, :w])

    def __str__(self) -> str:
        return f"{self.codec}=qp:{self.qp}"


def _import_av():
    """PyAV, or a one-line ConfigError saying how to install it."""
    try:
        import av
    except ImportError as exc:
        raise ConfigError("h264=/h265= degradations need PyAV, an optional extra: pip install av") from exc
    return av


def video_available() -> bool:
    """True when PyAV is importable (video degradations can run)."""
    try:
        _import_av()
    except ConfigError:
        return False
    return True


def _video_round_trip(image: np.ndarray, codec: str, qp: int) -> np.ndarray:
    """Encode one even-sized BGR frame as an intra frame and decode it back."""
    av = _import_av()
    encoder_name, decoder_name = VIDEO_CODECS[codec]
    encoder = av.CodecContext.create(encoder_name, "w")
    encoder.width, encoder.height = image.shape[1], image.shape[0]
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, 25)
    encoder.thread_count = 1  # deterministic, and polite on a shared CPU
    if codec == "h264":
        encoder.options = {"qp": str(qp)}
    else:
        encoder.options = {"x265-params": f"qp={qp}:log-level=error:pools=none:frame-threads=1"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    frame.pts = 0
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    decoder = av.CodecContext.create(decoder_name, "r")
    decoder.thread_count = 1
    frames = [f for packet in [*packets, None] for f in decoder.decode(packet)]
    return frames[0].to_ndarray(format="bgr24")


Step = Resize | Jpeg | Gray | Bits | Video  # str(step) is its canonical token


@dataclass(frozen=True)
class Degradation:
    """A parsed spec: steps applied in order; ``str()`` gives back the canonical spec."""

    steps: tuple[Step, ...] = ()

    @property
    def is_identity(self) -> bool:
        return not self.steps

    @property
    def is_random(self) -> bool:
        return any(step.is_random for step in self.steps)

    @property
    def needs_video(self) -> bool:
        return any(isinstance(step, Video) for step in self.steps)

    def resolve(self, rng: np.random.Generator) -> Degradation:
        """The same spec with every range replaced by a value drawn from ``rng`` (in step order)."""
        return Degradation(tuple(step.resolve(rng) for step in self.steps))

    def apply(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Degrade an image (H×W×3 uint8 BGR, or anything ``to_bgr8`` takes) into a new uint8 BGR array."""
        if self.is_random and rng is None:
            raise ConfigError(f"degradation '{self}' draws random values: apply() needs an np.random.Generator")
        steps = self.resolve(rng).steps if self.is_random else self.steps
        out = to_bgr8(image, name="degradation input")
        for step in steps:
            out = step.apply(out)
        return out.copy() if out is image else out

    def apply_seeded(self, image: np.ndarray, seed: int, index: int) -> np.ndarray:
        """``apply`` for image number ``index`` of a query set: its random draws (if any) come from
        ``np.random.default_rng([seed, index])``, so they do not depend on order or batching."""
        return self.apply(image, np.random.default_rng([int(seed), int(index)]) if self.is_random else None)

    def __str__(self) -> str:
        return ",".join(str(step) for step in self.steps) or "none"


@dataclass(frozen=True)
class DegradationSet:
    """Degradations to sample from, one per image or batch (training); ``str()`` joins them with ``|``."""

    choices: tuple[Degradation, ...]

    def sample(self, rng: np.random.Generator) -> Degradation:
        """One of the choices, uniformly."""
        return self.choices[int(rng.integers(len(self.choices)))]

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade ``image`` with a sampled choice (its ranges drawn from the same ``rng``)."""
        return self.sample(rng).apply(image, rng)

    def __str__(self) -> str:
        return "|".join(str(choice) for choice in self.choices)


_NUMBER = r"[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?"
_RANGE = re.compile(rf"({_NUMBER})(?:\.\.({_NUMBER}))?")


def _bad(spec: str, token: str, why: str) -> ConfigError:
    return ConfigError(f"degradation spec '{spec}': bad token '{token}': {why}")


def _range(spec: str, token: str, text: str, lo: float, hi: float, what: str) -> Range:
    """``N`` or ``LO..HI`` within [lo, hi]: integers when ``lo`` is an int, else reals above ``lo``."""
    integer = isinstance(lo, int)
    kind = "an integer" if integer else "a number"
    bounds = f"{lo}..{hi}" if integer else f"({lo}, {hi}]"
    match = _RANGE.fullmatch(text)
    if not match or (integer and not all(g is None or g.isdigit() for g in match.groups())):
        raise _bad(spec, token, f"{what} must be {kind} or a range LO..HI in {bounds}")
    cast = int if integer else float
    first = cast(match.group(1))
    last = cast(match.group(2)) if match.group(2) is not None else first
    if not (lo <= first if integer else lo < first) or not first <= last <= hi:
        raise _bad(spec, token, f"{what} must lie in {bounds} (with LO ≤ HI)")
    return Range(first, last)


def _size(spec: str, token: str, text: str) -> tuple[int, int]:
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", text)
    if not match or not all(1 <= int(v) <= MAX_SIDE for v in match.groups()):
        raise _bad(spec, token, f"size takes WxH with W, H in 1..{MAX_SIDE} (e.g. size=160x120)")
    return int(match.group(1)), int(match.group(2))


def _interp(spec: str, token: str, value: str | None, previous: Step | None) -> Resize:
    """``previous`` (a size/scale step without interp yet) with its interpolation set."""
    if value not in INTERPOLATIONS:
        raise _bad(spec, token, f"interp must be one of {'|'.join(INTERPOLATIONS)}")
    if not isinstance(previous, Resize) or previous.interp is not None:
        raise _bad(spec, token, "interp must directly follow a size= or scale= step (once)")
    return replace(previous, interp=value)


def _step(spec: str, token: str, key: str, value: str | None) -> Step:
    """The step for one ``key[=value]`` token (``none`` and ``interp`` excepted)."""
    if key in ("gray", "none") and value is not None:
        raise _bad(spec, token, f"'{key}' takes no value")
    if key == "gray":
        return Gray()
    if key not in ("size", "scale", "jpeg", "bits", *VIDEO_CODECS):
        raise _bad(spec, token, f"unknown key '{key}'; allowed: {ALLOWED}")
    if not value:
        raise _bad(spec, token, f"'{key}' needs a value")
    if key == "size":
        return Resize(size=_size(spec, token, value))
    if key == "scale":
        return Resize(scale=_range(spec, token, value, 0.0, 4.0, "scale"))
    if key == "jpeg":
        return Jpeg(_range(spec, token, value, 1, 100, "JPEG quality"))
    if key == "bits":
        return Bits(_range(spec, token, value, 1, 8, "bits"))
    if not value.startswith("qp:"):
        raise _bad(spec, token, f"{key} takes qp:QP with QP in 0..51 or a range (e.g. {key}=qp:40)")
    return Video(key, _range(spec, token, value[3:], 0, 51, "QP"))


def parse_degradation(spec: str | Degradation | None, *, check_backends: bool = True) -> Degradation:
    """Parse a spec string (see the module docstring); ``None``, ``""`` and ``"none"`` are the identity.

    ``check_backends``: fail now, with a one-line ``ConfigError``, if a video step needs PyAV and it
    is missing (rather than at the first image).
    """
    if isinstance(spec, Degradation):
        return spec
    text = (spec or "").strip()
    tokens = [t.strip() for t in text.split(",")] if text else []
    steps: list[Step] = []
    for token in tokens:
        key, eq, value = (part.strip().lower() for part in token.partition("="))
        if key == "none" and not eq and len(tokens) > 1:
            raise _bad(text, token, "'none' must stand alone")
        if key == "interp":
            steps[-1] = _interp(text, token, value if eq else None, steps[-1] if steps else None)
        elif key != "none" or eq:
            steps.append(_step(text, token, key, value if eq else None))
    degradation = Degradation(tuple(steps))
    if check_backends and degradation.needs_video:
        _import_av()
    return degradation


def parse_degradation_set(specs: str | Sequence[str], *, check_backends: bool = True) -> DegradationSet:
    """Parse a set of specs to sample from: a list of spec strings, or one string joined by ``|``."""
    items = specs.split("|") if isinstance(specs, str) else list(specs)
    if not items:
        raise ConfigError("degradation set is empty: give at least one spec (use 'none' for the identity)")
    return DegradationSet(tuple(parse_degradation(item, check_backends=check_backends) for item in items))


def degrade(image: np.ndarray, spec: str | Degradation, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply a spec (string or parsed) to one image; see ``Degradation.apply``."""
    return parse_degradation(spec).apply(image, rng)
