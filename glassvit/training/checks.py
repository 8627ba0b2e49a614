"""Checks that turn data/model mismatches into one clear message before (or at the first batch of) training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import GlassViTError


def check_data(model: nn.Module, data: Any, what: str) -> None:
    """Dataset-level facts (declared by glassvit's datasets and DigitScenes) against the model."""
    num_classes = getattr(data, "num_classes", None)
    if num_classes is None and hasattr(data, "dataset"):  # a Subset
        return check_data(model, data.dataset, what)
    if num_classes is not None and num_classes != model.num_classes:
        raise GlassViTError(f"the {what} data has {num_classes} classes but the model has {model.num_classes}; "
                            f"build the model with num_classes={num_classes} (--num-classes {num_classes})")
    multi = getattr(data, "multi_label", None)
    if multi is not None and bool(multi) != bool(model.head.multi_label):
        kind = "multi-label" if multi else "single-label"
        raise GlassViTError(f"the {what} data is {kind} but the model's head has multi_label="
                            f"{model.head.multi_label}; set head_kwargs multi_label={bool(multi)}")


def check_batch(model: nn.Module, batch: dict[str, Any]) -> None:
    """Keys and annotation shapes of one collated batch against the model's classes and token grid."""
    if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise GlassViTError(f"datasets must yield dicts with 'image' and 'label' (got {keys})")
    model.backbone.check_input(batch["image"])
    b = batch["image"].shape[0]
    y = batch["label"]
    c = model.num_classes
    if model.head.multi_label:
        if tuple(y.shape) != (b, c):
            raise GlassViTError(f"multi-label targets must be (B,{c}) multi-hot, got {tuple(y.shape)}")
    elif y.ndim == 1:
        if y.is_floating_point():
            raise GlassViTError(f"class labels must be integers, got {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
            raise GlassViTError(f"labels must lie in [0, {c}) for a {c}-class model, got range "
                                f"[{int(y.min())}, {int(y.max())}]")
    elif tuple(y.shape) != (b, c):
        raise GlassViTError(f"labels must be (B,) class indices or (B,{c}) soft targets, got {tuple(y.shape)}")
    h, w = model.backbone.info.grid
    spatial = batch.get("spatial_concepts")
    if spatial is not None and (spatial.ndim != 3 or spatial.shape[1] != h * w):
        raise GlassViTError(f"spatial_concepts must be (B,{h * w},K) on the model's {h}x{w} token grid, got "
                            f"{tuple(spatial.shape)}")
    concepts = batch.get("concepts")
    if concepts is not None:
        if concepts.ndim != 2:
            raise GlassViTError(f"concepts must be (B,K), got {tuple(concepts.shape)}")
        if spatial is not None and spatial.shape[-1] != concepts.shape[-1]:
            raise GlassViTError(f"concepts have K={concepts.shape[-1]} but spatial_concepts K={spatial.shape[-1]}")
    for key in ("concepts", "spatial_concepts"):
        value = batch.get(key)
        if value is not None and not torch.is_floating_point(value):
            raise GlassViTError(f"{key} must be float with NaN for missing annotations, got {value.dtype}")
