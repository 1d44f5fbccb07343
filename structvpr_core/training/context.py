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

    def loader(self, modality: str) -> InputLoader:
        """Input of the ``rgb`` or ``seg`` branch (one label-map tree serves every split)."""
        size = tuple(self.cfg.data.image_size)
        if modality == "rgb":
            return InputLoader("rgb", size)
        return InputLoader("seg", size, self.cfg.slme, self.labels())
