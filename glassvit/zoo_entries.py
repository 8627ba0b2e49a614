"""The named zoo entries, grouped by head. Each head's entries sit in one block below."""

from __future__ import annotations

from .zoo import ModelSpec, register

VIT_PAPER = "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021 (arXiv:2010.11929)"

# timm backbones per size: (timm name, size label, width, attention heads)
VIT_SIZES = {
    "ti16": ("vit_tiny_patch16_224", "Ti", 192, 3),
    "s16": ("vit_small_patch16_224", "S", 384, 6),
    "b16": ("vit_base_patch16_224", "B", 768, 12),
    "l16": ("vit_large_patch16_224", "L", 1024, 16),
}

# Black-box baselines: the standard linear classifier on the CLS token.
for size, (timm_name, label, width, _) in VIT_SIZES.items():
    register(ModelSpec(
        name=f"vit-{size}",
        backbone=timm_name,
        head="linear",
        num_classes=1000,
        description=f"ViT-{label}/16 at 224 px with timm's linear classifier (black-box baseline, width {width})",
        paper=VIT_PAPER,
    ))
