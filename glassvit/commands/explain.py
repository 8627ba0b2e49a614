"""`glassvit explain`: figures of what a model looked at, and why, for your images.

For each image: STEM_saliency.png (the image and one saliency overlay per method) and, where the model's head
registers figures (glassvit.viz: the tree path and the whole tree, concept contributions and concept maps,
attribute maps and the pseudo mask), those too. The prediction is printed with its top classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from .. import zoo
from ..errors import GlassViTError, unknown
from ..explainers import available_explainers
from ..viz import head_figures, save_overlays


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_explain(p: argparse.ArgumentParser) -> None:
    p.epilog = "Example: glassvit explain --model runs/digits scene.png --methods native,gradcam --out figures"
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--model", required=True, help="zoo name (glassvit list), model directory, or hf-hub:org/repo")
    p.add_argument("--pretrained", action="store_true",
                   help="for zoo names: load the published weights (bundled or Hub), e.g. --model vit-net-digits")
    p.add_argument("--out", default="explain-output", help="folder for the figures (default: %(default)s)")
    p.add_argument("--methods", type=_names, default=["native", "rollout", "gradcam"],
                   help="comma-separated explainers drawn side by side (default: native,rollout,gradcam)")
    p.add_argument("--target", default=None,
                   help="class to explain, by index or label name (default: each image's prediction)")
    p.add_argument("--top-k", type=int, default=3, help="top classes printed per image (default: %(default)s)")


def load_images(paths: list[str], data_config: dict) -> tuple[Tensor, Tensor]:
    """Image files -> (model inputs (B,3,H,W) resized and normalised with `data_config`, the same images resized
    for display (B,3,H,W) in [0,1]); an unreadable file fails with its path."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise GlassViTError("reading image files needs Pillow: pip install 'glassvit[data]'") from e
    from torchvision.transforms.functional import to_tensor

    from ..training.datasets import ImageTransforms

    transforms = ImageTransforms.from_timm(data_config, train=False)
    inputs, display = [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                resized = transforms.geometric(img.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise GlassViTError(f"cannot read image {path}: {e}") from e
        inputs.append(transforms.photometric(resized))
        display.append(to_tensor(resized))
    return torch.stack(inputs), torch.stack(display)


def resolve_class(target: str | None, label_names: list[str] | None, num_classes: int) -> int | None:
    """A class index from an index or a label name (None stays None)."""
    if target is None:
        return None
    if target.lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < num_classes:
            raise GlassViTError(f"target class {index} is outside [0, {num_classes})")
        return index
    if label_names and target in label_names:
        return label_names.index(target)
    raise unknown("class", target, label_names or [str(i) for i in range(num_classes)])


def run_explain(args: argparse.Namespace) -> int:
    model = zoo.load(args.model, pretrained=args.pretrained).eval()
    known = available_explainers()
    for method in args.methods:
        if method not in known:
            raise unknown("explainer", method, known)
    names = model.config.label_names or [str(i) for i in range(model.num_classes)]
    target = resolve_class(args.target, model.config.label_names, model.num_classes)
    inputs, display = load_images(args.images, model.data_config)
    out = Path(args.out)
    figures = head_figures(model.config.head)
    written: list[Path] = []
    for i, path in enumerate(args.images):
        x, stem = inputs[i:i + 1], Path(path).stem
        explanations = {m: model.explain(x, target=target, method=None if m == "native" else m) for m in args.methods}
        first = next(iter(explanations.values()))
        probs = (first.logits.sigmoid() if model.head.multi_label else first.logits.softmax(-1))[0]
        top = probs.topk(min(args.top_k, model.num_classes))
        explained = names[int(first.target[0])]
        print(f"{path}: " + ", ".join(f"{names[int(c)]} {float(p):.3f}" for p, c in zip(top.values, top.indices))
              + f" (explaining {explained})")
        panels = {m if e.method == m else f"{m} ({e.method})": e.saliency[0] for m, e in explanations.items()}
        written.append(save_overlays(display[i], panels, out / f"{stem}_saliency.png",
                                     title=f"{model.config.name}: {explained}"))
        if figures is not None:
            native = explanations.get("native") or model.explain(x, target=target)
            written.extend(figures(model, display[i:i + 1], native, out, stem))
    if figures is None:
        print(f"(the {model.config.head!r} head has no figures of its own; saliency overlays only)")
    for p in written:
        print(f"wrote {p}")
    return 0
