"""Semantic segmenters that produce the label maps the seg branch is trained on.

One adapter: SegFormer (Xie et al. 2021) through Hugging Face ``transformers``, an *optional*
extra (``pip install transformers``). Weights are never downloaded here: a name is looked up in
the local Hugging Face cache only (as with ``HF_HUB_OFFLINE=1``), or a local directory written
by ``save_pretrained`` is loaded. Output ids follow ``structvpr_core/taxonomies``: ADE20K models
(150 labels, 0-based) are shifted to the official ids 1..150 (0 = unlabelled stays unused);
Cityscapes models (19 labels) already give train ids 0..18.

Segmenter names: ``segformer`` (= nvidia/segformer-b0-finetuned-ade-512-512), ``segformer-b{0..5}-ade``,
``segformer-b{0..5}-cityscapes``, or ``segformer:<hub id or local directory>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, StructVPRError, WeightsError
from .preprocess import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_SEGFORMER = "nvidia/segformer-b0-finetuned-ade-512-512"
TRANSFORMERS_HINT = "pip install transformers==4.57.6 (the optional segmentation extra)"


class MissingExtraError(StructVPRError):
    """An optional dependency needed for the requested feature is not installed."""


def resolve_name(name: str) -> str:
    """Hub id or path of a segmenter name (see the module docstring)."""
    if name == "segformer":
        return DEFAULT_SEGFORMER
    if name.startswith("segformer:"):
        target = name.split(":", 1)[1]
        if not target:
            raise ConfigError("segmenter: 'segformer:' needs a hub id or a directory after the colon")
        return target
    for variant in range(6):
        if name == f"segformer-b{variant}-ade":
            return f"nvidia/segformer-b{variant}-finetuned-ade-512-512"
        if name == f"segformer-b{variant}-cityscapes":
            return f"nvidia/segformer-b{variant}-finetuned-cityscapes-1024-1024"
    raise ConfigError(
        f"segmenter: unknown name {name!r} (known: segformer, segformer-b0..b5-ade, "
        f"segformer-b0..b5-cityscapes, segformer:<hub id or directory>)"
    )


def _preprocessing(source: str) -> tuple[tuple[int, int], tuple, tuple]:
    """Input size (W, H), mean and std from a local preprocessor_config.json, else SegFormer's defaults."""
    size, mean, std = (512, 512), IMAGENET_MEAN, IMAGENET_STD
    cfg_path = Path(source) / "preprocessor_config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise WeightsError(f"{cfg_path}: unreadable ({e})") from None
        s = cfg.get("size", {})
        if isinstance(s, dict) and "height" in s and "width" in s:
            size = (int(s["width"]), int(s["height"]))
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    return size, mean, std


class SegFormerSegmenter:
    """A SegFormer model that maps a BGR image to a label map of taxonomy ids at the image's size."""

    def __init__(
        self,
        model,
        *,
        taxonomy: str,
        id_offset: int,
        input_size=(512, 512),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        device: str = "cpu",
        name: str = "segformer",
    ):
        import torch

        self.model = model.eval().to(device)
        self.taxonomy = taxonomy
        self.id_offset = int(id_offset)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = torch.device(device)
        self.name = name
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0

    @staticmethod
    def taxonomy_of(num_labels: int, taxonomy: str | None, source: str) -> tuple[str, int]:
        """(taxonomy, id offset) for a model with ``num_labels`` outputs."""
        known = {150: ("ade20k", 1), 19: ("cityscapes", 0)}
        if num_labels not in known:
            raise ConfigError(f"{source}: a {num_labels}-class model matches no taxonomy (ADE20K 150, Cityscapes 19)")
        found = known[num_labels]
        if taxonomy is not None and taxonomy != found[0]:
            raise ConfigError(f"{source}: model has {num_labels} classes ({found[0]}), not {taxonomy!r}")
        return found

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", taxonomy: str | None = None) -> SegFormerSegmenter:
        """Load a saved model from a local directory or the local Hugging Face cache; never downloads."""
        try:
            from transformers import SegformerForSemanticSegmentation
        except ImportError:
            raise MissingExtraError(
                f"the SegFormer segmenter needs the 'transformers' package: {TRANSFORMERS_HINT}"
            ) from None
        local_dir = Path(name_or_path).expanduser()
        source = str(local_dir) if local_dir.is_dir() else name_or_path
        try:
            model = SegformerForSemanticSegmentation.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as e:
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise WeightsError(
                f"SegFormer weights {name_or_path!r} not found locally{offline}: structvpr never downloads at run "
                f"time; fetch them beforehand (`huggingface-cli download {name_or_path}` on a machine with internet) "
                f"or pass segformer:<directory written by save_pretrained> [{type(e).__name__}]"
            ) from None
        tax, offset = cls.taxonomy_of(int(model.config.num_labels), taxonomy, source)
        size, mean, std = _preprocessing(source)
        return cls(
            model, taxonomy=tax, id_offset=offset, input_size=size, mean=mean, std=std, device=device, name=name_or_path
        )

    def segment(self, image_bgr: np.ndarray) -> np.ndarray:
        """(H, W) uint8 label map of taxonomy ids for an H×W BGR image."""
        import cv2
        import torch

        from .images import to_bgr8

        image = to_bgr8(image_bgr)
        h, w = image.shape[:2]
        rgb = cv2.resize(image, self.input_size, interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        x = ((x - self._mean) / self._std).to(self.device)
        with torch.inference_mode():
            logits = self.model(pixel_values=x).logits[0]  # (C, H/4, W/4)
            # Bilinear upsampling of all classes at full size would need C×H×W floats; take the
            # argmax over blocks of classes instead (same result, bounded memory).
            best = torch.full((h, w), -float("inf"), device=logits.device)
            arg = torch.zeros((h, w), dtype=torch.long, device=logits.device)
            for start in range(0, logits.shape[0], 16):
                block = torch.nn.functional.interpolate(
                    logits[None, start : start + 16], size=(h, w), mode="bilinear", align_corners=False
                )[0]
                value, index = block.max(dim=0)
                better = value > best
                best = torch.where(better, value, best)
                arg = torch.where(better, index + start, arg)
        return (arg.cpu().numpy() + self.id_offset).astype(np.uint8)


def get_segmenter(name: str, device: str = "cpu", taxonomy: str | None = None) -> SegFormerSegmenter:
    """A segmenter by name (see the module docstring)."""
    return SegFormerSegmenter.from_pretrained(resolve_name(name), device=device, taxonomy=taxonomy)
