"""Accuracy and explanation quality: metrics, post-hoc baseline explainers, the evaluation runner and reports."""

from . import baselines, metrics

__all__ = ["baselines", "metrics"]
