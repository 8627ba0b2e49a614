"""Concept Transformer figures: per-concept contributions to the explained logit as bars, and concept maps.

For image i of a batch, two files in `out_dir`:
    {stem}_{i}_concepts.png   the image with the saliency, beside the concepts' contributions to the target logit
                              (bars sum, with the bias, to the logit: the decomposition is exact)
    {stem}_{i}_maps.png       the maps of the concepts contributing most, each over the image
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..maps import upsample
from ..types import Explanation
from . import overlay, pyplot, register_figure, save_figure, to_display

MAX_BARS = 15
MAX_MAPS = 8


def _label(model, target: int) -> str:
    names = model.config.label_names
    return names[target] if names else f"class {target}"


def _concept_labels(model, e: Explanation) -> list[str]:
    """Component names, each followed by its branch when a name occurs in several branches (e.g. digit "5" as a
    global and as a spatial concept)."""
    names = list(e.component_names)
    if len(set(names)) == len(names):
        return names
    branches = [branch for branch in model.head.branches for _ in model.head.concept_names[branch]]
    return [f"{n} ({b})" for n, b in zip(names, branches)]


def contribution_figure(model, image: Tensor, e: Explanation, i: int, path: Path) -> Path:
    """Saliency overlay and horizontal bars of the largest contributions (by magnitude) for image i."""
    plt = pyplot()
    contrib = e.contributions[i].detach().float().cpu()
    order = contrib.abs().argsort(descending=True)[:MAX_BARS].flip(0)
    target = int(e.target[i])
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.3 * len(order) + 2.2), gridspec_kw=dict(width_ratios=[1, 1.4]))
    overlay(axes[0], image, e.saliency[i])
    axes[0].set_title(f"{_label(model, target)}: saliency")
    values = contrib[order].numpy()
    axes[1].barh(range(len(order)), values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
    labels = _concept_labels(model, e)
    axes[1].set_yticks(range(len(order)), [labels[j] for j in order.tolist()])
    axes[1].axvline(0, color="black", linewidth=0.8)
    bias = float(e.details["bias"][i])
    axes[1].set_title(f"logit {float(e.logits[i, target]):.2f} = bias {bias:.2f} + concepts", fontsize=10)
    axes[1].set_xlabel(f"contribution to the {_label(model, target)!r} logit")
    fig.tight_layout()
    return save_figure(fig, path)


def map_figure(model, image: Tensor, e: Explanation, i: int, path: Path) -> Path:
    """The input, then the maps of the concepts with the largest contributions over it, on one colour scale."""
    plt = pyplot()
    contrib = e.contributions[i].detach().float().cpu()
    top = contrib.argsort(descending=True)[:MAX_MAPS]
    maps = upsample(e.components[i:i + 1, top].detach().float().cpu(), image.shape[-2:])[0]
    fig, axes = plt.subplots(1, len(top) + 1, figsize=(2.1 * (len(top) + 1), 2.5))
    axes[0].imshow(to_display(image))
    axes[0].set_axis_off()
    axes[0].set_title(f"{_label(model, int(e.target[i]))}")
    labels = _concept_labels(model, e)
    scale = float(maps.max().clamp_min(1e-12))  # one colour scale, so that weak maps look weak
    for ax, j, m in zip(axes[1:], top.tolist(), maps):
        ax.imshow(to_display(image))
        ax.imshow((m / scale).numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{labels[j]}: {float(contrib[j]):+.2f}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@register_figure("concept")
def concept_figures(model, images: Tensor, explanation: Explanation, out_dir: Path, stem: str) -> list[Path]:
    """Both figures for every image of the batch; returns the paths written."""
    out_dir = Path(out_dir)
    paths = []
    for i, image in enumerate(images):
        paths.append(contribution_figure(model, image, explanation, i, out_dir / f"{stem}_{i}_concepts.png"))
        paths.append(map_figure(model, image, explanation, i, out_dir / f"{stem}_{i}_maps.png"))
    return paths
