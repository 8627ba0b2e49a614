"""Tiny configurations that keep the suite fast: every zoo model is tested on a 32x32, 2-block backbone."""

from __future__ import annotations

from typing import Any

import torch

from glassvit import zoo

TINY_IMG = 32
TINY_VIT = dict(img_size=TINY_IMG, patch_size=4, embed_dim=48, depth=2, num_heads=3)
TINY_SWIN = dict(img_size=TINY_IMG, patch_size=2, window_size=4, embed_dim=24, depths=(1, 1), num_heads=(1, 2))

# head name -> head kwargs a tiny backbone needs (e.g. attention heads dividing the tiny width)
TINY_HEAD_KWARGS: dict[str, dict[str, Any]] = {}


def tiny_overrides(name: str) -> dict[str, Any]:
    """Overrides that shrink zoo model `name` to a tiny backbone of the same family."""
    spec = zoo.get_spec(name)
    backbone = TINY_SWIN if "swin" in spec.backbone else TINY_VIT
    return dict(backbone_kwargs=dict(backbone), head_kwargs=dict(TINY_HEAD_KWARGS.get(spec.head, {})))


def tiny_model(name: str, num_classes: int = 5, seed: int = 0, **overrides: Any):
    torch.manual_seed(seed)
    merged = tiny_overrides(name)
    for key in ("backbone_kwargs", "head_kwargs"):
        merged[key].update(overrides.pop(key, {}))
    return zoo.load(name, num_classes=num_classes, **merged, **overrides)
