"""Figures a person would rather look at than read. Needs matplotlib (pip install 'glassvit[viz]').

Generic saliency overlays live here; each head's own figures (tree path, concept bars, attribute maps) live in
glassvit/viz/<head>.py and register with `@register_figure("<head name>")` as

    fn(model, images (B,3,H,W) in [0,1], explanation, out_dir: Path, stem: str) -> list[Path]
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from ..errors import GlassViTError
from ..maps import minmax

FIGURES: dict[str, Callable[..., list[Path]]] = {}


def register_figure(head: str):
    """Decorator: the head-specific figure function for heads registered as `head`."""

    def deco(fn):
        FIGURES[head] = fn
        return fn

    return deco


def head_figures(head: str) -> Callable[..., list[Path]] | None:
    """The figure function registered for `head`, after importing every module of this package (each registers
    its head's figures on import); None when the head has none."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return FIGURES.get(head)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise GlassViTError("figures need matplotlib: pip install 'glassvit[viz]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_display(image: Tensor):
    """(3,H,W) image (any range) -> (H,W,3) numpy array in [0,1] for imshow."""
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    return img.permute(1, 2, 0).numpy()


def overlay(ax, image: Tensor, saliency: Tensor, alpha: float = 0.5, cmap: str = "jet") -> None:
    """Draw `image` (3,H,W) with `saliency` (H,W) on top, min-max normalised to its own range (so nearly flat maps,
    such as rollout's, still show their structure)."""
    s = minmax(saliency.detach().float().cpu()[None])[0]
    ax.imshow(to_display(image))
    ax.imshow(s.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()


def save_overlays(image: Tensor, saliencies: dict[str, Tensor], path: str | Path, title: str = "") -> Path:
    """One figure: the image, then one saliency overlay (H,W) per entry of `saliencies` (its key is the panel
    title), side by side; `title` goes above them all. Returns the path written."""
    plt = pyplot()
    n = len(saliencies) + 1
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.6 if title else 3.2), squeeze=False)
    axes = axes[0]
    axes[0].imshow(to_display(image))
    axes[0].set_axis_off()
    axes[0].set_title("input")
    for ax, (name, saliency) in zip(axes[1:], saliencies.items()):
        overlay(ax, image, saliency)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.93) if title else (0, 0, 1, 1))
    return save_figure(fig, path)


def save_overlay(image: Tensor, saliency: Tensor, path: str | Path, title: str = "") -> Path:
    """One figure: the image beside the image with its saliency overlay; returns the path written."""
    return save_overlays(image, {title or "saliency": saliency}, path)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure (creating the folder) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


__all__ = ["FIGURES", "head_figures", "overlay", "pyplot", "register_figure", "save_figure", "save_overlay",
           "save_overlays", "to_display"]
