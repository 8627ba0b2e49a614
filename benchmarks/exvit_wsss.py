"""eX-ViT on DigitScenes: weakly supervised segmentation from image labels, against the black-box baseline, with the
ablation of every loss term, in one command.

    python -m benchmarks.exvit_wsss [--epochs 10] [--train 20000] [--seed 0] [--out exvit-wsss] [--backbone-from DIR]
    python -m benchmarks.exvit_wsss --model glassvit/weights/ex-vit-digits     # score a saved model, no training

Data: DigitScenes "multi" (2-3 distinct digits per 32 px scene, multi-hot labels over 10 digits). Training sees the
image labels only; the per-class masks are read for evaluation alone. 300 further training scenes select each model's
background threshold; the disjoint test split (500 scenes, unseen handwritten scans) gives the numbers.

Models: the same small ViT for all, the backbone of the bundled DigitScenes models (32 px, patch 4, width 96, 4
blocks; weights of the bundled `vit-digits`, trained on single-digit scenes, or of --backbone-from), as weakly
supervised segmentation starts from a pretrained backbone. Each model gets a fresh head and is fine-tuned with
glassvit.training.fit on the same budget (AdamW, lr 1e-3 for the head and 2e-4 for the backbone, one warm-up epoch
then cosine, batch 64, --epochs).

    linear CAM           timm's linear classifier on mean-pooled patch tokens (vit-s16 head, pool="avg"): the
                         black-box baseline, explained by its exact class activation maps relu(W_c z_i)
    linear Grad-CAM      the same trained model explained by Grad-CAM (glassvit.evaluation.baselines)
    eX-ViT               ex-vit-s16 head with E-MHA locality starting at 1.0 and the global and local loss terms;
                         the attribute diversity term off (EXVIT; the configuration that localised best in a sweep
                         on this benchmark, see the README). "+ refine": pseudo masks after 2 E-MHA affinity steps
    eX-ViT - global / - local   that loss term's weight set to 0
    eX-ViT + diversity   the diversity term on (weight 0.1, the head's default)
    eX-ViT - locality    the E-MHA locality bias held at 0 (the backbone's plain last block)

Metrics: multi-label mAP of the logits on the test split; pseudo-mask mIoU (background + 10 digits, from the summed
confusion matrix) on the test split, each class map of a labelled class normalised by its maximum, background below
the threshold (the weakly supervised protocol: image labels pick the classes, as for PASCAL VOC train pseudo masks).
Writes results.json and results.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.transforms import Normalize

from benchmarks.common import table
from glassvit import serialization, zoo
from glassvit.data import DigitScenes
from glassvit.evaluation.metrics import confusion_matrix, mean_average_precision, miou_from_confusion
from glassvit.heads.exvit import label_maps
from glassvit.training import fit
from glassvit.zoo_entries import DIGITS_BACKBONE, DIGITS_VIT

BACKBONE = DIGITS_VIT
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
VAL_SCENES = 300
EXVIT = dict(locality=1.0, diversity_weight=0.0)
VARIANTS = {
    "eX-ViT": {},
    "eX-ViT - global": dict(global_weight=0.0),
    "eX-ViT - local": dict(local_weight=0.0),
    "eX-ViT + diversity": dict(diversity_weight=0.1),
    "eX-ViT - locality": dict(locality=0.0),
}


class Scenes(torch.utils.data.Dataset):
    """DigitScenes items rendered once and kept in memory (image normalised with the backbone's `mean` and `std`,
    multi-hot label, per-class masks)."""

    multi_label, num_classes = True, 10

    def __init__(self, split: str, indices: range, seed: int, mean: list[float], std: list[float]):
        scenes = DigitScenes(split, "multi", size=BACKBONE["img_size"], num_scenes=indices.stop, seed=seed,
                             transform=Normalize(mean, std))
        items = [scenes[i] for i in indices]
        self.data = {k: torch.stack([it[k] for it in items]) for k in ("image", "label", "masks")}

    def __len__(self) -> int:
        return len(self.data["image"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.data.items()}


def ground_truth(masks: torch.Tensor) -> torch.Tensor:
    """(B,10,H,W) bool per-class masks -> (B,H,W) label map, 0 background, c+1 digit c."""
    fg = masks.any(1)
    return torch.where(fg, masks.float().argmax(1) + 1, torch.zeros_like(fg, dtype=torch.long))


def class_maps(model, x: torch.Tensor, method: str, refine_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B,C) and per-class maps (B,C,H,W): the eX-ViT head's own class maps (its saliency for every class,
    after `refine_steps` of E-MHA affinity propagation), else each class's saliency from `model.explain`."""
    if model.config.head == "exvit" and method == "native":
        with torch.no_grad():
            out = model.forward_detailed(x)
            return out.logits, model.head.segmentation_maps(out, refine_steps)
    explanations = [model.explain(x, target=c, method=method) for c in range(model.num_classes)]
    return explanations[0].logits, torch.stack([e.saliency for e in explanations], 1)


def score(model, data: Scenes, method: str, thresholds, refine_steps: int = 0, batch: int = 100):
    """({threshold: pseudo-mask mIoU}, mAP) of `model` on `data`."""
    model.eval()
    device = next(model.parameters()).device
    confusions = {t: torch.zeros(11, 11, dtype=torch.long) for t in thresholds}
    logits = []
    for s in range(0, len(data), batch):
        x, y, masks = (data.data[k][s:s + batch] for k in ("image", "label", "masks"))
        out, maps = (t.cpu() for t in class_maps(model, x.to(device), method, refine_steps))
        logits.append(out)
        gt = ground_truth(masks)
        for t in thresholds:
            confusions[t] += confusion_matrix(label_maps(maps, y.bool(), t), gt, 11)
    miou = {t: float(miou_from_confusion(c)[1]) for t, c in confusions.items()}
    return miou, float(mean_average_precision(torch.cat(logits), data.data["label"]))


def evaluate(model, val: Scenes, test: Scenes, method: str = "native", refine_steps: int = 0) -> dict[str, float]:
    on_val, _ = score(model, val, method, THRESHOLDS, refine_steps)
    threshold = max(on_val, key=on_val.get)
    on_test, mean_ap = score(model, test, method, (threshold,), refine_steps)
    return {"mIoU": 100 * on_test[threshold], "mAP": 100 * mean_ap, "threshold": threshold}


def train(name: str, head_kwargs: dict, data: Scenes, args) -> tuple[object, float]:
    torch.manual_seed(args.seed)
    model = zoo.load(name, num_classes=10, backbone=DIGITS_BACKBONE, backbone_kwargs=dict(BACKBONE),
                     head_kwargs=dict(head_kwargs, multi_label=True), pretrained_file=str(args.backbone_from))
    if name.startswith("ex-vit") and head_kwargs.get("locality") == 0.0:
        model.head.locality.requires_grad_(False)
    start = time.perf_counter()
    fit(model, data, val_data=None, val_fraction=0, epochs=args.epochs, batch_size=64, lr=1e-3, backbone_lr=2e-4,
        warmup_epochs=1, seed=args.seed, progress=False)
    return model, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train", type=int, default=20000, help="training scenes")
    p.add_argument("--backbone-from", type=Path, default=zoo.BUNDLED_DIR / "vit-digits",
                   help="saved glassvit model directory whose backbone every model starts from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="rows to run (default: all)")
    p.add_argument("--out", type=Path, default=Path("exvit-wsss"))
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--model", type=Path, help="score this saved model (a zoo.load directory, e.g. "
                                               "glassvit/weights/ex-vit-digits) on the same protocol instead of "
                                               "training the rows")
    p.add_argument("--head-kwargs", type=json.loads, default={},
                   help="JSON object of eX-ViT head arguments for every eX-ViT row (default: %s)" % json.dumps(EXVIT))
    args = p.parse_args(argv)
    config = serialization.read_config(args.backbone_from)["pretrained_cfg"]  # a clear error before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    norm = dict(mean=config["mean"], std=config["std"])
    val = Scenes("train", range(args.train, args.train + VAL_SCENES), args.seed, **norm)
    test = Scenes("test", range(500), args.seed, **norm)
    rows = []

    def report(name, result, secs):
        rows.append({"model": name, **result, "train s": secs})
        print(table(rows[-1:]), flush=True)

    if args.model is not None:  # score a saved model: no training rows
        report(str(args.model), evaluate(zoo.load(args.model), val, test), 0.0)
    else:
        data = Scenes("train", range(args.train), args.seed, **norm)
    wanted = lambda n: args.model is None and (not args.only or n in args.only)  # noqa: E731
    if wanted("linear CAM") or wanted("linear Grad-CAM"):
        model, secs = train("vit-s16", dict(pool="avg"), data, args)
        if wanted("linear CAM"):
            report("linear CAM", evaluate(model, val, test), secs)
        if wanted("linear Grad-CAM"):
            report("linear Grad-CAM", evaluate(model, val, test, "gradcam"), secs)
    for name, kwargs in VARIANTS.items():
        if not wanted(name):
            continue
        model, secs = train("ex-vit-s16", {**EXVIT, **args.head_kwargs, **kwargs}, data, args)
        report(name, evaluate(model, val, test), secs)
        if name == "eX-ViT":
            report("eX-ViT + refine", evaluate(model, val, test, refine_steps=2), secs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"settings": vars(args), "backbone": BACKBONE, "rows": rows},
                                                      indent=2, default=str))
    (args.out / "results.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
