"""Datasets with the annotations interpretable heads and explanation metrics need."""

from .digitscenes import DIGIT_NAMES, TASKS, DigitScenes, source_indices, spatial_concepts

__all__ = ["DIGIT_NAMES", "TASKS", "DigitScenes", "source_indices", "spatial_concepts"]
