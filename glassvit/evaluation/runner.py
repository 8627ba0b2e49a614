"""Evaluate a model's accuracy and the quality of its explanations on an annotated dataset, batched.

    result = evaluate_model(model, data, explainers=["native", "rollout", "gradcam"])
    result.save("eval-out")          # eval.json + eval.md (a Markdown table: one row per explainer)

Per batch: one forward pass gives the accuracy metrics; then every explainer explains the same `target` class per
image (the label by default; "prediction" explains the model's top class), and every explanation metric compares
its saliency (B,H,W) with the model (deletion, insertion) or with the ground truth the data carries: a
per-class "masks" (C,H,W) / "boxes" (C,4) entry when C is the model's class count (the target's mask), else the
image's "mask" (H,W) / "box" (4,). Dataset scores are means over images; images without the needed annotation
(NaN) are skipped. The randomisation sanity check runs on the first `sanity_images` images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .. import serialization
from ..errors import GlassViTError, unknown
from ..explainers import available_explainers
from ..models.classifier import evaluating
from . import metrics as M


@dataclass(frozen=True)
class Metric:
    """An explanation metric: its column label, whether higher is better, and the ground truth it needs."""

    label: str
    higher_is_better: bool
    needs: str | None  # "mask", "box" or None


EXPLANATION_METRICS: dict[str, Metric] = {
    "deletion": Metric("deletion AUC", False, None),
    "insertion": Metric("insertion AUC", True, None),
    "pointing": Metric("pointing game", True, "mask"),
    "energy_pointing": Metric("energy pointing game", True, "box"),
    "relevance_mass": Metric("relevance mass", True, "mask"),
    "relevance_rank": Metric("relevance rank", True, "mask"),
    "iou": Metric("mask IoU", True, "mask"),
    "miou": Metric("fg/bg mIoU", True, "mask"),
    "complexity": Metric("complexity", False, None),
    "sparseness": Metric("sparseness", True, None),
    "randomization": Metric("randomisation corr.", False, None),
}
MODEL_METRICS = ("accuracy", "top5", "map", "concept_accuracy")
ALL_METRICS = (*MODEL_METRICS, *EXPLANATION_METRICS)
DEFAULT_EXPLAINERS = ("native", "attention", "rollout", "chefer", "gradcam", "ig")


@dataclass
class EvalSettings:
    """How explanations are scored (see glassvit.evaluation.metrics for each function).

    target: "label" or "prediction". step: fraction of pixels per deletion/insertion step. deletion_baseline /
    insertion_baseline: "zero", "mean" or "blur". tolerance: pointing-game tolerance in pixels. threshold: IoU
    threshold on min-max normalised maps. sanity_images: images for the randomisation check.
    explainer_kwargs: explainer name -> keyword arguments (e.g. {"ig": {"steps": 16}}).
    """

    target: str = "label"
    step: float = 0.05
    deletion_baseline: str = "zero"
    insertion_baseline: str = "blur"
    tolerance: int = 0
    threshold: float = 0.5
    sanity_images: int = 8
    explainer_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Scores of one model on one dataset: `accuracy` (model metrics) and `explanations` (explainer -> metric ->
    mean), plus `randomization` (explainer -> parameter group -> mean rank correlation) when requested."""

    model: str
    data: str
    num_images: int
    settings: dict[str, Any]
    accuracy: dict[str, Any]
    explanations: dict[str, dict[str, float]]
    randomization: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = [f"**{self.model}** on {self.data} ({self.num_images} images)", ""]
        shown = {k: v for k, v in self.accuracy.items() if not isinstance(v, list)}
        if shown:
            lines += [", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in shown.items()), ""]
        if self.explanations:
            lines.append(explanation_table(self.explanations))
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
        """Write `stem`.json and `stem`.md into `out_dir`; returns both paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
        serialization.write_json(json_path, json_safe(self.to_dict()))
        serialization.atomic_write(md_path, lambda p: p.write_text(self.to_markdown()))
        return json_path, md_path


def explanation_table(rows: dict[str, dict[str, float]], first: str = "explainer",
                      extra: dict[str, dict[str, Any]] | None = None) -> str:
    """A Markdown table: one row per key of `rows`, one column per metric (arrows say which way is better).

    `extra` adds leading columns (column -> row -> value), e.g. a model's accuracy in a multi-model report.
    """
    names = [m for m in EXPLANATION_METRICS if any(m in r for r in rows.values())]
    extra = extra or {}
    arrows = {m: "↑" if EXPLANATION_METRICS[m].higher_is_better else "↓" for m in names}
    header = [first, *extra, *(f"{EXPLANATION_METRICS[m].label} {arrows[m]}" for m in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in rows.items():
        cells = [key, *(_fmt(extra[c].get(key)) for c in extra), *(_fmt(row.get(m)) for m in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def json_safe(obj: Any) -> Any:
    """JSON has no NaN: replace it by None, recursively."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


class _Means:
    """Running means of per-image values, NaN skipped."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, values: Tensor) -> None:
        v = values.detach().float().flatten().cpu()
        v = v[~torch.isnan(v)]
        self.sums[name] = self.sums.get(name, 0.0) + float(v.sum())
        self.counts[name] = self.counts.get(name, 0) + v.numel()

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in self.sums}


def check_names(explainers: Sequence[str], metrics: Sequence[str]) -> None:
    """Unknown explainer or metric names fail with the closest matches."""
    known = available_explainers()
    for name in explainers:
        if name not in known:
            raise unknown("explainer", name, known)
    for name in metrics:
        if name not in ALL_METRICS:
            raise unknown("metric", name, ALL_METRICS)


def ground_truth(batch: dict[str, Any], target: Tensor, num_classes: int, size: tuple[int, int],
                 key: str) -> tuple[Tensor, Tensor] | None:
    """The target's mask (B,H,W) bool (key="mask") or box (B,4) (key="box") at `size`, with a (B,) bool saying
    which images are annotated (NaN = unannotated); None when the batch has no such entry."""
    per_class = batch.get(key + "es" if key == "box" else key + "s")
    if isinstance(per_class, Tensor) and per_class.ndim >= 2 and per_class.shape[1] == num_classes:
        value = per_class[torch.arange(len(target)), target.cpu()]
    elif isinstance(batch.get(key), Tensor):
        value = batch[key]
    else:
        return None
    value = value.float()
    valid = ~torch.isnan(value).flatten(1).any(1)
    value = torch.nan_to_num(value)
    if key == "mask":
        if tuple(value.shape[-2:]) != tuple(size):
            value = F.interpolate(value[:, None], size=size, mode="nearest")[:, 0]
        return value > 0.5, valid
    h, w = batch["image"].shape[-2:]
    return value * torch.tensor([size[1] / w, size[0] / h] * 2), valid


def _targets(logits: Tensor, labels: Tensor | None, how: str, multi_label: bool) -> Tensor:
    if how == "prediction" or labels is None:
        return logits.argmax(-1)
    if how != "label":
        raise GlassViTError(f"target must be 'label' or 'prediction', got {how!r}")
    if multi_label:  # the highest-scoring label the image has
        return torch.where(labels > 0.5, logits, torch.full_like(logits, -math.inf)).argmax(-1)
    return labels.long()


def evaluate_model(model: nn.Module, data: Dataset, *, explainers: Iterable[str] = DEFAULT_EXPLAINERS,
                   metrics: Iterable[str] | None = None, settings: EvalSettings | None = None, batch_size: int = 32,
                   max_images: int | None = None, progress: bool = True, data_name: str = "",
                   device: str | torch.device | None = None) -> EvalResult:
    """Accuracy and explanation metrics of `model` (a GlassViT) on `data` (dicts with "image", "label", and
    optionally "mask(s)", "box(es)", "concepts").

    metrics: names from ALL_METRICS; None = every metric the data has annotations for, except the (slow)
    randomisation check. Naming a metric whose annotation the data lacks is an error.
    """
    settings = settings or EvalSettings()
    explainers = list(dict.fromkeys(explainers))
    requested = list(metrics) if metrics is not None else None
    check_names(explainers, requested or [])
    if max_images is not None:
        data = Subset(data, range(min(max_images, len(data))))
    if len(data) == 0:
        raise GlassViTError("the evaluation data is empty")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    multi_label = bool(getattr(model.head, "multi_label", False))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    available = _available(data[0])
    chosen = _choose_metrics(requested, available, multi_label)
    acc, expl = _Means(), {name: _Means() for name in explainers}
    scores, labels_all = [], []
    randomization: dict[str, dict[str, float]] = {}
    with evaluating(model):
        for i, batch in enumerate(_progress(loader, progress, "evaluating")):
            images = batch["image"].to(device)
            with torch.no_grad():
                output = model.forward_detailed(images)
            labels = batch.get("label")
            labels = labels.to(device) if isinstance(labels, Tensor) else None
            _model_metrics(acc, chosen, output, labels, batch, multi_label, scores, labels_all)
            target = _targets(output.logits, labels, settings.target, multi_label)
            truth = {key: ground_truth(batch, target, model.num_classes, images.shape[-2:], key)
                     for key in ("mask", "box")}
            for name in explainers:
                explanation = _explain_fn(name, settings)(model, images, target)
                _explanation_metrics(expl[name], chosen, model, images, explanation.saliency.detach(), target,
                                     truth, settings)
            if i == 0 and "randomization" in chosen:
                n = settings.sanity_images
                for name in explainers:
                    groups = M.randomization_check(model, images[:n], _explain_fn(name, settings), target[:n])
                    randomization[name] = {g: float(v.mean()) for g, v in groups.items()}
                    expl[name].add("randomization", list(groups.values())[-1])
    accuracy = acc.result()
    if "map" in chosen and scores:
        accuracy["map"] = float(M.mean_average_precision(torch.cat(scores), torch.cat(labels_all)))
    return EvalResult(
        model=getattr(getattr(model, "config", None), "name", type(model).__name__),
        data=data_name or type(data).__name__,
        num_images=len(data),
        settings={**asdict(settings), "explainers": explainers, "metrics": chosen},
        accuracy=accuracy,
        explanations={name: means.result() for name, means in expl.items()},
        randomization=randomization,
    )


def _progress(loader: DataLoader, enabled: bool, desc: str):
    if not enabled:
        return loader
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return loader
    return tqdm(loader, desc=desc, unit="batch")


def _available(item: dict[str, Any]) -> set[str]:
    have = {"mask"} if "mask" in item or "masks" in item else set()
    return have | ({"box"} if "box" in item or "boxes" in item else set()) | ({"label"} if "label" in item else set())


def _choose_metrics(requested: list[str] | None, available: set[str], multi_label: bool) -> list[str]:
    label_metrics = {"map"} if multi_label else {"accuracy", "top5"}
    if requested is None:
        return [m for m in ALL_METRICS if m != "randomization" and _applicable(m, available, label_metrics)]
    for m in requested:
        if not _applicable(m, available, label_metrics):
            need = EXPLANATION_METRICS[m].needs if m in EXPLANATION_METRICS else "label"
            raise GlassViTError(f"metric {m!r} needs a {need!r} annotation (or a multi-label/single-label model "
                                f"as fits it); the data has: {', '.join(sorted(available)) or 'none'}")
    return requested


def _applicable(m: str, available: set[str], label_metrics: set[str]) -> bool:
    if m in EXPLANATION_METRICS:
        needs = EXPLANATION_METRICS[m].needs
        return needs is None or needs in available
    if m in ("accuracy", "top5", "map"):
        return m in label_metrics and "label" in available
    return True  # concept_accuracy: reported when the head returns concept scores and the data has concepts


def _model_metrics(acc: _Means, chosen: list[str], output, labels: Tensor | None, batch: dict[str, Any],
                   multi_label: bool, scores: list[Tensor], labels_all: list[Tensor]) -> None:
    logits = output.logits.detach().float()
    if labels is not None and multi_label:
        if "accuracy" in chosen:
            acc.add("accuracy", ((logits > 0) == (labels > 0.5)).float().mean(1))
        if "map" in chosen:
            scores.append(logits.cpu())
            labels_all.append(labels.cpu())
    elif labels is not None:
        if "accuracy" in chosen:
            acc.add("accuracy", M.topk_accuracy(logits, labels))
        if "top5" in chosen and logits.shape[-1] > 5:
            acc.add("top5", M.topk_accuracy(logits, labels, 5))
    concept_scores = output.aux.get("concepts") if isinstance(output.aux, dict) else None
    if "concept_accuracy" in chosen and concept_scores is not None and "concepts" in batch:
        c = batch["concepts"].to(concept_scores.device)
        if c.shape == concept_scores.shape:
            acc.add("concept_accuracy", M.concept_accuracy(concept_scores.detach().float(), c.float()))


def _explain_fn(name: str, settings: EvalSettings) -> Callable[..., Any]:
    kwargs = settings.explainer_kwargs.get(name, {})
    method = None if name == "native" else name  # "native": the model's own (configured) explainer
    return lambda m, x, t: m.explain(x, target=t, method=method, **kwargs)


@dataclass
class _Case:
    """One batch's explanation with what its metrics compare it to."""

    model: nn.Module
    images: Tensor
    saliency: Tensor
    target: Tensor
    mask: Tensor | None
    box: Tensor | None
    s: EvalSettings


SCORERS: dict[str, Callable[[_Case], Tensor]] = {
    "deletion": lambda c: M.deletion_auc(c.model, c.images, c.saliency, c.target, c.s.step, c.s.deletion_baseline),
    "insertion": lambda c: M.insertion_auc(c.model, c.images, c.saliency, c.target, c.s.step,
                                           c.s.insertion_baseline),
    "pointing": lambda c: M.pointing_game(c.saliency, c.mask, c.s.tolerance),
    "energy_pointing": lambda c: M.energy_pointing_game(c.saliency, c.box),
    "relevance_mass": lambda c: M.relevance_mass(c.saliency, c.mask),
    "relevance_rank": lambda c: M.relevance_rank(c.saliency, c.mask),
    "iou": lambda c: M.iou(c.saliency, c.mask, c.s.threshold),
    "miou": lambda c: M.miou(c.saliency, c.mask, c.s.threshold),
    "complexity": lambda c: M.complexity(c.saliency),
    "sparseness": lambda c: M.sparseness(c.saliency),
}


def _explanation_metrics(means: _Means, chosen: list[str], model, images: Tensor, saliency: Tensor, target: Tensor,
                         truth: dict[str, tuple[Tensor, Tensor] | None], s: EvalSettings) -> None:
    """Add every chosen metric of one batch; images without the metric's annotation count as NaN (skipped)."""
    dev = saliency.device
    gt = {k: (v[0].to(dev), v[1].to(dev)) if v is not None else None for k, v in truth.items()}
    case = _Case(model, images, saliency, target, *(gt[k][0] if gt[k] else None for k in ("mask", "box")), s)
    for m in chosen:
        if m not in SCORERS:
            continue
        needs = EXPLANATION_METRICS[m].needs
        if needs is None:
            means.add(m, SCORERS[m](case))
        elif gt[needs] is not None:
            values = SCORERS[m](case)
            means.add(m, torch.where(gt[needs][1], values, torch.full_like(values, float("nan"))))
