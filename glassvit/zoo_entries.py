"""The named zoo entries, grouped by head. Each head's entries sit in one block below."""

from __future__ import annotations

from typing import Any

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

# Concept Transformer: global concepts queried by the CLS token, spatial concepts queried by every patch token.
# Sizes follow the paper's CUB-200 setup (13 global, 95 spatial concepts); concept attention heads equal the
# backbone's, which always divide the width (the reference pairs ViT-L's 1024 with 12 heads and crashes).
CT_PAPER = "Rigotti et al., Attention-based Interpretability with Concept Transformers, ICLR 2022"
for size, (timm_name, label, width, heads) in VIT_SIZES.items():
    register(ModelSpec(
        name=f"ct-{size}",
        backbone=timm_name,
        head="concept",
        num_classes=200,
        description=f"ViT-{label}/16 at 224 px with a Concept Transformer head: 13 global + 95 spatial concepts, "
                    f"{heads} concept-attention heads (width {width}); explained by per-concept logit contributions",
        paper=CT_PAPER,
        head_kwargs=dict(num_concepts=13, num_spatial_concepts=95, num_heads=heads),
    ))

# R-Cut: the linear classifier explained by Relationship Weighted Out and a normalised cut of the last block's input
# tokens (glassvit/heads/rcut.py); model.explain(x) runs it, any other method stays available by name.
RCUT_PAPER = ("Niu et al., R-Cut: Enhancing Explainability in Vision Transformers with Relationship Weighted Out "
              "and Cut, Sensors 2024 (arXiv:2307.09050)")
for size in ("s16", "b16"):
    timm_name, label, width, _ = VIT_SIZES[size]
    register(ModelSpec(
        name=f"rcut-{size}",
        backbone=timm_name,
        head="linear",
        num_classes=1000,
        description=f"ViT-{label}/16 at 224 px, linear classifier explained by R-Cut (score weighting of the "
                    f"{width} channels entering the last block, normalised cut of the token graph)",
        paper=RCUT_PAPER,
        explainer="rcut",
    ))

# eX-ViT: the backbone's last block becomes an E-MHA block (its pretrained weights plus a learned locality bias),
# read by attribute prototypes whose maps add up to class maps and logits; trained from image labels (multi-label,
# PASCAL VOC's 20 classes by default) for weakly supervised segmentation (glassvit/heads/exvit.py).
EXVIT_PAPER = ("Yu et al., eX-ViT: A Novel eXplainable Vision Transformer for Weakly Supervised Semantic "
               "Segmentation, arXiv:2207.05358")
for size in ("s16", "b16"):
    timm_name, label, width, _ = VIT_SIZES[size]
    register(ModelSpec(
        name=f"ex-vit-{size}",
        backbone=timm_name,
        head="exvit",
        num_classes=20,
        description=f"ViT-{label}/16 at 224 px with an eX-ViT head: E-MHA last block, 4 attribute prototypes per "
                    f"class (width {width}), class maps and pseudo masks from image labels (multi-label)",
        paper=EXVIT_PAPER,
        head_kwargs=dict(multi_label=True),
    ))

# ViT-NeT: a soft binary decision tree with one prototype per internal node decodes the final tokens
# (glassvit/heads/neural_tree.py). Depth 4 (15 prototypes, 16 leaves) with 1x1 prototypes of width embed_dim / 4 is
# the paper's CUB-200 setting; the paper uses depth=6 for Stanford Cars and Dogs, with proto_size=2 for Dogs.
VITNET_PAPER = "Kim et al., ViT-NeT: Interpretable Vision Transformers with Neural Tree Decoder, ICML 2022"
for size, (timm_name, label, width, _) in VIT_SIZES.items():
    register(ModelSpec(
        name=f"vit-net-{size}",
        backbone=timm_name,
        head="neural_tree",
        num_classes=200,
        description=f"ViT-{label}/16 at 224 px with a ViT-NeT neural tree: depth 4, 15 prototypes of width "
                    f"{width // 4} on the 14x14 token grid, per-child token refinement; explained by its greedy "
                    f"decision path",
        paper=VITNET_PAPER,
        head_kwargs=dict(depth=4, proto_size=1),
    ))
# The paper's own configuration: Swin-B pretrained on ImageNet-22k at 224 px / window 7, fine-tuned at 448 px with
# window 14 (final tokens 14x14x1024, prototype width 256), stochastic depth 0.1. timm's Swin is the same
# architecture as the official code's; what differs: timm resizes the relative-position tables from window 7 to 14
# with its BEiT-style geometric interpolation where the official code interpolates them bicubically.
register(ModelSpec(
    name="vit-net-swin-b",
    backbone="swin_base_patch4_window7_224.ms_in22k",
    head="neural_tree",
    num_classes=200,
    description="Swin-B (ImageNet-22k) at 448 px, window 14, with a ViT-NeT tree of depth 4 on its 14x14x1024 "
                "tokens: the paper's CUB-200 configuration (relative-position tables resized by timm's "
                "interpolation instead of the official bicubic one)",
    paper=VITNET_PAPER,
    backbone_kwargs=dict(img_size=448, window_size=14, drop_path_rate=0.1),
    head_kwargs=dict(depth=4, proto_size=1),
))

# Bundled DigitScenes models (glassvit/weights, regenerated by `python -m glassvit.bundle`): a small ViT trained from
# scratch on DigitScenes at 32 px, and each interpretable head fine-tuned from its backbone. pretrained=True loads
# them offline; pretrained=False builds the same architecture untrained.
DIGITS_VIT = dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3)
DIGITS_BACKBONE = "vit_tiny_patch16_224"
DIGITS = [str(d) for d in range(10)]


def _digits(name: str, head: str, num_classes: int, description: str, paper: str, weights: str | None = None,
            **spec: Any) -> None:
    """Register a bundled DigitScenes model: DIGITS_VIT with `head`, weights bundled under `weights` (default: name)."""
    register(ModelSpec(name=name, backbone=DIGITS_BACKBONE, backbone_kwargs=DIGITS_VIT, head=head,
                       num_classes=num_classes, description=description, paper=paper,
                       weights=f"bundled:{weights or name}", **spec))


_digits("vit-digits", "linear", 10, "small ViT (32 px, patch 4, width 96, 4 blocks) trained on DigitScenes digits: the "
        "bundled backbone", VIT_PAPER)
_digits("rcut-digits", "linear", 10, "the bundled vit-digits classifier explained by R-Cut", RCUT_PAPER,
        weights="vit-digits", explainer="rcut")
_digits("vit-net-digits", "neural_tree", 10, "ViT-NeT tree (depth 4, 15 prototypes) fine-tuned from vit-digits on "
        "DigitScenes digits", VITNET_PAPER, head_kwargs=dict(depth=4, proto_size=1))
_digits("ct-digits", "concept", 2, "Concept Transformer fine-tuned from vit-digits on DigitScenes even/odd, digits as "
        "global and spatial concepts (the paper's MNIST experiment)", CT_PAPER,
        head_kwargs=dict(num_concepts=10, num_spatial_concepts=10, num_heads=3, concept_names=DIGITS,
                         spatial_concept_names=DIGITS, expl_lambda=5.0))
_digits("ex-vit-digits", "exvit", 10, "eX-ViT fine-tuned from vit-digits on multi-digit DigitScenes from image labels "
        "only (pseudo masks per digit; E-MHA locality 1.0 and the global loss term: the best of "
        "benchmarks/exvit_wsss.py)", EXVIT_PAPER,
        head_kwargs=dict(multi_label=True, locality=1.0, local_weight=0.0, diversity_weight=0.0))
