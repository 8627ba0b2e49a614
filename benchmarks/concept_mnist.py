"""The Concept Transformer's MNIST even/odd experiment on DigitScenes, with a data-efficiency table.

    python -m benchmarks.concept_mnist --threads 1                 # the README table (sizes 1500 6000 24000)
    python -m benchmarks.concept_mnist --sizes 24000 --figures ct-figures --json results.json

Task (Rigotti et al., ICLR 2022, Sec. 4.1): classify the parity of a handwritten digit; the digit's identity is the
concept. For every training-set size, three models share the backbone, the data, the seed and the budget (the same
number of optimiser steps, batch and learning-rate schedule):

    linear      the black-box baseline: timm's linear classifier on mean-pooled tokens
    CT          Concept Transformer head, 10 global + 10 spatial digit concepts, trained on parity labels only
    CT + expl   the same with the explanation loss (expl_lambda = 5, as the paper) on the digit annotations
                DigitScenes provides: the digit per image (global) and the patches each digit covers (spatial)

The backbone is a small ViT trained from scratch on 32 px scenes: 8 px patches (a 4x4 grid), width 64, 4 blocks,
no class token. As in the paper's MNIST model, global concepts are queried by attention-pooled tokens: a class
token trained from scratch under the explanation loss collapses to a constant early on (the attention cost is
lowest when the query varies least), and the model then learns nothing.

Reported on the test split (handwriting never seen in training): parity accuracy, and for CT models how often the
top global concept (head-averaged attention) is the true digit. Without supervision the concepts carry no names,
so that number is shown for completeness only (chance: 10%).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.common import table
from glassvit import zoo
from glassvit.data import DIGIT_NAMES, DigitScenes
from glassvit.training import evaluate, fit

BACKBONE = dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4, class_token=False, global_pool="avg")
GRID = (4, 4)
CONCEPTS = dict(num_concepts=10, num_spatial_concepts=10, num_heads=4, concept_names=DIGIT_NAMES,
                spatial_concept_names=DIGIT_NAMES)
KEYS = ("image", "label", "concepts", "spatial_concepts")
MODELS = {
    "linear": ("vit-ti16", {}),
    "CT": ("ct-ti16", dict(CONCEPTS, expl_lambda=0.0)),
    "CT + expl": ("ct-ti16", dict(CONCEPTS, expl_lambda=5.0)),
}


def scenes(split: str, n: int, seed: int) -> list[dict]:
    """n DigitScenes even/odd scenes with patch concept maps on GRID, rendered once (what training reads only)."""
    data = DigitScenes(split, "evenodd", size=BACKBONE["img_size"], num_scenes=n, seed=seed, grid=GRID)
    return [{k: item[k] for k in KEYS} for item in map(data.__getitem__, range(n))]


def train(kind: str, data: list[dict], args: argparse.Namespace):
    name, head_kwargs = MODELS[kind]
    torch.manual_seed(args.seed)
    model = zoo.load(name, num_classes=2, backbone_kwargs=dict(BACKBONE), head_kwargs=dict(head_kwargs),
                     label_names=["even", "odd"])
    epochs = max(1, math.ceil(args.steps * args.batch_size / len(data)))
    fit(model, data, epochs=epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=0.05,
        warmup_epochs=epochs / 10, grad_clip=1.0, seed=args.seed, val_fraction=0.0, progress=False)
    return model


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    test = scenes("test", args.test_scenes, args.seed)
    rows = []
    for size in args.sizes:
        data = scenes("train", size, args.seed)
        row: dict[str, object] = {"train scenes": size}
        for kind in args.models:
            t = time.perf_counter()
            model = train(kind, data, args)
            metrics = evaluate(model, test, batch_size=250)
            row[f"{kind} accuracy"] = metrics["accuracy"]
            if kind != "linear":
                row[f"{kind} top concept = digit"] = metrics["concept_accuracy"]
            print(f"{size} scenes, {kind}: accuracy {metrics['accuracy']:.4f}, concept accuracy "
                  f"{metrics.get('concept_accuracy', float('nan')):.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
            if args.figures and kind == "CT + expl" and size == max(args.sizes):
                draw(model, test[:args.num_figures], Path(args.figures))
        rows.append(row)
    return rows


def draw(model, items: list[dict], out_dir: Path) -> None:
    """Contribution bars and concept maps (glassvit.viz.concept) for a few test scenes."""
    from glassvit.viz import head_figures

    images = torch.stack([item["image"] for item in items])
    paths = head_figures("concept")(model, images, model.explain(images), out_dir, "digitscenes")
    print(f"figures: {', '.join(str(p) for p in paths)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1500, 6000, 24000], help="training-set sizes (scenes)")
    p.add_argument("--test-scenes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10000, help="optimiser steps per model (the shared budget)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--figures", help="draw concept figures of the largest CT + expl model into this folder")
    p.add_argument("--num-figures", type=int, default=4)
    p.add_argument("--json", help="also write the settings and rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "backbone": BACKBONE, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
