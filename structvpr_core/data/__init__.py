"""Datasets for place recognition: readers of every common layout into one ``PlaceDataset``,
segmentation label maps on disk, and the synthetic structured-scene generator."""

from .dataset import FORMATS, PlaceDataset, detect_format, load_dataset, radius_neighbours

__all__ = ["FORMATS", "PlaceDataset", "detect_format", "load_dataset", "radius_neighbours"]
