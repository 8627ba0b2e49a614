"""`glassvit quickstart`: glassvit's whole job in a few minutes, offline, on 2 CPU cores.

1. Starts from the bundled `vit-digits` backbone (a small ViT trained on DigitScenes, shipped in the package).
2. Fine-tunes three heads on it with the same budget, with progress bars: the linear black box (`vit-digits`), the
   ViT-NeT tree (`vit-net-digits`) and the Concept Transformer (`ct-digits`, digits as concepts).
3. Evaluates them on held-out handwriting: accuracy, then each native explanation beside post-hoc baselines
   (deletion / insertion AUC, pointing game, mask IoU, relevance mass against the true digit masks).
4. Writes everything to one folder: report.md (the table), report.json, figures/ (explanation overlays, the tree's
   decision path and whole tree, the concepts' contributions), models/ (each fine-tuned model, `zoo.load`-able).

This is `glassvit report` (glassvit.evaluation.report) restricted to three families and a smaller budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.report import ReportSettings, run_report

FAMILIES = ("vit-digits", "vit-net-digits", "ct-digits")
EXPLAINERS = ("native", "rollout", "gradcam")
FIGURES_FIRST = (
    ("report.md", "the table: accuracy and explanation quality of every model and explainer"),
    ("figures/vit-net-digits_scene0_0_path.png", "the tree's decision for one scene: each prototype, where it "
                                                 "matched, present/absent, and the routing probabilities"),
    ("figures/ct-digits_scene0_0_concepts.png", "the concepts' exact contributions to the Concept Transformer's logit"),
    ("figures/vit-digits_scene0.png", "the black box's saliency beside the post-hoc baselines"),
)


def configure_quickstart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart-output", help="folder for the report and figures (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs of each head (default: %(default)s)")
    p.add_argument("--train-scenes", type=int, default=3000, help="training scenes (default: %(default)s)")
    p.add_argument("--test-scenes", type=int, default=200, help="test scenes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run_quickstart(args: argparse.Namespace) -> int:
    out = Path(args.out)
    settings = ReportSettings(train_scenes=args.train_scenes, test_scenes=args.test_scenes, epochs=args.epochs,
                              seed=args.seed, explainers=EXPLAINERS, figures=1)
    print(f"Fine-tuning {', '.join(FAMILIES)} on DigitScenes from the bundled backbone, then evaluating them "
          f"({settings.train_scenes} training scenes, {settings.epochs} epochs each, {settings.test_scenes} test "
          f"scenes).", flush=True)
    summary = run_report(out, settings, list(FAMILIES), progress=args.progress)
    print(f"\n{summary['table']}\n")
    print(f"Everything is in {out}/. Open, in this order:")
    for name, what in FIGURES_FIRST:
        if (out / name).exists():
            print(f"  {out / name}\n      {what}")
    print(f"The fine-tuned models: {out / 'models'} (glassvit.zoo.load(<folder>) loads each).")
    return 0
