"""`glassvit quickstart`: the zoo in one minute, offline: list it, build a model, explain a DigitScenes image."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import zoo
from ..data import DigitScenes
from ..viz import save_overlay


def configure_quickstart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart-output", help="folder for the figures (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)


def run_quickstart(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("The zoo:")
    for name in zoo.list_models():
        print(f"  {name:<16} {zoo.get_spec(name).description}")
    torch.manual_seed(args.seed)
    scenes = DigitScenes("test", "single", size=32, seed=args.seed)
    model = zoo.load("vit-ti16", num_classes=10, img_size=32,
                     backbone_kwargs=dict(patch_size=4, depth=4)).eval()
    item = scenes[0]
    explanation = model.explain(item["image"][None])
    print(f"\nvit-ti16 (untrained, 32 px, patch 4) on a DigitScenes image of a {int(item['label'])}: "
          f"predicted class {int(explanation.target)}, saliency {tuple(explanation.saliency.shape)}")
    path = save_overlay(item["image"], explanation.saliency[0], out / "saliency.png",
                        title=f"{model.config.name}: class {int(explanation.target)}")
    print(f"Open {path} first: the image with the model's saliency on top.")
    return 0
