"""R-Cut on DigitScenes: localisation quality beside attention baselines, and explanation cost, in one command.

    python -m benchmarks.rcut [--train 5000] [--epochs 30] [--test 500] [--width 96] [--threads 1] [--out rcut-bench]

Model: a small ViT (32 px, patch 4, an 8x8 token grid, `--width` channels, 4 blocks) with the linear CLS classifier
of the rcut-s16 entry, trained from scratch with glassvit.training.fit on DigitScenes "single" with clutter (one
digit among digit fragments and strokes; label = the digit): AdamW, lr 5e-4, batch 32, 2 warm-up epochs then
cosine, gradient clipping at 1. `--model-dir` saves the trained model there, or reuses one found there.

Quality (glassvit.evaluation.evaluate_model on the disjoint test split, target = the label): pointing game and
mask IoU (maps min-max normalised, threshold 0.5) against the digit's pixel mask, relevance mass inside it, for the
R-Cut weightings (score with one masked forward per channel as the reference, score with `--num-masks` clustered
masks, cosine, gradient, class-agnostic) beside raw attention, attention rollout, Grad-CAM and Chefer's attribution
on the same model.

Cost: seconds per image (batch 1) of each R-Cut variant as a multiple of one forward pass of the same image,
timed interleaved round by round (benchmarks.common.interleaved_times) on the DigitScenes model and on the zoo's
rcut-s16 (ViT-S/16, 224 px, random weights: cost does not depend on them). The headline ratios: gradient / forward,
and score (one forward per channel) / score (clustered masks).

Writes results.json and results.md to --out and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import interleaved_times, table
from glassvit import zoo
from glassvit.data import DigitScenes
from glassvit.evaluation.runner import EvalSettings, evaluate_model
from glassvit.training import fit

BACKBONE = dict(img_size=32, patch_size=4, depth=4, num_heads=4)
METRICS = ["accuracy", "pointing", "iou", "relevance_mass"]
BASELINES = ["attention", "rollout", "gradcam", "chefer"]


def variants(num_masks: int) -> dict[str, dict]:
    """The R-Cut settings compared: row key -> explainer kwargs."""
    return {
        "score": dict(weighting="score"),
        "score-clustered": dict(weighting="score", num_masks=num_masks),
        "cosine": dict(weighting="cosine"),
        "gradient": dict(weighting="gradient"),
        "none": dict(weighting="none"),
    }


def scenes(split: str, n: int, seed: int) -> list[dict]:
    """DigitScenes "single" items, rendered once and kept in memory."""
    data = DigitScenes(split, "single", size=BACKBONE["img_size"], num_scenes=n, seed=seed)
    return [data[i] for i in range(n)]


def trained_model(args) -> torch.nn.Module:
    if args.model_dir and (Path(args.model_dir) / "config.json").exists():
        return zoo.load(args.model_dir).eval()
    torch.manual_seed(args.seed)
    model = zoo.load("rcut-s16", num_classes=10, backbone_kwargs=dict(BACKBONE, embed_dim=args.width))
    result = fit(model, scenes("train", args.train, args.seed), val_data=None, val_fraction=0.1, epochs=args.epochs,
                 batch_size=32, lr=args.lr, warmup_epochs=min(2, args.epochs), grad_clip=1.0, seed=args.seed,
                 out_dir=args.model_dir, progress=False)
    print(result.summary())
    return result.model.eval()


def quality(model, test: list[dict], num_masks: int) -> tuple[list[dict], float]:
    """One row per explainer: pointing game (%), mask IoU and relevance mass on the test scenes; model accuracy."""
    runs = [(f"rcut {key}", "rcut", kw) for key, kw in variants(num_masks).items()]
    runs += [(name, name, {}) for name in BASELINES]
    rows = []
    for label, method, kwargs in runs:
        settings = EvalSettings(target="label", explainer_kwargs={method: kwargs})
        result = evaluate_model(model, test, explainers=[method], metrics=METRICS, settings=settings,
                                batch_size=50, progress=False, data_name="DigitScenes single (test)")
        scores = result.explanations[method]
        rows.append({"explainer": label, "pointing game": 100 * scores["pointing"], "mask IoU": scores["iou"],
                     "relevance mass": scores["relevance_mass"]})
        print(rows[-1], flush=True)
    return rows, result.accuracy["accuracy"]


def cost(model, image: torch.Tensor, settings: dict[str, dict], repeats: int) -> dict[str, float]:
    """Seconds per call of each R-Cut setting on one image as multiples of one forward pass, timed interleaved."""
    def explain(kwargs):
        return lambda: model.explain(image, target=0, method="rcut", **kwargs)

    def forward():
        with torch.no_grad():
            model(image)

    times = interleaved_times({"forward": forward, **{k: explain(kw) for k, kw in settings.items()}},
                              repeats=repeats, warmup=1)
    return {"forward ms": 1000 * times["forward"], **{k: times[k] / times["forward"] for k in settings}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=5000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--num-masks", type=int, default=None, help="clustered masks (default: channels / 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-vit-s", action="store_true", help="time only the DigitScenes model")
    p.add_argument("--model-dir", default=None, help="save the trained model here, or reuse it")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="rcut-bench")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = trained_model(args)
    k = args.num_masks or max(1, model.backbone.info.embed_dim // 16)
    test = scenes("test", args.test, args.seed)
    rows, accuracy = quality(model, test, k)
    first = "DigitScenes ViT, 32 px"
    costs = {first: cost(model, test[0]["image"][None], variants(k), args.repeats)}
    print(first, costs[first], flush=True)
    if not args.skip_vit_s:
        vit_s = zoo.load("rcut-s16", num_classes=10).eval()
        timed = {key: kw for key, kw in variants(vit_s.backbone.info.embed_dim // 16).items() if key != "cosine"}
        image = torch.randn(1, 3, 224, 224)
        costs["rcut-s16 (ViT-S/16), 224 px"] = cost(vit_s, image, timed, max(2, args.repeats // 2))
        print(costs, flush=True)

    headline = {name: {"gradient / forward": c["gradient"],
                       "score / score-clustered": c["score"] / c["score-clustered"]} for name, c in costs.items()}
    pointing = {r["explainer"]: r["pointing game"] for r in rows}
    gap = pointing["rcut score"] - pointing["rcut score-clustered"]
    md = [f"DigitScenes single with clutter, {args.test} test scenes; model accuracy {100 * accuracy:.1f}%; "
          f"score-clustered uses {k} masks for {model.backbone.info.embed_dim} channels", "", table(rows), "",
          "Cost per image (batch 1) as a multiple of one forward pass", "",
          table([{"model": name, **{key: c.get(key, float("nan")) for key in costs[first]}}
                 for name, c in costs.items()]),
          "",
          f"Headline ratios: {json.dumps(headline)}",
          f"Pointing game, score minus score-clustered: {gap:+.2f} points"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"args": vars(args), "accuracy": accuracy, "quality": rows, "cost": costs, "headline": headline,
         "pointing_gap": gap}, indent=2))
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
