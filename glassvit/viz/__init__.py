"""Figures a person would rather look at than read. Needs matplotlib (pip install 'glassvit[viz]').

Generic saliency overlays live here; each head's own figures (tree path, concept bars, attribute maps) live in
glassvit/viz/<head>.py and register with `@register_figure("<head name>")` as

    fn(model, images (B,3,H,W) in [0,1], explanation, out_dir: Path, stem: str) -> list[Path]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from ..errors import GlassViTError

FIGURES: dict[str, Callable[..., list[Path]]] = {}


def register_figure(head: str):
    """Decorator: the head-specific figure function for heads registered as `head`."""

    def deco(fn):
        FIGURES[head] = fn
        return fn

    return deco


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise GlassViTError("figures need matplotlib: pip install 'glassvit[viz]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_display(image: Tensor) -> Tensor:
    """(3,H,W) image (any range) -> (H,W,3) in [0,1] for imshow."""
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    return img.permute(1, 2, 0)


def overlay(ax, image: Tensor, saliency: Tensor, alpha: float = 0.5, cmap: str = "jet") -> None:
    """Draw `image` (3,H,W) with `saliency` (H,W) on top, normalised to its own maximum."""
    s = saliency.detach().float().cpu()
    ax.imshow(to_display(image))
    ax.imshow(s / s.max().clamp_min(1e-12), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()


def save_overlay(image: Tensor, saliency: Tensor, path: str | Path, title: str = "") -> Path:
    """One figure: the image beside the image with its saliency overlay; returns the path written."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(to_display(image))
    axes[0].set_axis_off()
    axes[0].set_title("input")
    overlay(axes[1], image, saliency)
    axes[1].set_title(title or "saliency")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["FIGURES", "overlay", "pyplot", "register_figure", "save_overlay", "to_display"]
