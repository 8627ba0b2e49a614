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
    """Running sums of one epoch's metrics, kept as tensors on the batch's device (no host sync per batch);
    `state()`/`from_state()` round-trip through JSON for checkpoints."""

    def __init__(self, multi_label: bool = False) -> None:
        self.multi_label = multi_label
        self.sums: dict[str, Tensor | float] = {}
        self.counts: dict[str, Tensor | float] = {}

    def add(self, name: str, total: Tensor | float, count: Tensor | float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + total
        self.counts[name] = self.counts.get(name, 0.0) + count

    def update(self, terms: dict[str, Tensor], output: HeadOutput, batch: dict[str, Any]) -> None:
        """Add one batch: its loss terms (batch means) and the accuracies of its logits."""
        logits = output.logits.detach().float()
        n = logits.shape[0]
        for name, value in terms.items():
            self.add(name, value.detach().double() * n, n)
        y = batch["label"]
        if self.multi_label:
            hit = (logits > 0) == (y > 0.5)
            self.add("accuracy", hit.double().mean(1).sum(), n)
            self.add("exact_match", hit.all(1).double().sum(), n)
        else:
            target = y.argmax(1) if y.ndim == 2 else y  # soft targets: their top class
            self.add("accuracy", (logits.argmax(1) == target).double().sum(), n)
        scores = output.aux.get("concepts") if isinstance(output.aux, dict) else None
        if scores is not None and "concepts" in batch:
            self.add("concept_accuracy", *concept_hits(scores.detach().float(), batch["concepts"].float()))

    def merge_(self, other_sums: dict[str, float], other_counts: dict[str, float]) -> None:
        for k, v in other_sums.items():
            self.add(k, v, other_counts[k])

    def result(self) -> dict[str, float]:
        state = self.state()
        return {k: v / state["counts"][k] for k, v in state["sums"].items() if state["counts"][k] > 0}

    def state(self) -> dict[str, dict[str, float]]:
        return {"sums": {k: float(v) for k, v in self.sums.items()},
                "counts": {k: float(v) for k, v in self.counts.items()}}

    @classmethod
    def from_state(cls, state: dict[str, dict[str, float]], multi_label: bool = False) -> MetricTotals:
        totals = cls(multi_label)
        totals.merge_(state["sums"], state["counts"])
        return totals


def concept_hits(scores: Tensor, concepts: Tensor) -> tuple[Tensor, Tensor]:
    """(hits, annotated rows): rows where the top-scored concept is among the row's maximal annotated concepts.

    scores (B,K) or (B,N,K) predicted concept scores; concepts the same shape, NaN = unannotated.
    """
    scores = scores.reshape(-1, scores.shape[-1])
    concepts = concepts.to(scores.device).reshape(-1, concepts.shape[-1])
    annotated = ~torch.isnan(concepts).all(-1) & (torch.nan_to_num(concepts, nan=0.0).amax(-1) > 0)
    target = torch.nan_to_num(concepts[annotated], nan=float("-inf"))
    top = scores[annotated].argmax(-1, keepdim=True)
    hit = target.gather(1, top).squeeze(1) >= target.amax(-1)
    return hit.double().sum(), annotated.double().sum()
