"""AdamW with separate backbone and head learning rates, and timm's warm-up + cosine schedule stepped per update.

Both reference recipes fine-tune a pretrained backbone slowly and a new head fast (ViT-NeT: AdamW, cosine per
iteration with a warm-up epoch; Concept Transformer: AdamW), so parameters fall into four groups: backbone / head x
decayed / not decayed. Following timm (`param_groups_weight_decay`), biases, norm weights (every 1-d parameter) and
the backbone's `no_weight_decay()` names (position embedding, class token) are not decayed.
"""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The backbone's parameters, including the blocks it handed over to a head (Backbone.split_off_blocks)."""
    params = list(model.backbone.parameters())
    for module in model.backbone.handed_over:
        params += list(module.parameters())
    return params


def param_groups(model: nn.Module, lr: float, backbone_lr: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of a GlassViT; every parameter belongs to exactly one group (frozen ones too).

    Backbone blocks that a head runs itself (handed over by Backbone.split_off_blocks) keep the backbone's rate.
    """
    skip = set()
    timm_model = model.backbone.model
    if hasattr(timm_model, "no_weight_decay"):
        skip = {f"backbone.model.{n}" for n in timm_model.no_weight_decay()}
    in_backbone = {id(p) for p in backbone_parameters(model)}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        part = "backbone" if id(p) in in_backbone else "head"
        decay = p.ndim > 1 and name not in skip
        groups.setdefault((part, decay), []).append(p)
    return [
        {"params": params, "lr": backbone_lr if part == "backbone" else lr, "weight_decay": weight_decay if decay else 0.0,
         "name": f"{part}{'' if decay else '_no_decay'}"}
        for (part, decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, lr: float, backbone_lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, lr, backbone_lr, weight_decay), lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    min_lr: float = 0.0) -> CosineLRScheduler:
    """Linear warm-up from 0 over `warmup_steps` updates, then cosine decay to `min_lr` at `total_steps`."""
    return CosineLRScheduler(optimizer, t_initial=max(total_steps - warmup_steps, 1), lr_min=min_lr,
                             warmup_t=warmup_steps, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
