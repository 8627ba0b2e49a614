"""`glassvit eval`: accuracy and explanation quality of a model on annotated data, as JSON and a Markdown table."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import zoo
from ..evaluation import metrics as M
from ..evaluation.runner import ALL_METRICS, DEFAULT_EXPLAINERS, EvalSettings, evaluate_model
from ..training.datasets import open_data


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_eval(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Example: glassvit eval --model runs/digits --data digitscenes:single --explainers native,rollout,"
                "gradcam --out eval-digits")
    p.add_argument("--model", required=True, help="zoo name (glassvit list), model directory, or hf-hub:org/repo")
    p.add_argument("--pretrained", action="store_true",
                   help="for zoo names: load the published weights (bundled or Hub), e.g. --model vit-net-digits")
    p.add_argument("--data", required=True,
                   help="a folder of class subfolders, a .csv/.jsonl manifest (masks and boxes give the localisation "
                        "metrics), or digitscenes:TASK[:SIZE] (its test split)")
    p.add_argument("--explainers", type=_names, default=list(DEFAULT_EXPLAINERS),
                   help="comma-separated: native (the model's own) and any post-hoc method (attention, rollout, "
                        "chefer, gradcam, ig, ...) (default: %(default)s)")
    p.add_argument("--metrics", type=_names, default=None,
                   help=f"comma-separated, from: {', '.join(ALL_METRICS)} (default: every metric the data has "
                        "annotations for, without the slow randomisation check)")
    p.add_argument("--out", default="eval-output", help="folder for eval.json and eval.md (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--num-scenes", type=int, default=None, help="DigitScenes: scenes in the test split (default 500)")
    p.add_argument("--target", choices=("label", "prediction"), default="label",
                   help="the class every explainer explains (default: %(default)s)")
    p.add_argument("--step", type=float, default=0.05, help="pixel fraction per deletion/insertion step")
    p.add_argument("--deletion-baseline", choices=M.BASELINES, default="zero")
    p.add_argument("--insertion-baseline", choices=M.BASELINES, default="blur")
    p.add_argument("--tolerance", type=int, default=0, help="pointing-game tolerance in pixels")
    p.add_argument("--threshold", type=float, default=0.5, help="IoU threshold on min-max normalised maps")
    p.add_argument("--ig-steps", type=int, default=32, help="integration steps of the ig explainer")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")


def run_eval(args: argparse.Namespace) -> int:
    model = zoo.load(args.model, pretrained=args.pretrained)
    data = open_data(args.data, model, split="test", train=False, num_scenes=args.num_scenes)
    settings = EvalSettings(target=args.target, step=args.step, deletion_baseline=args.deletion_baseline,
                            insertion_baseline=args.insertion_baseline, tolerance=args.tolerance,
                            threshold=args.threshold, explainer_kwargs={"ig": {"steps": args.ig_steps}})
    result = evaluate_model(model, data, explainers=args.explainers, metrics=args.metrics, settings=settings,
                            batch_size=args.batch_size, max_images=args.max_images, progress=args.progress,
                            data_name=str(args.data), device=args.device)
    json_path, md_path = result.save(Path(args.out))
    print(result.to_markdown())
    print(f"wrote {json_path} and {md_path}")
    return 0
