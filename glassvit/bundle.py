"""The bundled DigitScenes models, and the one command that regenerates them from project code.

    python -m glassvit.bundle --out glassvit/weights

1. `vit-digits`: the small ViT of `DIGITS_VIT` with the linear head, trained from scratch on DigitScenes "single"
   (32 px, 10 digit classes). Its backbone is the starting point of every other bundled model, and of the
   quickstart's fine-tuning.
2. Each interpretable head is fine-tuned from that backbone (`pretrained_file=<vit-digits directory>`) on the task
   its explanation is about: `vit-net-digits` (tree, "single"), `ct-digits` (Concept Transformer, "evenodd" with
   digit identity as global and spatial concepts), `ex-vit-digits` (eX-ViT, "multi", image labels only).
   `rcut-digits` needs no training of its own: it is `vit-digits` explained by R-Cut.

Every model is written as a zoo.load directory (config.json, model.safetensors in float16, README.md card with its
test accuracy), so `zoo.load("ct-digits", pretrained=True)` works offline. Training is seeded: the same command
on the same torch version gives the same files on CPU. On 2 CPU cores the whole run takes about 40 minutes (about
half of it for ex-vit-digits); `--only NAME` retrains one model, `--scale 0.05` checks the pipeline in a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import serialization, zoo
from .training import evaluate, fit
from .training.datasets import open_data


@dataclass(frozen=True)
class Recipe:
    """How one bundled model is trained: its DigitScenes task, budget, and whether it starts from vit-digits."""

    task: str
    epochs: int
    lr: float
    train_scenes: int
    from_backbone: bool = True
    backbone_lr: float | None = None


RECIPES = {
    "vit-digits": Recipe("single", epochs=12, lr=1e-3, train_scenes=20000, from_backbone=False),
    "vit-net-digits": Recipe("single", epochs=8, lr=1e-3, train_scenes=4000, backbone_lr=2e-4),
    "ct-digits": Recipe("evenodd", epochs=8, lr=1e-3, train_scenes=4000, backbone_lr=2e-4),
    "ex-vit-digits": Recipe("multi", epochs=10, lr=1e-3, train_scenes=20000, backbone_lr=2e-4),
}
TEST_SCENES = 1000


def train_one(name: str, out: Path, seed: int = 0, progress: bool = True, scale: float = 1.0) -> dict[str, float]:
    """Train bundled model `name` into out/name (see RECIPES); returns its test metrics.

    `scale` shrinks epochs and scenes (e.g. 0.1 for a quick check of the whole pipeline).
    """
    recipe = RECIPES[name]
    torch.manual_seed(seed)
    start = dict(pretrained_file=str(out / "vit-digits")) if recipe.from_backbone else {}
    model = zoo.load(name, **start)
    scenes = max(200, int(recipe.train_scenes * scale))
    train = open_data(f"digitscenes:{recipe.task}", model, split="train", num_scenes=scenes)
    test = open_data(f"digitscenes:{recipe.task}", model, split="test", num_scenes=TEST_SCENES)
    result = fit(model, train, epochs=max(1, round(recipe.epochs * scale)), batch_size=64, lr=recipe.lr,
                 backbone_lr=recipe.backbone_lr, warmup_epochs=1, grad_clip=5.0, seed=seed, progress=progress)
    model = result.model
    model.config.label_names = list(train.label_names)
    model.config.backbone_weights = "bundled:vit-digits" if recipe.from_backbone else None
    metrics = evaluate(model, test)
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    model.half().save_pretrained(target)  # float16 on disk; zoo.load casts back to the model's float32
    serialization.write_json(target / "metrics.json", {"test": metrics, "train_scenes": scenes})
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(zoo.BUNDLED_DIR), help="where to write the model directories")
    p.add_argument("--only", action="append", choices=list(RECIPES), help="train only these (vit-digits must exist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply epochs and scenes (quick pipeline checks)")
    args = p.parse_args(argv)
    out = Path(args.out)
    for name in args.only or list(RECIPES):
        metrics = train_one(name, out, seed=args.seed, scale=args.scale)
        print(f"{name}: test accuracy {metrics['accuracy']:.3f}")


if __name__ == "__main__":
    main()
