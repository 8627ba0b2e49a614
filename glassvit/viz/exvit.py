"""eX-ViT figures: the class map, the pseudo mask, and the attribute maps that add up to the decision.

For image i of a batch, one file in `out_dir`, {stem}_{i}_attributes.png:
    top row     the input, the explained class's map over it (the saliency), and the pseudo mask of the predicted
                classes (background threshold and refinement of the head) with a legend
    bottom row  the attribute maps with the largest contributions to the explained logit, each over the input on
                one colour scale, titled with the attribute's contribution and the class it is attached to
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from ..maps import upsample
from ..types import Explanation
from . import overlay, pyplot, register_figure, save_figure, to_display

MAX_MAPS = 6
BACKGROUND = (0.0, 0.0, 0.0)


def _names(model) -> list[str]:
    return model.config.label_names or [f"class {c}" for c in range(model.num_classes)]


def _mask_rgb(mask: np.ndarray, colours) -> np.ndarray:
    """(H,W) label map (0 background, c+1 class c) -> (H,W,3) colours."""
    rgb = np.zeros((*mask.shape, 3))
    for label in np.unique(mask):
        if label:
            rgb[mask == label] = colours(int(label - 1) % colours.N)[:3]
    return rgb


def attribute_figure(model, image: Tensor, e: Explanation, i: int, path: Path) -> Path:
    """The figure of the module docstring for image i of the batch explained by `e`."""
    plt = pyplot()
    from matplotlib.patches import Patch

    names, target = _names(model), int(e.target[i])
    contrib = e.contributions[i].detach().float().cpu()
    top = contrib.argsort(descending=True)[:MAX_MAPS]
    maps = upsample(e.components[i:i + 1, top].detach().float().cpu(), image.shape[-2:])[0]
    owners = e.details["attribute_classes"].cpu()
    cols = max(3, len(top))
    fig, axes = plt.subplots(2, cols, figsize=(2.3 * cols, 5.2), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(to_display(image))
    axes[0, 0].set_title("input")
    overlay(axes[0, 1], image, e.saliency[i])
    axes[0, 1].set_title(f"{names[target]}: class map", fontsize=10)
    mask = e.details["pseudo_mask"][i].cpu().numpy()
    colours = plt.get_cmap("tab10")
    axes[0, 2].imshow(0.35 * to_display(image) + 0.65 * _mask_rgb(mask, colours))
    axes[0, 2].set_title("pseudo mask", fontsize=10)
    labels = [int(v) for v in np.unique(mask) if v]
    handles = [Patch(color=colours((v - 1) % colours.N), label=names[v - 1]) for v in labels]
    if handles:
        axes[0, 2].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    scale = float(maps.max().clamp_min(1e-12))  # one colour scale, so that weak attributes look weak
    for ax, k, m in zip(axes[1], top.tolist(), maps):
        ax.imshow(to_display(image))
        ax.imshow(m.numpy() / scale, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"attr {k} ({names[int(owners[k])]}): {float(contrib[k]):+.2f}", fontsize=8)
    bias = float(e.details["bias"][i])
    fig.suptitle(f"logit {float(e.logits[i, target]):.2f} = bias {bias:.2f} + attribute contributions "
                 f"(top {len(top)}: {float(contrib[top].sum()):.2f})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


@register_figure("exvit")
def exvit_figures(model, images: Tensor, explanation: Explanation, out_dir: Path, stem: str) -> list[Path]:
    """One attribute figure per image of the batch; returns the paths written."""
    out_dir = Path(out_dir)
    return [attribute_figure(model, image, explanation, i, out_dir / f"{stem}_{i}_attributes.png")
            for i, image in enumerate(images)]
