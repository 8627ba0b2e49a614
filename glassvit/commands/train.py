"""`glassvit train`: fine-tune a zoo model on a folder, a manifest or DigitScenes, into a zoo.load run directory.

Options resolve in this order: the command line, then --config FILE (JSON, keys = option names with underscores),
then, with --resume, the options saved in RUN_DIR/train_config.json, then the defaults below.
Under `torchrun --nproc_per_node N -m glassvit train ...` every process runs this command; rank 0 logs and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from .. import serialization, zoo
from ..errors import GlassViTError, unknown
from ..training import TrainingInterrupted, fit
from ..training.datasets import open_data
from ..training.loop import evaluate

CONFIG_NAME = "train_config.json"

# option -> (default, help); every option's default is applied after the command line and the config file
OPTIONS: dict[str, tuple[Any, str]] = {
    "model": (None, "zoo name (glassvit list) or a model directory to fine-tune (required)"),
    "data": (None, "training data: a folder of class subfolders, a .csv/.jsonl manifest, or digitscenes:TASK[:SIZE] "
                   "(TASK single|evenodd|multi) (required)"),
    "out": (None, "run directory: config.json + model.safetensors (a zoo.load directory), metrics.jsonl, "
                  "checkpoint/ (required)"),
    "val": (None, "validation data (same forms as --data); default: hold out --val-fraction of the training data"),
    "test": (None, "test data evaluated once with the final model; written to RUN_DIR/test_metrics.json"),
    "num_classes": (None, "number of classes; default: the data's"),
    "pretrained": (False, "start from timm's pretrained backbone weights (download or Hugging Face cache)"),
    "pretrained_file": (None, "local timm weights file for the backbone (offline pretrained start)"),
    "img_size": (None, "input size override for the backbone (e.g. 32 for a tiny run)"),
    "backbone_kwargs": ({}, "JSON object merged into the timm backbone's arguments, e.g. '{\"patch_size\": 4}'"),
    "head_kwargs": ({}, "JSON object merged into the head's arguments"),
    "epochs": (10, "training epochs"),
    "batch_size": (32, "images per optimiser step over all processes (divided among them)"),
    "lr": (1e-3, "peak learning rate of the head"),
    "backbone_lr": (None, "peak learning rate of the backbone; default: --lr"),
    "weight_decay": (0.05, "AdamW weight decay (not on biases, norms, position embeddings)"),
    "warmup_epochs": (0.0, "linear warm-up epochs (fractional allowed), then cosine decay per step"),
    "min_lr": (0.0, "learning rate at the end of the cosine decay"),
    "grad_clip": (None, "clip the global gradient norm to this value"),
    "accumulate": (1, "micro-batches per optimiser step (gradient accumulation)"),
    "freeze_backbone_epochs": (0, "train only the head for this many first epochs"),
    "amp": (False, "mixed precision (bfloat16; float16 with loss scaling on GPUs without bfloat16)"),
    "seed": (0, "seed of everything random (model init, order, augmentation, validation split)"),
    "select_metric": ("accuracy", "validation metric that picks the kept weights (accuracy, loss, concept_accuracy, "
                                  "or a loss term; *loss* is minimised)"),
    "val_fraction": (0.1, "share of the training data held out for validation when --val is not given (0: none)"),
    "num_workers": (0, "data-loading worker processes per training process"),
    "augment": ({}, "JSON object of timm create_transform training arguments, e.g. '{\"scale\": [0.5, 1], "
                    "\"hflip\": 0}'; '{\"no_aug\": true}' disables augmentation"),
    "num_scenes": (None, "DigitScenes: scenes in the training split (default 2000)"),
    "skip_bad_images": (False, "skip unreadable images (checked up front) and report how many, instead of failing"),
    "resume": (False, "continue the run in --out from its checkpoint (options default to the saved ones)"),
    "progress": (True, "progress bars and per-epoch lines"),
    "device": (None, "torch device; default cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu"),
}
FLAGS = {"pretrained", "amp", "skip_bad_images", "resume", "progress"}
JSON_OPTIONS = {"backbone_kwargs", "head_kwargs", "augment"}
TYPES = {"epochs": int, "batch_size": int, "lr": float, "backbone_lr": float, "weight_decay": float,
         "warmup_epochs": float, "min_lr": float, "grad_clip": float, "accumulate": int,
         "freeze_backbone_epochs": int, "seed": int, "val_fraction": float, "num_workers": int, "num_classes": int,
         "img_size": int, "num_scenes": int}
# options that describe the run itself, not where it lives or how it is shown
RUN_OPTIONS = [k for k in OPTIONS if k not in ("out", "resume", "progress", "device", "test")]


def configure_train(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Distributed: torchrun --nproc_per_node N -m glassvit train ... (multi-node: torchrun's --nnodes, "
                "--node_rank and --rdzv_* flags). Example: glassvit train --model vit-s16 --pretrained --data "
                "birds/train --out runs/birds --epochs 30 --lr 1e-3 --backbone-lr 1e-5 --warmup-epochs 1")
    p.add_argument("--config", metavar="FILE", help="JSON file of options (keys as below, with underscores); "
                                                    "command-line options take precedence")
    for name, (default, text) in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        shown = f" (default: {json.dumps(default)})" if default not in (None, {}) else ""
        if name in FLAGS:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text + shown)
        elif name in JSON_OPTIONS:
            p.add_argument(flag, dest=name, metavar="JSON", type=_json_object, default=None, help=text)
        else:
            p.add_argument(flag, dest=name, type=TYPES.get(name, str), default=None, help=text + shown,
                           metavar=name.upper().replace("_", "-") if name not in ("model", "data", "out") else None)


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Command line > --config file > saved run options (with --resume) > defaults."""
    given = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    from_file = _read_options(Path(args.config)) if getattr(args, "config", None) else {}
    resume = given.get("resume", from_file.get("resume", False))
    out = given.get("out", from_file.get("out"))
    saved = {}
    if resume and out is not None and (Path(out) / CONFIG_NAME).is_file():
        saved = _read_options(Path(out) / CONFIG_NAME)
    options = {k: default for k, (default, _) in OPTIONS.items()}
    options.update(saved)
    options.update(from_file)
    options.update(given)
    for key in ("model", "data", "out"):
        if options[key] is None:
            raise GlassViTError(f"--{key} is required (on the command line or in --config)")
    return options


def run_train(args: argparse.Namespace) -> int:
    o = resolve_options(args)
    rank = int(os.environ.get("RANK", "0"))
    out = Path(o["out"])
    torch.manual_seed(o["seed"])
    model, train_data = _model_and_data(o)
    val_data = _open(o["val"], model, o, split="val", train=False) if o["val"] else None
    skipped = [d for d in (train_data, val_data) if getattr(d, "skipped", None)]
    if rank == 0:
        for d in skipped:
            print(f"skipped {len(d.skipped)} unreadable images in {d.source}, e.g. {d.skipped[0]}")
        if not o["resume"] or not (out / CONFIG_NAME).is_file():
            serialization.write_json(out / CONFIG_NAME, {k: o[k] for k in RUN_OPTIONS})
    try:
        result = _fit(model, train_data, val_data, o, out, rank)
    except TrainingInterrupted as e:
        print(f"glassvit train: {e}", file=sys.stderr)
        return 130
    if rank == 0 and not o["progress"]:
        print(result.summary())
    if o["test"] and rank == 0:
        test_data = _open(o["test"], result.model, o, split="test", train=False)
        metrics = evaluate(result.model, test_data, batch_size=o["batch_size"], num_workers=o["num_workers"])
        serialization.write_json(out / "test_metrics.json", metrics)
        print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def _fit(model, train_data, val_data, o: dict[str, Any], out: Path, rank: int):
    return fit(
        model, train_data, val_data, epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"],
        backbone_lr=o["backbone_lr"], weight_decay=o["weight_decay"], warmup_epochs=o["warmup_epochs"],
        min_lr=o["min_lr"], grad_clip=o["grad_clip"], accumulate=o["accumulate"],
        freeze_backbone_epochs=o["freeze_backbone_epochs"], amp=o["amp"], seed=o["seed"], out_dir=out,
        resume=o["resume"], select_metric=o["select_metric"], val_fraction=o["val_fraction"],
        num_workers=o["num_workers"], progress=o["progress"] and rank == 0, device=o["device"],
    )


def _model_and_data(o: dict[str, Any]):
    """Build the model (its data config and token grid size the data), then match its classes to the data's."""
    overrides: dict[str, Any] = {}
    if o["img_size"] is not None:
        overrides["img_size"] = o["img_size"]
    for key in ("backbone_kwargs", "head_kwargs"):
        if o[key]:
            overrides[key] = dict(o[key])
    build = dict(pretrained=o["pretrained"], pretrained_file=o["pretrained_file"]) if not Path(o["model"]).is_dir() else {}
    probe = zoo.load(o["model"], num_classes=o["num_classes"], **overrides)
    data = _open(o["data"], probe, o, split="train", train=True)
    num_classes = getattr(data, "num_classes", None)
    if o["num_classes"] is not None and num_classes is not None and o["num_classes"] != num_classes:
        raise GlassViTError(f"--num-classes {o['num_classes']} but the data {o['data']} has {num_classes} classes")
    wanted = o["num_classes"] or num_classes or probe.num_classes
    if getattr(data, "multi_label", False) and not probe.head.multi_label:
        overrides.setdefault("head_kwargs", {})["multi_label"] = True
    if wanted == probe.num_classes and not build.get("pretrained") and not build.get("pretrained_file") \
            and "multi_label" not in overrides.get("head_kwargs", {}):
        model = probe
    else:
        torch.manual_seed(o["seed"])
        model = zoo.load(o["model"], num_classes=wanted, **build, **overrides)
    names = getattr(data, "label_names", None)
    if names is not None and len(names) == model.num_classes:
        model.config.label_names = list(names)
    return model, data


def _open(spec: str, model, o: dict[str, Any], split: str, train: bool):
    if split == "val" and str(spec).startswith("digitscenes:"):
        raise GlassViTError("DigitScenes validation data is held out from its training split: drop --val and set "
                            "--val-fraction")
    return open_data(spec, model, split=split, train=train, augment=o["augment"] or None,
                     skip_bad_images=o["skip_bad_images"], num_scenes=o["num_scenes"] if split == "train" else None)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _read_options(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GlassViTError(f"config file {path} does not exist")
    try:
        options = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GlassViTError(f"config file {path} is not valid JSON: {e}") from e
    if not isinstance(options, dict):
        raise GlassViTError(f"config file {path} must hold a JSON object of options")
    for key, value in options.items():
        if key not in OPTIONS:
            raise unknown(f"option in {path}", key, OPTIONS)
        if key in JSON_OPTIONS and not isinstance(value, dict):
            raise GlassViTError(f"{path}: {key} must be a JSON object")
    return options
