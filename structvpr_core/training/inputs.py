"""What the branches are fed during training: image tensors (RGB branch) and SLME tensors (seg branch).

The RGB input is prepared exactly as the run-time ``Extractor`` prepares it (resize with
``images.resize_image``, then ``preprocess.normalise_nchw``: BGR → RGB, ImageNet mean/std), so
a trained student sees the same numbers at deployment. No augmentation (our choice; the paper
states none).

StructVPR++ also needs the label clusters of an image (the teacher pools with them, the
student's CE term learns from them): with ``masks`` (an ``SLMEConfig`` of uniform weights,
``slme.cluster_mask_config``) the loader appends the one-hot cluster masks of the image's label
map at the same size, C more channels (all-zero where a pixel has no label).
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
    ``masks``: also append the one-hot label-cluster masks of the label map (StructVPR++).
    """

    def __init__(
        self,
        modality: str,
        size: tuple[int, int],
        slme: SLMEConfig | None = None,
        labels=None,
        masks: SLMEConfig | None = None,
    ):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if (modality == "seg" or masks is not None) and labels is None:
            raise ValueError("the seg modality and the label masks need a label-map tree")
        self.modality = modality
        self.size = (int(size[0]), int(size[1]))
        self.slme = slme or SLMEConfig()
        self.labels = labels
        self.masks = masks

    def __call__(self, path: str | Path) -> torch.Tensor:
        label = self.labels.read(path) if self.labels is not None else None
        if self.modality == "seg":
            x = encode_label_map(label, self.slme, size=self.size)
        else:
            bgr = resize_image(read_image(path), self.size)
            x = torch.from_numpy(normalise_nchw(bgr[None], "bgr")[0])
        if self.masks is None:
            return x
        return torch.cat([x, encode_label_map(label, self.masks, size=self.size)])


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
