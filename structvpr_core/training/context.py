"""The state of one training run that every stage (and every distillation's ``prepare``) reads.

Its own module so that the stages and the distillations can take a ``RunContext`` without
importing ``run`` (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .budget import StepBudget
from .config import TrainConfig
from .distributed import DistEnv
from .inputs import InputLoader
from .mining import TrainingPairs


@dataclass
class RunContext:
    cfg: TrainConfig
    out: Path
    env: DistEnv
    tag: str | None = None
    budget: StepBudget = field(default_factory=StepBudget)
    train: object = None  # PlaceDataset, training split (set by run.load_data)
    val: object = None  # PlaceDataset, validation split, or None
    pairs: TrainingPairs | None = None
    _labels: dict = field(default_factory=dict)

    def stage_dir(self, stage: str) -> Path:
        if self.tag and stage in ("partition", "stage2", "lqq"):
            return self.out / f"{stage}-{self.tag}"
        return self.out / stage

    def labels(self):
        """The label-map tree of the dataset (one tree mirrors every split)."""
        from ..data.labelmaps import LabelMapTree

        if "tree" not in self._labels:
            d = self.cfg.data
            self._labels["tree"] = LabelMapTree(d.label_root, d.root, taxonomy=self.cfg.slme.taxonomy)
        return self._labels["tree"]

    def loader(self, modality: str, with_masks: bool | None = None) -> InputLoader:
        """Input of the ``rgb`` or ``seg`` branch (one label-map tree serves every split).

        ``with_masks``: append the label-cluster masks (StructVPR++); None: for the ++ teacher
        (``seg`` with ``model.label_features`` on), never for ``rgb``.
        """
        from ..slme import cluster_mask_config

        size = tuple(self.cfg.data.image_size)
        lf = self.cfg.model.plus_plus
        if with_masks is None:
            with_masks = modality == "seg" and lf is not None
        if with_masks and lf is None:
            raise ValueError("label masks are a StructVPR++ input: model.label_features is off")
        masks = cluster_mask_config(self.cfg.slme, lf.clusters) if with_masks else None
        labels = self.labels() if (modality == "seg" or masks is not None) else None
        if modality == "rgb":
            return InputLoader("rgb", size, labels=labels, masks=masks)
        return InputLoader("seg", size, self.cfg.slme, labels, masks=masks)
