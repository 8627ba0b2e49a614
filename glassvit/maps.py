"""Small shape utilities shared by heads and explainers: token vectors <-> grid maps <-> input-resolution maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .errors import GlassViTError


def to_grid(values: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B,N[,K]) token values -> (B,[K,]h,w) maps, N = h*w row-major."""
    h, w = grid
    if values.ndim == 2:
        return rearrange(values, "b (h w) -> b h w", h=h, w=w)
    return rearrange(values, "b (h w) k -> b k h w", h=h, w=w)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,h,w) or (B,K,h,w) -> same at `size` (H,W), bilinear (align_corners=False), clamped non-negative."""
    squeeze = maps.ndim == 3
    x = maps.unsqueeze(1) if squeeze else maps
    x = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False).clamp_min(0)
    return x.squeeze(1) if squeeze else x


def minmax(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Normalise each map of (B,...) to [0,1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)


def resolve_target(logits: Tensor, target: Tensor | int | None) -> Tensor:
    """The explained class per image: the prediction when None, an int broadcast over the batch, or (B,)."""
    if target is None:
        return logits.argmax(-1)
    target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if target.numel() == 1 and logits.shape[0] > 1:
        target = target.expand(logits.shape[0])
    if target.shape[0] != logits.shape[0]:
        raise GlassViTError(f"target has {target.shape[0]} entries for a batch of {logits.shape[0]}")
    if ((target < 0) | (target >= logits.shape[-1])).any():
        raise GlassViTError(f"target classes must lie in [0, {logits.shape[-1]}), got {target.tolist()}")
    return target
