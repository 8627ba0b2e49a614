"""Metrics for accuracy and for explanation quality. Every explanation metric consumes `Explanation.saliency`.

Accuracy
    topk_accuracy, per_class_accuracy, average_precision / mean_average_precision (multi-label).
Faithfulness (Petsiuk et al., RISE, BMVC 2018; Chefer et al., CVPR 2021 perturbation tests)
    perturbation_curve, deletion_auc, insertion_auc: remove (insert) the most salient pixels first, in steps, and
    record the target-class score; the area under that curve, low for deletion and high for insertion when the
    saliency is faithful. Removed pixels take the value of a baseline image: "zero", "mean" or "blur".
Localisation against masks or boxes
    pointing_game (Zhang et al., IJCV 2018, with a tolerance in pixels), relevance_mass and relevance_rank
    (Arras et al., Information Fusion 2022), energy_pointing_game (Wang et al., Score-CAM, CVPRW 2020: relevance mass
    inside the bounding box), iou / miou of thresholded maps (Chefer et al.: foreground and background IoU),
    confusion_matrix and miou_from_confusion for multi-class label maps (weakly supervised segmentation).
Complexity
    complexity (Bhatt et al., IJCAI 2020: entropy of the normalised map), sparseness (Chalasani et al., ICML 2020:
    Gini index of the map).
Sanity
    randomization_check (Adebayo et al., NeurIPS 2018): explanations of a model whose parameters are redrawn, layer
    group by layer group from the top, compared with the original by Spearman rank correlation.
Concepts
    concept_accuracy: whether a head's concept scores rank the annotated concepts first.

Shapes: saliency (B,H,W) non-negative; mask (B,H,W) bool; boxes (B,4) x0,y0,x1,y1 inclusive pixel bounds.
Per-image metrics return (B,) tensors, so a dataset score is their mean over all images.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GlassViTError
from ..maps import minmax

BASELINES = ("zero", "mean", "blur")


# ---------------------------------------------------------------------------------------------------- accuracy


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> Tensor:
    """(B,C) logits, (B,) labels -> (B,) float, 1 where the label is among the k highest logits."""
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices
    return (top == labels.view(-1, 1)).any(-1).float()


def per_class_accuracy(logits: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """(B,C) logits, (B,) labels -> (C,) top-1 accuracy of each class; NaN for classes with no example."""
    num_classes = num_classes or logits.shape[-1]
    correct = (logits.argmax(-1) == labels).float()
    hits = torch.zeros(num_classes).index_add_(0, labels.cpu(), correct.cpu())
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(hits, float("nan")))


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """(N,) scores, (N,) binary targets -> () average precision, sum_n (R_n - R_{n-1}) P_n over score thresholds.

    Tied scores form one threshold (as scikit-learn's average_precision_score); NaN when there is no positive.
    """
    order = scores.argsort(descending=True, stable=True)
    s, t = scores[order].double(), targets[order].double()
    positives = t.sum()
    if positives == 0:
        return torch.tensor(float("nan"))
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # last index of each run of tied scores
    tp = t.cumsum(0)[last]
    predicted = torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    precision, recall = tp / predicted, tp / positives
    delta = torch.diff(recall, prepend=recall.new_zeros(1))
    return (delta * precision).sum().float()


def mean_average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """(N,C) scores, (N,C) multi-hot targets -> () mean of per-class average precision over classes with positives."""
    aps = torch.stack([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    return aps.nanmean()


# ---------------------------------------------------------------------------------------------- faithfulness


def baseline_images(images: Tensor, kind: str = "zero", blur_sigma: float | None = None) -> Tensor:
    """What removed pixels become. images (B,C,H,W) -> (B,C,H,W).

    "zero": zeros in the model's input space (the dataset mean colour for mean/std-normalised inputs);
    "mean": each image's per-channel mean; "blur": a Gaussian blur, sigma `blur_sigma` pixels (default H/8).
    """
    if kind == "zero":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean((-2, -1), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        return gaussian_blur(images, blur_sigma if blur_sigma is not None else images.shape[-2] / 8)
    raise GlassViTError(f"unknown perturbation baseline {kind!r}; choose one of {', '.join(BASELINES)}")


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B,C,H,W) with reflect padding (radius 3 sigma, at most the image size - 1)."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(images.shape[-2:]) - 1))
    xs = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def class_scores(logits: Tensor, target: Tensor, activation: str = "softmax") -> Tensor:
    """(B,C) logits -> (B,) score of the target class: "softmax" / "sigmoid" probability, or the raw "logit"."""
    if activation == "softmax":
        logits = logits.softmax(-1)
    elif activation == "sigmoid":
        logits = logits.sigmoid()
    elif activation != "logit":
        raise GlassViTError(f"unknown score activation {activation!r}; choose softmax, sigmoid or logit")
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def default_activation(model: nn.Module) -> str:
    """sigmoid for multi-label zoo models, softmax otherwise."""
    return "sigmoid" if getattr(getattr(model, "head", None), "multi_label", False) else "softmax"


@torch.no_grad()
def perturbation_curve(model: Callable[[Tensor], Tensor], images: Tensor, saliency: Tensor, target: Tensor,
                       mode: str = "deletion", step: float = 0.05, baseline: str = "zero",
                       activation: str | None = None, blur_sigma: float | None = None,
                       max_batch: int = 256) -> Tensor:
    """Target-class score as the most salient pixels are removed ("deletion") or inserted ("insertion").

    images (B,C,H,W), saliency (B,H,W), target (B,) -> (B,S+1) scores at the removed/inserted fractions
    0, step, 2 step, ..., 1 (S = ceil(1/step)). Pixels are ranked by saliency (ties in row-major order) and
    replaced in all channels at once by the `baseline` image (see baseline_images); insertion starts from the
    baseline image and restores the original pixels. The perturbed images of several steps go through the model
    together, at most `max_batch` per pass.
    """
    if mode not in ("deletion", "insertion"):
        raise GlassViTError(f"perturbation mode must be 'deletion' or 'insertion', got {mode!r}")
    if not 0 < step <= 1:
        raise GlassViTError(f"perturbation step must lie in (0, 1], got {step}")
    if saliency.shape != images.shape[:1] + images.shape[2:]:
        raise GlassViTError(f"saliency {tuple(saliency.shape)} does not match images {tuple(images.shape)}")
    activation = activation or default_activation(model)
    b, _, h, w = images.shape
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    rank = rank.view(1, b, 1, h, w)
    base = baseline_images(images, baseline, blur_sigma)
    n_steps = math.ceil(1 / step - 1e-9)
    counts = torch.tensor([round(min(s * step, 1.0) * h * w) for s in range(n_steps + 1)], device=images.device)
    scores = []
    for chunk in counts.split(max(1, max_batch // b)):
        changed = rank < chunk.view(-1, 1, 1, 1, 1)  # (k,B,1,H,W)
        x = torch.where(changed, base, images) if mode == "deletion" else torch.where(changed, images, base)
        logits = model(x.flatten(0, 1))
        scores.append(class_scores(logits, target.repeat(len(chunk)), activation).view(len(chunk), b))
    return torch.cat(scores).T


def curve_auc(curve: Tensor, step: float | None = None) -> Tensor:
    """(B,S+1) scores at fractions 0, step, ..., 1 -> (B,) trapezoidal area over [0,1] (last step may be shorter)."""
    n = curve.shape[1] - 1
    step = step if step is not None else 1 / n
    xs = torch.tensor([min(i * step, 1.0) for i in range(n + 1)], dtype=curve.dtype, device=curve.device)
    return torch.trapezoid(curve, xs, dim=1)


def deletion_auc(model: Callable[[Tensor], Tensor], images: Tensor, saliency: Tensor, target: Tensor,
                 step: float = 0.05, baseline: str = "zero", **kwargs: Any) -> Tensor:
    """(B,) area under the deletion curve: lower is more faithful."""
    curve = perturbation_curve(model, images, saliency, target, "deletion", step, baseline, **kwargs)
    return curve_auc(curve, step)


def insertion_auc(model: Callable[[Tensor], Tensor], images: Tensor, saliency: Tensor, target: Tensor,
                  step: float = 0.05, baseline: str = "blur", **kwargs: Any) -> Tensor:
    """(B,) area under the insertion curve (from a blurred image by default, as in RISE): higher is more faithful."""
    curve = perturbation_curve(model, images, saliency, target, "insertion", step, baseline, **kwargs)
    return curve_auc(curve, step)


# ---------------------------------------------------------------------------------------------- localisation


def _check_pair(saliency: Tensor, mask: Tensor) -> None:
    if saliency.shape != mask.shape:
        raise GlassViTError(f"saliency {tuple(saliency.shape)} and mask {tuple(mask.shape)} differ in shape")


def boxes_to_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,4) x0,y0,x1,y1 inclusive pixel bounds -> (B,H,W) bool; a NaN box gives an empty mask."""
    h, w = size
    ys = torch.arange(h, device=boxes.device).view(1, h, 1)
    xs = torch.arange(w, device=boxes.device).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def dilate(mask: Tensor, radius: int) -> Tensor:
    """(B,H,W) bool grown by a disk of `radius` pixels (Euclidean distance <= radius)."""
    if radius <= 0:
        return mask
    r = torch.arange(-radius, radius + 1, device=mask.device)
    disk = ((r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= radius**2).float()
    grown = F.conv2d(mask[:, None].float(), disk[None, None], padding=radius)
    return grown[:, 0] > 0


def pointing_game(saliency: Tensor, mask: Tensor, tolerance: int = 0) -> Tensor:
    """(B,) float: 1 where the saliency maximum (first in row-major order) lies within `tolerance` px of the mask.

    Images whose mask is empty have nothing to point at and give NaN.
    """
    _check_pair(saliency, mask)
    b, h, w = saliency.shape
    peak = saliency.flatten(1).argmax(1)
    hit = dilate(mask.bool(), tolerance).flatten(1).gather(1, peak[:, None]).squeeze(1).float()
    return torch.where(mask.flatten(1).any(1), hit, torch.full_like(hit, float("nan")))


def relevance_mass(saliency: Tensor, mask: Tensor) -> Tensor:
    """(B,) share of the total saliency that falls inside the mask; NaN for an all-zero map or an empty mask."""
    _check_pair(saliency, mask)
    s = saliency.flatten(1).float()
    inside = (s * mask.flatten(1)).sum(1)
    total = s.sum(1)
    valid = (total > 0) & mask.flatten(1).any(1)
    return torch.where(valid, inside / total.clamp_min(1e-12), torch.full_like(total, float("nan")))


def energy_pointing_game(saliency: Tensor, boxes: Tensor) -> Tensor:
    """(B,) relevance mass inside the bounding boxes (B,4): the energy-based pointing game of Score-CAM."""
    return relevance_mass(saliency, boxes_to_masks(boxes, saliency.shape[-2:]))


def relevance_rank(saliency: Tensor, mask: Tensor) -> Tensor:
    """(B,) fraction of the K most salient pixels inside the mask, K = the mask's size; NaN for an empty mask."""
    _check_pair(saliency, mask)
    s, m = saliency.flatten(1), mask.flatten(1).bool()
    order = s.argsort(dim=1, descending=True, stable=True)
    k = m.sum(1, keepdim=True)
    top = torch.arange(s.shape[1], device=s.device).expand_as(s) < k
    inside = (m.gather(1, order) & top).sum(1).float()
    return torch.where(k[:, 0] > 0, inside / k[:, 0].clamp_min(1), torch.full_like(inside, float("nan")))


def binarize(saliency: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,H,W) -> bool: each map min-max normalised to [0,1], then thresholded (a constant map is all background)."""
    return minmax(saliency) > threshold


def _mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    pred, gt = pred.flatten(1), gt.flatten(1)
    inter, union = (pred & gt).sum(1).float(), (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def iou(saliency: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) foreground IoU of the thresholded map (see binarize) with the mask; 1 when both are empty."""
    _check_pair(saliency, mask)
    return _mask_iou(binarize(saliency, threshold), mask.bool())


def miou(saliency: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) mean of foreground and background IoU of the thresholded map, as in Chefer et al.'s segmentation test."""
    _check_pair(saliency, mask)
    pred, gt = binarize(saliency, threshold), mask.bool()
    return 0.5 * (_mask_iou(pred, gt) + _mask_iou(~pred, ~gt))


def confusion_matrix(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Label maps (B,H,W) long -> (K,K) counts, rows = ground truth, columns = prediction; `ignore_index` skipped."""
    keep = gt != ignore_index
    idx = gt[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx.cpu(), minlength=num_classes**2).view(num_classes, num_classes)


def miou_from_confusion(conf: Tensor) -> tuple[Tensor, Tensor]:
    """(K,K) confusion -> (per-class IoU (K,) with NaN for classes never seen nor predicted, their mean)."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    per_class = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    return per_class.float(), per_class.nanmean().float()


def class_maps_to_labels(maps: Tensor, present: Tensor | None = None, threshold: float = 0.5) -> Tensor:
    """Per-class maps (B,C,H,W) -> label map (B,H,W): 0 = background, c+1 = class c.

    Each class map is min-max normalised; classes not `present` (B,C) bool (the image labels, as in weakly
    supervised segmentation) are ignored; a pixel is background when no class reaches `threshold`.
    """
    b, c, h, w = maps.shape
    norm = minmax(maps.reshape(b * c, h, w)).view(b, c, h, w)
    if present is not None:
        norm = norm * present.view(b, c, 1, 1).to(norm)
    best, label = norm.max(1)
    return torch.where(best > threshold, label + 1, torch.zeros_like(label))


# ------------------------------------------------------------------------------------------------ complexity


def _distribution(saliency: Tensor) -> Tensor:
    s = saliency.flatten(1).abs().double()
    return s / s.sum(1, keepdim=True).clamp_min(1e-300)


def complexity(saliency: Tensor) -> Tensor:
    """(B,) entropy (nats) of the map normalised to a distribution: 0 for one pixel, log(H*W) for a uniform map."""
    p = _distribution(saliency)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(1).float()


def sparseness(saliency: Tensor) -> Tensor:
    """(B,) Gini index of |map|: 0 for a uniform map, 1 - 1/(H*W) for a single pixel; 0 for an all-zero map."""
    s = saliency.flatten(1).abs().double().sort(1).values
    n = s.shape[1]
    i = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    total = s.sum(1)
    gini = ((2 * i - n - 1) * s).sum(1) / (n * total.clamp_min(1e-300))
    return torch.where(total > 0, gini, torch.zeros_like(gini)).float()


# ---------------------------------------------------------------------------------------------------- sanity


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """(B,...) x (B,...) -> (B,) Spearman rank correlation of each pair of maps (ties ranked in row-major order)."""

    def ranks(x: Tensor) -> Tensor:
        x = x.flatten(1)
        return x.argsort(dim=1, stable=True).argsort(dim=1).double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-300)).float()


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """A zoo model's parameters from the top down: the head, each transformer block from last to first, the rest
    of the backbone (embeddings, final norm). Any other module: its direct children in reverse order."""
    if hasattr(model, "head") and hasattr(model, "backbone"):
        timm_model = model.backbone.model
        groups = [("head", list(model.head.parameters()))]
        blocks = getattr(timm_model, "blocks", None) or getattr(timm_model, "layers", None)
        seen = {id(p) for _, ps in groups for p in ps}
        if blocks is not None:
            for i in reversed(range(len(blocks))):
                groups.append((f"block{i}", list(blocks[i].parameters())))
                seen |= {id(p) for p in blocks[i].parameters()}
        groups.append(("embedding", [p for p in timm_model.parameters() if id(p) not in seen]))
    else:
        groups = [(name, list(m.parameters())) for name, m in reversed(list(model.named_children()))]
    return [(n, ps) for n, ps in groups if ps]


def _randomized(model: nn.Module, generator: torch.Generator) -> Iterator[tuple[str, nn.Module]]:
    """Copies of `model` with more and more parameter groups redrawn (cascading, top first)."""
    model = copy.deepcopy(model)
    for name, params in layer_groups(model):
        with torch.no_grad():
            for p in params:
                std = float(p.std()) if p.numel() > 1 else 0.0
                noise = torch.randn(p.shape, generator=generator).to(p)
                p.copy_(p.mean() + (std if std > 0 else 0.02) * noise)
        yield name, model


def randomization_check(model: nn.Module, images: Tensor, method: str | Callable[..., Any] = "native",
                        target: Tensor | None = None, seed: int = 0) -> dict[str, Tensor]:
    """The model-parameter randomisation test (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018).

    Parameter groups (see layer_groups) are redrawn cumulatively from the top, each parameter from a normal
    distribution with its own mean and standard deviation (0.02 for constant parameters), so activations keep their
    scale. After each group the saliency for the same `target` (default: the original prediction) is compared with the
    original by Spearman rank correlation. Returns group name -> (B,) correlation, in randomisation order; a method
    that depends on the model shows correlations that fall towards 0, one that ignores it stays near 1.

    `method` is an explainer name for `model.explain` or a callable fn(model, images, target) -> Explanation.
    """
    explain = method if callable(method) else (lambda m, x, t: m.explain(x, target=t, method=method))
    original = explain(model, images, target)
    target = original.target
    generator = torch.Generator().manual_seed(seed)
    return {
        name: spearman(explain(randomized, images, target).saliency.detach(), original.saliency.detach())
        for name, randomized in _randomized(model, generator)
    }


# --------------------------------------------------------------------------------------------------- concepts


def concept_accuracy(scores: Tensor, concepts: Tensor) -> Tensor:
    """(B,) fraction of each image's annotated concepts found among its m highest-scored concepts.

    scores (B,K) (concept attention, contributions, ...), concepts (B,K) annotations (positive = present; NaN rows
    unannotated), m = the number of annotated concepts in the row. With one concept per image this is top-1 accuracy.
    Unannotated rows give NaN.
    """
    if scores.shape != concepts.shape:
        raise GlassViTError(f"concept scores {tuple(scores.shape)} and annotations {tuple(concepts.shape)} differ")
    present = torch.nan_to_num(concepts, nan=0.0) > 0
    m = present.sum(1)
    order = scores.argsort(dim=1, descending=True, stable=True)
    top = torch.arange(scores.shape[1], device=scores.device).expand_as(scores) < m[:, None]
    found = (present.gather(1, order) & top).sum(1).float()
    return torch.where(m > 0, found / m.clamp_min(1), torch.full_like(found, float("nan")))
