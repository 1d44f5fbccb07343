"""What the branches are fed during training: image tensors (RGB branch) and SLME tensors (seg branch).

The RGB input is prepared exactly as the run-time ``Extractor`` prepares it (resize with
``images.resize_image``, then ``preprocess.normalise_nchw``: BGR → RGB, ImageNet mean/std), so
a trained student sees the same numbers at deployment. No augmentation (our choice; the paper
states none).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..images import read_image, resize_image
from ..preprocess import normalise_nchw
from ..slme import SLMEConfig, encode_label_map

MODALITIES = ("rgb", "seg")


class InputLoader:
    """Turns a dataset image path into the (C, H, W) float32 tensor a branch takes.

    ``rgb``: the image itself; ``seg``: the SLME encoding of its label map (read through a
    ``data.labelmaps.LabelMapTree``), resized with nearest neighbour to the same ``size``.
    """

    def __init__(self, modality: str, size: tuple[int, int], slme: SLMEConfig | None = None, labels=None):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if modality == "seg" and labels is None:
            raise ValueError("the seg modality needs a label-map tree")
        self.modality = modality
        self.size = (int(size[0]), int(size[1]))
        self.slme = slme or SLMEConfig()
        self.labels = labels

    def __call__(self, path: str | Path) -> torch.Tensor:
        if self.modality == "seg":
            return encode_label_map(self.labels.read(path), self.slme, size=self.size)
        bgr = resize_image(read_image(path), self.size)
        return torch.from_numpy(normalise_nchw(bgr[None], "bgr")[0])


class PathDataset(Dataset):
    """Tensors of a list of image paths, for embedding (mining, validation, teacher cache)."""

    def __init__(self, paths: list[Path], loader: InputLoader):
        self.paths = list(paths)
        self.loader = loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.loader(self.paths[i]), i


class TupleDataset(Dataset):
    """Training tuples (q, p, n_1..n_K) of a mined chunk.

    ``tuples``: (T, 2+K) int array of [query index, positive db index, negative db indices…].
    Item: (tensor (2+K, C, H, W) in the order q, p, n…, the tuple row (2+K,) int64).
    """

    def __init__(
        self, tuples: np.ndarray, queries: list[Path], database: list[Path], loader: Callable[[Path], torch.Tensor]
    ):
        self.tuples = np.asarray(tuples, dtype=np.int64)
        self.queries = queries
        self.database = database
        self.loader = loader

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, i: int):
        row = self.tuples[i]
        paths = [self.queries[row[0]]] + [self.database[j] for j in row[1:]]
        return torch.stack([self.loader(p) for p in paths]), torch.from_numpy(row.copy())
