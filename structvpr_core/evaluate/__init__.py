"""Evaluation as the VPR community computes it: Recall@N, and precision–recall for loop closure.

A facade over small modules, each one concern: ``recall`` (the metrics, pure array maths),
``descriptor_cache`` (descriptors of an image list, cached per files, model and query
degradation), ``pipeline`` (``evaluate``: the steps of ``structvpr eval`` in order, and the table
it prints) and ``match_images`` (pictures of the top matches). The modules never import this package back.
"""

from .descriptor_cache import CACHE_VERSION, cache_key, dataset_descriptors
from .match_images import save_match_images
from .pipeline import evaluate, format_result
from .recall import DEFAULT_NS, normalise, precision_recall, recall_at_n, recall_from_predictions, search

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_NS",
    "cache_key",
    "dataset_descriptors",
    "evaluate",
    "format_result",
    "normalise",
    "precision_recall",
    "recall_at_n",
    "recall_from_predictions",
    "save_match_images",
    "search",
]
