"""Per-epoch metrics, accumulated batch by batch and summable across processes.

    loss terms     every named term of model.loss, averaged over samples ("loss" is the total)
    accuracy       single-label: top-1; multi-label: per-label accuracy of logit > 0 (plus exact_match)
    concept_accuracy  where the batch has "concepts" and the head returns per-concept scores in
                   HeadOutput.aux["concepts"] (B,K): over annotated rows, how often the top-scored concept is one
                   of the row's annotated concepts (= argmax agreement for one-hot concepts). Rows whose concepts
                   are all NaN are unannotated and skipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..types import HeadOutput


class MetricTotals:
    """Running sums of one epoch's metrics; `state()`/`from_state()` round-trip through JSON for checkpoints."""

    def __init__(self, multi_label: bool = False) -> None:
        self.multi_label = multi_label
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, total: float, count: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0.0) + float(count)

    def update(self, terms: dict[str, Tensor], output: HeadOutput, batch: dict[str, Any]) -> None:
        """Add one batch: its loss terms (batch means) and the accuracies of its logits."""
        logits = output.logits.detach().float()
        n = logits.shape[0]
        for name, value in terms.items():
            self.add(name, float(value.detach()) * n, n)
        y = batch["label"]
        if self.multi_label:
            hit = ((logits > 0) == (y > 0.5))
            self.add("accuracy", float(hit.float().mean(1).sum()), n)
            self.add("exact_match", float(hit.all(1).float().sum()), n)
        else:
            target = y.argmax(1) if y.ndim == 2 else y  # soft targets: their top class
            self.add("accuracy", float((logits.argmax(1) == target).sum()), n)
        scores = output.aux.get("concepts") if isinstance(output.aux, dict) else None
        if scores is not None and "concepts" in batch:
            hits, rows = concept_hits(scores.detach().float(), batch["concepts"].float())
            self.add("concept_accuracy", hits, rows)

    def merge_(self, other_sums: dict[str, float], other_counts: dict[str, float]) -> None:
        for k, v in other_sums.items():
            self.add(k, v, other_counts[k])

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k] > 0}

    def state(self) -> dict[str, dict[str, float]]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state: dict[str, dict[str, float]], multi_label: bool = False) -> MetricTotals:
        totals = cls(multi_label)
        totals.merge_(state["sums"], state["counts"])
        return totals


def concept_hits(scores: Tensor, concepts: Tensor) -> tuple[float, float]:
    """(hits, annotated rows): rows where the top-scored concept is among the row's maximal annotated concepts.

    scores (B,K) or (B,N,K) predicted concept scores; concepts the same shape, NaN = unannotated.
    """
    scores = scores.reshape(-1, scores.shape[-1])
    concepts = concepts.to(scores.device).reshape(-1, concepts.shape[-1])
    annotated = ~torch.isnan(concepts).all(-1) & (torch.nan_to_num(concepts, nan=0.0).amax(-1) > 0)
    if not annotated.any():
        return 0.0, 0.0
    target = torch.nan_to_num(concepts[annotated], nan=float("-inf"))
    top = scores[annotated].argmax(-1, keepdim=True)
    hit = target.gather(1, top).squeeze(1) >= target.amax(-1)
    return float(hit.sum()), float(annotated.sum())
