"""Datasets for place recognition: readers of every common layout into one ``PlaceDataset``,
segmentation label maps on disk, and the synthetic structured-scene generator.

A facade: ``from structvpr_core.data import load_dataset`` is the public entry. The modules of
this package never import the package itself (they import each other by name: ``dataset`` ←
readers ← ``registry``), so re-exporting here creates no cycle.
"""

from .dataset import SPLITS, PlaceDataset, radius_neighbours
from .registry import FORMATS, detect_format, load_dataset

__all__ = ["FORMATS", "SPLITS", "PlaceDataset", "detect_format", "load_dataset", "radius_neighbours"]
