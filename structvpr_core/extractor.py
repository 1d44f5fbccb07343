"""The run-time descriptor extractor: images in, L2-normalised RGB-branch descriptors out.

Only the RGB branch runs at deployment (StructVPR distils the segmentation knowledge into it).
The model is the StructVPR RGB branch (448-d) or the StructVPR++ student (448 + C·d_l, which
also gives soft label masks through ``masks``); the checkpoint says which.
The data flow, one way only::

    image (any kind ``images.to_bgr8`` accepts: grey, colour, alpha, 16-bit, float)
      -> prepare: H×W×3 uint8 BGR at ``image_size`` (W, H; 640×480 as in the paper; INTER_AREA
         when shrinking, bilinear when enlarging)
      -> run_prepared / runner.run: (N, H, W, 3) uint8 BGR -> (N, D) float32, L2-normalised

The runner is the same contract whatever the runtime (``backends/runner.py``); the ImageNet
normalisation happens inside it, with the constants of ``preprocess``.

Backends (``backend=``, see ``backends/providers.py`` for the full table): ``auto`` runs ONNX
Runtime on the CPU (measured ~2× faster than PyTorch here; the ONNX file is exported on first
use and cached by fingerprint, see ``backends/onnx_cache.py``) and PyTorch on CUDA (TensorRT
through ONNX Runtime when installed: untested here, no GPU). ``torch``, ``onnxruntime`` and
``tensorrt`` force one. The model is a checkpoint (``.pt``), the ImageNet initialisation (None),
or an exported ``.onnx`` file (its sidecar gives the fingerprint); ``onnx_model=`` pairs a
checkpoint with a given export (e.g. the int8 one), checked to come from the same weights.

A low-quality-query student (a checkpoint saved with ``query_encoder_for``, or its ONNX export)
exposes ``query_encoder_for``: its teacher's fingerprint at this extractor's input size (None for
any other model). Map checks pass it to ``fingerprint.accepts``: the student may query the maps
its teacher built at that size, and no other.

The ``fingerprint`` is that of the weights and input size, whatever the backend or precision:
a map built with PyTorch is queried with ONNX Runtime, and an int8 export of the same weights
counts as the same model (measured: int8 descriptors stay within cosine ~0.99 of fp32 ones;
``precision`` tells which one runs). See docs/performance.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends.onnx_cache import cached_onnx, trt_cache_dir
from .backends.onnx_format import check_onnx_model, is_onnx_file, read_sidecar
from .backends.providers import available_providers, plan_backend
from .backends.runner import Runner
from .devices import resolve_device
from .errors import CheckpointError, ConfigError, ImageError
from .images import UnreadableImages, check_input_size, read_image, resize_image, to_bgr8

COLORS = ("bgr", "rgb", "gray", "grey")


class Extractor:
    """Embeds images with the StructVPR RGB branch (a checkpoint, the ImageNet initialisation or an ONNX export).

    ``batch_size``: images decoded and prepared per step, and per forward pass on CUDA; on the CPU
    the network runs one image at a time (faster there, for both runtimes).
    ``channels_last`` (PyTorch only): ``None`` (default) uses it on the CPU, where it measured
    ~20 % less CPU time per 640×480 image than the default layout.
    ``backend``: auto | torch | onnxruntime | tensorrt (see the module docstring).
    ``threads``: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
    ``onnx_model``: an exported ONNX file to run for ``checkpoint`` (instead of the cached export).
    ``fold_batchnorm`` (PyTorch only): fold BatchNorm into the convolutions (default); False only
    to measure PyTorch as written.

    After construction: ``backend`` (torch | onnxruntime | tensorrt: what runs), ``runner`` (it,
    keeping the contract of ``backends/runner.py``), ``providers`` (ONNX Runtime's, in order),
    ``precision`` (fp32 | fp16 | int8), ``onnx_path``, ``fingerprint``, ``source`` (where the
    weights came from: checkpoint path or "imagenet", sha256), ``query_encoder_for`` (the
    teacher's fingerprint at ``image_size`` when the model is a low-quality-query student, else None).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str = "auto",
        image_size: tuple[int, int] = (640, 480),
        batch_size: int = 8,
        half: bool = False,
        channels_last: bool | None = None,
        backend: str = "auto",
        threads: int | None = None,
        onnx_model: str | os.PathLike | None = None,
        fold_batchnorm: bool = True,
    ) -> None:
        check_input_size(image_size, "image_size")  # (W, H), each in 32..8192: before anything is allocated
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
        ):
            raise ConfigError(f"threads: expected a positive integer or None, got {threads!r}")
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise ConfigError(f"half: half precision is only supported on CUDA, not on device {self.device.type!r}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = int(batch_size)
        self.half = bool(half)
        self.threads = None if threads is None else int(threads)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        onnx_only = is_onnx_file(checkpoint)
        if onnx_only and onnx_model is not None:
            raise ConfigError("onnx_model: give either an .onnx checkpoint or onnx_model, not both")

        self.fingerprint, self.dim, self.source, declared = self._identify(onnx_only)
        # A checkpoint has no input size: the student serves its teacher's maps at the size it runs at.
        self.query_encoder_for = None if declared is None else {**declared, "input_size": list(self.image_size)}
        explicit = self.checkpoint if onnx_only else (None if onnx_model is None else Path(onnx_model))
        file_precision = "fp32" if explicit is None else read_sidecar(explicit).get("precision", "fp32")
        plan = self._plan(backend, onnx_only=explicit is not None, int8=file_precision == "int8")
        if plan.warning:
            warnings.warn(plan.warning, RuntimeWarning, stacklevel=2)
        if self.half and plan.runtime == "onnxruntime" and plan.name != "tensorrt":
            raise ConfigError(
                "half: ONNX Runtime runs the fp32 export; use backend torch or tensorrt for half precision"
            )
        self.model = None
        self.onnx_path: Path | None = None
        self.channels_last = False
        self.runner: Runner | None = None
        self.runtime_choice: dict | None = None  # auto on the CPU: what was measured and why (runtime_choice)
        if plan.runtime in ("onnxruntime", "openvino"):
            try:
                plan = self._start_exported(plan, explicit)
            except Exception as e:
                # auto with the cached export: anything going wrong there must not stop a robot
                # that PyTorch can serve; a file the user named, or a setting ($STRUCTVPR_CPU_RUNTIME),
                # is their error to see.
                if backend != "auto" or explicit is not None or isinstance(e, ConfigError):
                    raise
                warnings.warn(
                    f"{plan.runtime} unavailable for this model ({e}); running PyTorch instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
                plan = plan_backend("torch", self.device.type, None)
        if plan.runtime == "torch":
            self._start_torch(channels_last, fold_batchnorm)
        self.backend = plan.name

    # -- set-up --------------------------------------------------------------------------------

    def _identify(self, onnx_only: bool) -> tuple[dict, int, dict, dict | None]:
        """(fingerprint, dim, source, declared query_encoder_for) without building the network."""
        from .checkpoint import load_checkpoint
        from .models import DIMS, RGB_ARCHITECTURE, RGB_ARCHITECTURES
        from .weights import file_sha256, verify_imagenet_weights

        size = [self.image_size[0], self.image_size[1]]
        if onnx_only:
            meta = check_onnx_model(self.checkpoint, image_size=self.image_size)
            fp = dict(meta["fingerprint"])
            _check_rgb_architecture(self.checkpoint, fp["architecture"], RGB_ARCHITECTURES)
            return fp, int(fp["descriptor_dim"]), dict(meta.get("source") or {}), meta.get("query_encoder_for")
        declared = None
        if self.checkpoint is None:
            weights = verify_imagenet_weights()
            source = {"checkpoint": None, "weights": "imagenet", "sha256": file_sha256(weights)}
            arch, dim = RGB_ARCHITECTURE, DIMS[RGB_ARCHITECTURE]
        else:
            weights = self.checkpoint
            ckpt = load_checkpoint(weights)  # fails early, naming the file
            arch, dim = ckpt["architecture"], int(ckpt["descriptor_dim"])
            _check_rgb_architecture(weights, arch, RGB_ARCHITECTURES)
            declared = ckpt["query_encoder_for"]
            source = {"checkpoint": str(weights.resolve()), "sha256": file_sha256(weights)}
        fp = {
            "architecture": arch,
            "weights_sha256": source["sha256"],
            "input_size": size,
            "descriptor_dim": dim,
        }
        return fp, dim, source, declared

    def _build_model(self):
        from .checkpoint import build_model_from_checkpoint
        from .models import build_rgb_branch

        if self.checkpoint is None:
            return build_rgb_branch(pretrained=True).eval()
        return build_model_from_checkpoint(self.checkpoint, expected_architecture=self.fingerprint["architecture"])

    def _start_torch(self, channels_last: bool | None, fold_batchnorm: bool) -> None:
        from .backends.torch_backend import TorchRunner
        from .devices import as_torch_device

        self.device = as_torch_device(self.device)

        self.channels_last = (self.device.type == "cpu") if channels_last is None else bool(channels_last)
        self.runner = TorchRunner(
            self._build_model(), self.device, half=self.half, channels_last=self.channels_last, fuse=fold_batchnorm
        )
        self.model = self.runner.model
        self.providers: list[str] = []
        self.precision = "fp16" if self.half else "fp32"

    def _plan(self, backend: str, *, onnx_only: bool = False, int8: bool = False):
        from .backends.ov_backend import cpu_precisions

        w, h = self.image_size
        return plan_backend(
            backend,
            self.device.type,
            available_providers(),
            device_index=self.device.index,
            onnx_only=onnx_only,
            half=self.half,
            trt_cache_dir=str(trt_cache_dir()),
            max_batch=self.batch_size,
            input_shape=(3, h, w),
            openvino_precisions=cpu_precisions() if self.device.type == "cpu" else None,
            int8=int8,
        )

    def _start_exported(self, plan, explicit: Path | None):
        """Run the ONNX file (``explicit``, else the cached export) with the plan's runtime, or with the
        one ``auto`` measures fastest on this CPU; returns the plan that runs."""
        if explicit is not None:
            meta = check_onnx_model(explicit, expected_fingerprint=self.fingerprint, image_size=self.image_size)
            path = explicit
        else:
            path, _ = cached_onnx(
                self.fingerprint, self._build_model, source=self.source, query_encoder_for=self.query_encoder_for
            )
            meta = check_onnx_model(path, expected_fingerprint=self.fingerprint, image_size=self.image_size)
        runner = None
        if plan.candidates:
            plan, runner = self._choose_cpu_runtime(plan, Path(path), meta)
        self.runner, self.onnx_path = runner or self._make_runner(plan, path), Path(path)
        self.providers = list(getattr(self.runner, "providers", []))
        if meta["precision"] == "int8":
            self.precision = "int8"
        elif plan.runtime == "openvino":
            self.precision = plan.precision
        else:
            self.precision = "fp16" if (plan.name == "tensorrt" and self.half) else meta["precision"]
        return plan

    def _make_runner(self, plan, path) -> Runner:
        if plan.runtime == "openvino":
            from .backends.ov_backend import OvRunner

            return OvRunner(
                path, image_size=self.image_size, dim=self.dim, threads=self.threads, precision=plan.precision
            )
        from .backends.ort_backend import OrtRunner

        return OrtRunner(path, providers=plan.providers, image_size=self.image_size, dim=self.dim, threads=self.threads)

    def _choose_cpu_runtime(self, plan, path: Path, meta: dict):
        """``auto`` on the CPU: (the plan of the runtime measured fastest among those that pass parity,
        its runner when it was measured now); see ``backends.runtime_choice``."""
        from .backends.ort_backend import default_threads
        from .backends.runtime_choice import choose_runtime, reference_runner
        from .paths import parity_images

        int8 = meta["precision"] == "int8"

        def make_runner(name: str) -> Runner:
            return self._make_runner(self._plan(name, onnx_only=True, int8=int8), path)

        def make_reference():
            torch_model = None if int8 or is_onnx_file(self.checkpoint) else self._build_model
            return reference_runner(torch_model, self.device, lambda: make_runner("onnxruntime"), int8)

        def batches() -> list[np.ndarray]:
            return [self.prepare(read_image(p))[None] for p in parity_images()]

        name, runner, record = choose_runtime(
            plan.candidates,
            fingerprint=self.fingerprint,
            precision=meta["precision"],
            threads=self.threads or default_threads(),
            make_runner=make_runner,
            make_reference=make_reference,
            batches=batches,
        )
        self.runtime_choice = record
        return self._plan(name, onnx_only=True, int8=int8), runner

    def __repr__(self) -> str:
        return (
            f"Extractor({self.fingerprint['architecture']}, dim={self.dim}, device={self.device}, "
            f"backend={self.backend}, precision={self.precision}, image_size={self.image_size}, "
            f"checkpoint={self.checkpoint}{', query encoder' if self.query_encoder_for else ''})"
        )

    # -- embedding -----------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, color: str = "bgr", name: str = "image") -> np.ndarray:
        """One image of any kind as H×W×3 uint8 **BGR** at ``image_size``: what ``run_prepared`` takes.

        ``color``: the channel order of a colour ``image`` ("bgr" as OpenCV reads it, or "rgb");
        ``name`` is used in errors. The result may be a strided view; ``np.stack`` of several is a batch.
        """
        if color not in COLORS:
            raise ConfigError(f"color: expected one of {list(COLORS)}, got {color!r}")
        is_colour = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] in (3, 4)
        bgr = to_bgr8(image, name=name)
        if color == "rgb" and is_colour:
            bgr = bgr[:, :, ::-1]  # the caller's RGB(A) went through to_bgr8 unchanged: swap it now
        return resize_image(bgr, self.image_size)

    def run_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Descriptors (N, dim) float32, L2-normalised, of prepared images: (N, H, W, 3) uint8 BGR at ``image_size``.

        The runner's contract (``backends/runner.py``), whatever the backend; ``embed`` is
        ``prepare`` + this, and a benchmark can time this alone.
        """
        w, h = self.image_size
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.shape[1:] != (h, w, 3):
            found = (batch.dtype, batch.shape) if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ImageError(f"run_prepared: expected (N, {h}, {w}, 3) uint8 BGR images (see prepare), got {found}")
        out = self.runner.run(batch)
        if not np.all(np.isfinite(out)):
            model = self.checkpoint or "the ImageNet model"
            raise CheckpointError(f"{model}: produced NaN or infinite descriptors (are its weights finite?)")
        return out

    def embed(self, images: Sequence[np.ndarray], color: str = "bgr") -> np.ndarray:
        """Descriptors (N, dim) float32, L2-normalised, of a sequence of images (any size/kind)."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ImageError("images: expected a sequence of images; wrap a single image in a list")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = np.stack([self.prepare(im, color, name=f"image {start + i}") for i, im in enumerate(chunk)])
            out[start : start + len(chunk)] = self.run_prepared(batch)
        return out

    @property
    def has_masks(self) -> bool:
        """Whether the model gives soft label masks (a StructVPR++ student) through ``masks``."""
        return hasattr(self.runner, "run_masks") and self.runner.mask_channels > 0

    @property
    def label_layout(self) -> tuple[int, int, int] | None:
        """(global_dim, clusters, label_dim) of a StructVPR++ student's descriptors, else None:
        what ``models.label_features.split_descriptor`` needs to take one apart."""
        from .models import DIMS, PP_RGB_ARCHITECTURE, RGB_ARCHITECTURE

        if self.fingerprint["architecture"] != PP_RGB_ARCHITECTURE or not self.has_masks:
            return None
        clusters, global_dim = int(self.runner.mask_channels), DIMS[RGB_ARCHITECTURE]
        label_dim, rest = divmod(self.dim - global_dim, clusters)
        return None if rest or label_dim < 1 else (global_dim, clusters, label_dim)

    def masks(self, images: Sequence[np.ndarray], color: str = "bgr") -> np.ndarray:
        """The soft label masks (N, C, H/16, W/16) float32 of a StructVPR++ student (each pixel sums to 1).

        For a debug view: a second output of the same network, no segmentation model. The
        channels are the label clusters in ``slme.channel_names`` order for C = 6 or 3.
        ConfigError for a model without label masks (plain StructVPR).
        """
        if not self.has_masks:
            raise ConfigError(
                f"{self.fingerprint['architecture']}: this model has no label masks (a StructVPR++ student has)"
            )
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ImageError("images: expected a sequence of images; wrap a single image in a list")
        batch = np.stack([self.prepare(im, color, name=f"image {i}") for i, im in enumerate(images)])
        return self.runner.run_masks(batch)

    def embed_paths(self, paths: Sequence[str | os.PathLike], progress: bool = True) -> np.ndarray:
        """Descriptors (N, dim) of image files, in order.

        Unreadable files raise one ImageError naming them all (the count and the first few): after
        the first one the remaining files are still read, to find the others, but not embedded.
        """
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        failures = UnreadableImages(len(paths))
        with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), self.batch_size):
                chunk = paths[start : start + self.batch_size]
                images = [failures.read(p) for p in chunk]
                if not failures:
                    batch = np.stack(
                        [self.prepare(im, "bgr", name=str(p)) for p, im in zip(chunk, images, strict=True)]
                    )
                    out[start : start + len(chunk)] = self.run_prepared(batch)
                bar.update(len(chunk))
        failures.raise_if_any()
        return out


def _check_rgb_architecture(path, architecture: str, allowed) -> None:
    if architecture not in allowed:
        raise CheckpointError(
            f"{path}: holds architecture {architecture!r}, not a model that embeds RGB images ({', '.join(allowed)})"
        )
