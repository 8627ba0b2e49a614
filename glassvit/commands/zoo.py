"""`glassvit list [PATTERN]` and `glassvit info NAME`."""

from __future__ import annotations

import argparse

from .. import zoo


def configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'vit-net*' (default: all)")


def run_list(args: argparse.Namespace) -> int:
    names = zoo.list_models(args.pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {zoo.get_spec(name).description}")
    return 0


def configure_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a zoo name, a model directory, or hf-hub:org/repo")


def run_info(args: argparse.Namespace) -> int:
    model = zoo.load(args.name)
    cfg = model.config
    spec = zoo.REGISTRY.get(cfg.name)
    dc = model.data_config
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    n_head = sum(p.numel() for p in model.head.parameters())
    rows = [
        ("name", cfg.name),
        ("description", spec.description if spec else "-"),
        ("paper", spec.paper if spec else (type(model.head).paper or "-")),
        ("backbone", f"{cfg.backbone} {cfg.backbone_kwargs or ''}".strip()),
        ("head", f"{cfg.head} {cfg.head_kwargs or ''}".strip()),
        ("explainer", cfg.explainer),
        ("classes", str(cfg.num_classes)),
        ("input size", "x".join(str(v) for v in dc["input_size"])),
        ("mean / std", f"{tuple(dc['mean'])} / {tuple(dc['std'])}"),
        ("parameters", f"{n_backbone + n_head:,} (backbone {n_backbone:,}, head {n_head:,})"),
        ("weights", (spec.weights or "backbone via timm (pretrained=True); head untrained") if spec else args.name),
    ]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0
