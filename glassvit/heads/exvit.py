"""eX-ViT: explainable multi-head attention (E-MHA), an attribute-guided explainer (AttE) and attribute losses, for
weakly supervised semantic segmentation from image labels.

Yu et al., eX-ViT: A Novel eXplainable Vision Transformer for Weakly Supervised Semantic Segmentation,
arXiv:2207.05358. No code is public and only the abstract is freely readable; it names the three parts below and the
three loss terms. Everything past the abstract is our design, grounded in published relatives:

    tokens of block L-d (prefix + N patches)
      -> E-MHA: the backbone's own last d blocks, attention logits + a learned per-head locality bias, final norm
      -> patch tokens z_i (N,D)
      -> AttE: attribute maps  a_k(i) = exp(tau (cos(z_i, p_k) - 1))   K learned attribute prototypes p_k
      -> patch evidence        m_c(i) = b_c + sum_k W_ck a_k(i)       W = scale softplus(V) >= 0
      -> logits                y_c    = mean_i m_c(i) = b_c + sum_k W_ck s_k,   s_k = mean_i a_k(i)

E-MHA (explainable multi-head attention). The head takes the backbone's last `depth` blocks and final norm over
(`Backbone.split_off_blocks`, called from `bind`), so pretrained weights carry over and no block runs twice. Their
attention logits get an additive per-head locality bias  -beta_h ||r_i - r_j||^2  between patches i, j at grid
positions r (patch units; prefix-token rows and columns get none): the positional term of ConViT's gated positional
self-attention (d'Ascoli et al., ICML 2021), whose local initialisation makes heads aggregate neighbouring patches.
Here beta_h starts at `locality` (0: the pretrained block exactly) and is learned. A local aggregation makes each
output token a denoised summary of its neighbourhood rather than a global mixture, so the evidence read from a patch
stays tied to that place in the image (the "local patches ... with noise robustness" of the abstract). The class
token still takes part as a key, as in the pretrained block; the decision reads patch tokens only. Other prefix
tokens (registers, distillation) do not enter the E-MHA blocks.

AttE (attribute-guided explainer). K attribute prototypes scored against patch tokens, as APN's attribute
prototypes (Xu et al., NeurIPS 2020) and ProtoPNet's prototypes (Chen et al., NeurIPS 2019), through a Gaussian
kernel on the unit sphere, exp(-tau/2 |z/|z| - p/|p||^2) = exp(tau (cos - 1)) with tau = `sharpness`: 1 where a
patch matches the prototype, near 0 on unrelated patches, in (0,1] with a gradient everywhere (a ReLU of the cosine
dies: with non-negative class weights, switching every attribute off is the quickest way to lower the logits of
the many absent classes, and a dead map never recovers). Like ProtoPNet's log-distance similarity it never
vanishes exactly. Class evidence is a non-negative combination of attribute maps (ProtoPNet's last layer, kept
non-negative as after its convex last-layer step), initialised class-specific: attribute k starts attached to class
k mod C; the class bias starts at the prior log-odds of 1/C (RetinaNet's prior initialisation, Lin et al., ICCV
2017), so that the first steps do not spend themselves pushing every attribute down. Mean pooling makes the decision
additive at two levels, exactly:

    y_c = b_c + sum_k W_ck s_k              (contribution of attribute k to class c: W_ck s_k)
    y_c = b_c + mean_i M_c(i),  M_c(i) = sum_k W_ck a_k(i) >= 0   (the class activation map, CAM-exact)

so the class map M_c is both the saliency and, averaged, the logit (Zhou et al., CAM, CVPR 2016).

Losses (`loss`; every term is separately weighted and returned). y in {0,1}^C are the image labels; BCE(x, t) =
-t log sigma(x) - (1 - t) log(1 - sigma(x)).

- "global" (global attribute-guided loss, weight `global_weight`): the image-level decision, made from globally
  pooled attribute evidence, against the image labels: mean_c BCE(y_c, y^c) (multi-label) or cross-entropy over y_c
  (single-label). As APN's global branch, the class decision is read from attribute evidence only.
- "local" (local attribute discriminability loss, weight `local_weight`): the attribute evidence at every patch must
  be discriminative for the image's classes, in multiple-instance form: a present class needs one patch whose
  evidence supports it; an absent class must find support at no patch:

      L_local = 1/(B C) sum_b sum_c [ y^c BCE(max_i m_c(i), 1) + (1 - y^c) mean_i BCE(m_c(i), 0) ]

  ProtoPNet's cluster cost (some patch close to a prototype of the image's class) and separation cost (no patch
  close to prototypes of other classes) on the attribute evidence, written as MIL over patches (Pathak et al.,
  Fully Convolutional Multi-Class Multiple Instance Learning, ICLR-W 2015).
- "diversity" (attribute diversity loss, weight `diversity_weight`): the attributes of a class should not cover the
  same patches of an image, so that they split its object into parts instead of repeating its most discriminative
  one: with a_k normalised to unit L2 norm over patches and P_b the pairs k != l of attributes owned by the same
  class (the class each attribute weighs most for) present in image b,

      L_div = mean_{b: P_b not empty} 1/|P_b| sum_{(k,l) in P_b} <a_k/|a_k|, a_l/|a_l|>

  the channel-grouping diversity loss of MA-CNN (Zheng et al., ICCV 2017: part channels of one object) in its cosine
  form. Attributes of different classes are not compared (their maps should differ by the classification terms
  already), nor those of absent classes: their maps are near zero, and normalising them would make them uniform.

Weakly supervised segmentation. `class_maps` gives M_c on the token grid for every class; `pseudo_masks` turns them
into a label map (0 background, c+1 class c): each present class's map (image labels, or the prediction) is
optionally refined by E-MHA's patch-to-patch attention (MCTformer's patch affinity, Xu et al., CVPR 2022:
M <- A_pp M, `refine_steps` times), upsampled, normalised by its maximum, and each pixel takes the strongest class
unless none reaches `background_threshold`.

`explain`: saliency = M_t upsampled (non-negative), components = the attribute maps (B,K,h,w), contributions =
W_tk s_k (they sum, with b_t, to the target logit), details = class map, bias, E-MHA attention, attribute classes,
and the pseudo mask of the predicted classes.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from ..errors import GlassViTError
from ..maps import to_grid, upsample
from ..types import BackboneInfo, Explanation, HeadOutput, Tokens
from .base import Head, register_head

EVIDENCE_INIT = (math.log(math.e - 1), -4.0)  # softplus^-1 of W / scale: 1 for the attribute's class, ~0.018 else


def attribute_maps(patches: Tensor, prototypes: Tensor, sharpness: float) -> Tensor:
    """patches (B,N,D), prototypes (K,D) -> (B,N,K) exp(sharpness (cos(z_i, p_k) - 1)) in (0,1]."""
    cos = einsum(F.normalize(patches, dim=-1), F.normalize(prototypes, dim=-1), "b n d, k d -> b n k")
    return torch.exp(sharpness * (cos - 1))


def global_attribute_loss(logits: Tensor, present: Tensor, multi_label: bool) -> Tensor:
    """logits (B,C), present (B,C) {0,1} -> () mean BCE (multi-label) or cross-entropy to the present class."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, present)
    return F.cross_entropy(logits, present.argmax(-1))


def local_discriminability_loss(patch_evidence: Tensor, present: Tensor) -> Tensor:
    """patch_evidence (B,N,C) m_c(i), present (B,C) {0,1} -> () L_local of the module docstring."""
    positive = F.binary_cross_entropy_with_logits(patch_evidence.amax(1), torch.ones_like(present), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        patch_evidence, torch.zeros_like(patch_evidence), reduction="none").mean(1)
    return (present * positive + (1 - present) * negative).mean()


def diversity_loss(attributes: Tensor, pairs: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """attributes (B,N,K), pairs (B,K,K) bool or None (all) -> () mean cosine similarity over patches of the counted
    pairs of distinct maps, averaged over the images that have any (0 when none has)."""
    k = attributes.shape[-1]
    unit = attributes / attributes.norm(dim=1, keepdim=True).clamp_min(eps)
    gram = einsum(unit, unit, "b n k, b n l -> b k l")
    counted = ~torch.eye(k, dtype=torch.bool, device=attributes.device)
    counted = counted if pairs is None else counted & pairs.bool()
    counts = counted.expand_as(gram).sum((1, 2))
    per_image = (gram * counted).sum((1, 2)) / counts.clamp_min(1)
    has_pairs = counts > 0
    return (per_image * has_pairs).sum() / has_pairs.sum().clamp_min(1)


def affinity_refine(maps: Tensor, affinity: Tensor, steps: int) -> Tensor:
    """maps (B,C,N), patch-to-patch affinity (B,N,N) row-normalised -> maps propagated `steps` times (M <- A M)."""
    for _ in range(steps):
        maps = einsum(affinity, maps, "b i j, b c j -> b c i")
    return maps


def label_maps(maps: Tensor, present: Tensor, threshold: float) -> Tensor:
    """Per-class maps (B,C,H,W) >= 0, present (B,C) bool -> (B,H,W) long: 0 background, c+1 class c.

    Each map is divided by its maximum; a pixel takes its strongest present class, or background when no present
    class reaches `threshold`.
    """
    peak = maps.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]
    scores = torch.where(present[..., None, None].bool(), maps / peak, torch.zeros_like(maps))
    best, label = scores.max(1)
    return torch.where(best >= threshold, label + 1, torch.zeros_like(label))


@register_head("exvit")
class ExViTHead(Head):
    """E-MHA over the backbone's last blocks, attribute prototypes (AttE), class evidence from attribute maps.

    Args:
        num_attributes: K attribute prototypes (default 4 per class); attribute k starts attached to class k mod C.
        sharpness: tau of the attribute kernel exp(tau (cos - 1)); larger gives narrower attribute maps.
        scale: fixed factor of the evidence weights, W = scale * softplus(V) (a cosine classifier's scale).
        depth: how many of the backbone's last blocks become E-MHA blocks.
        locality: initial locality strength beta of every E-MHA head (0: the pretrained block unchanged).
        global_weight, local_weight, diversity_weight: weights of the three loss terms.
        background_threshold: pseudo masks: a pixel is background unless a class map (max-normalised) reaches it.
        refine_steps: pseudo masks: E-MHA affinity propagation steps before thresholding (0: none).
        multi_label: image labels are multi-hot (weakly supervised segmentation); else one class per image.
    """

    paper = ("Yu et al., eX-ViT: A Novel eXplainable Vision Transformer for Weakly Supervised Semantic "
             "Segmentation, arXiv:2207.05358")

    def __init__(self, info: BackboneInfo, num_classes: int, num_attributes: int | None = None, depth: int = 1,
                 locality: float = 0.0, global_weight: float = 1.0, local_weight: float = 1.0,
                 diversity_weight: float = 0.1, sharpness: float = 4.0, scale: float = 10.0,
                 background_threshold: float = 0.3,
                 refine_steps: int = 0, multi_label: bool = False):
        super().__init__(info, num_classes, multi_label)
        num_attributes = 4 * num_classes if num_attributes is None else num_attributes
        if num_attributes < 1:
            raise GlassViTError(f"num_attributes must be >= 1, got {num_attributes}")
        if info.num_blocks < 2:
            raise GlassViTError("eX-ViT needs a ViT-family backbone with a sequence of at least 2 transformer blocks "
                                "(windowed, hierarchical backbones such as Swin have none)")
        if not 1 <= depth < info.num_blocks:
            raise GlassViTError(f"depth must lie in [1, {info.num_blocks - 1}] for a {info.num_blocks}-block backbone, "
                                f"got {depth}")
        if min(global_weight, local_weight, diversity_weight) < 0:
            raise GlassViTError("loss weights must be >= 0")
        if not 0 <= background_threshold <= 1 or refine_steps < 0:
            raise GlassViTError(f"background_threshold must lie in [0,1] and refine_steps be >= 0, got "
                                f"{background_threshold} and {refine_steps}")
        if sharpness <= 0 or scale <= 0:
            raise GlassViTError(f"sharpness and scale must be > 0, got {sharpness} and {scale}")
        self.num_attributes, self.depth, self.sharpness, self.scale = num_attributes, depth, sharpness, scale
        self.weights = {"global": global_weight, "local": local_weight, "diversity": diversity_weight}
        self.background_threshold, self.refine_steps = background_threshold, refine_steps
        self.locality = nn.Parameter(torch.full((depth, info.num_heads), float(locality)))
        self.prototypes = nn.Parameter(0.02 * torch.randn(num_attributes, info.embed_dim))  # small: fast to turn
        own = torch.arange(num_attributes) % num_classes == torch.arange(num_classes)[:, None]  # (C,K)
        self.evidence = nn.Parameter(torch.where(own, *map(torch.tensor, EVIDENCE_INIT)))
        self.bias = nn.Parameter(torch.full((num_classes,), -math.log(max(num_classes - 1, 1))))
        self.blocks: nn.Sequential | None = None
        self.norm: nn.Module | None = None

    def bind(self, backbone) -> None:
        """Take the backbone's last `depth` blocks and final norm (pretrained weights included) as E-MHA blocks."""
        blocks, norm = backbone.split_off_blocks(self.depth)
        if "attn_mask" not in inspect.signature(blocks[0].forward).parameters:
            raise GlassViTError("eX-ViT's E-MHA needs timm blocks that take attention masks (timm >= 1.0.17)")
        self.blocks, self.norm = blocks, norm

    @property
    def class_weights(self) -> Tensor:
        """(C,K) non-negative evidence weights W = scale * softplus(V)."""
        return self.scale * F.softplus(self.evidence)

    def locality_bias(self, grid: tuple[int, int], prefix: int) -> Tensor:
        """(depth, heads, T, T) additive attention bias -beta_h ||r_i - r_j||^2 between patches, 0 for prefix tokens."""
        h, w = grid
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], -1).to(self.locality)
        dist2 = torch.cdist(pos, pos).square()  # (N,N)
        bias = F.pad(dist2, (prefix, 0, prefix, 0))
        return -self.locality[:, :, None, None] * bias

    def _emha_input(self, tokens: Tokens) -> Tensor:
        if self.blocks is None:
            raise GlassViTError("the exvit head runs the backbone's last blocks: build it through zoo.load/GlassViT")
        return tokens.patches if tokens.cls is None else torch.cat([tokens.cls[:, None], tokens.patches], 1)

    def forward(self, tokens: Tokens) -> HeadOutput:
        x = self._emha_input(tokens)
        prefix = x.shape[1] - tokens.patches.shape[1]
        bias = self.locality_bias(tokens.grid, prefix).to(x.dtype)
        for blk, b in zip(self.blocks[:-1], bias[:-1]):
            x = blk(x, attn_mask=b)
        last_input = x
        x = self.norm(self.blocks[-1](x, attn_mask=bias[-1]))
        attributes = attribute_maps(x[:, prefix:], self.prototypes, self.sharpness)  # (B,N,K)
        scores = attributes.mean(1)  # (B,K)
        logits = scores @ self.class_weights.t() + self.bias
        aux = {"attributes": attributes, "scores": scores, "emha_input": last_input, "emha_bias": bias[-1]}
        return HeadOutput(logits, tokens, aux)

    def patch_evidence(self, output: HeadOutput) -> Tensor:
        """(B,N,C) m_c(i) = b_c + sum_k W_ck a_k(i); its mean over patches is the logit."""
        return output.aux["attributes"] @ self.class_weights.t() + self.bias

    def class_maps(self, output: HeadOutput) -> Tensor:
        """(B,C,h,w) class activation maps M_c(i) = sum_k W_ck a_k(i) >= 0 on the token grid."""
        maps = einsum(output.aux["attributes"], self.class_weights, "b n k, c k -> b n c")
        return to_grid(maps, output.tokens.grid)

    def emha_attention(self, output: HeadOutput) -> Tensor:
        """(B,heads,T,T) attention probabilities of the last E-MHA block, recomputed from its recorded input."""
        attn = self.blocks[-1].attn
        store: dict[str, Tensor] = {}
        hook = attn.attn_drop.register_forward_hook(lambda m, i, o: store.__setitem__("p", i[0]))
        with _explicit_attention(attn):
            attn(self.blocks[-1].norm1(output.aux["emha_input"]), attn_mask=output.aux["emha_bias"])
        hook.remove()
        return store["p"]

    def patch_affinity(self, output: HeadOutput) -> Tensor:
        """(B,N,N) patch-to-patch attention of the last E-MHA block, mean over heads, rows renormalised to 1."""
        prefix = output.tokens.num_prefix_tokens if output.tokens.cls is not None else 0
        p2p = self.emha_attention(output)[:, :, prefix:, prefix:].mean(1)
        return p2p / p2p.sum(-1, keepdim=True).clamp_min(1e-12)

    def pseudo_masks(self, output: HeadOutput, present: Tensor | None = None, threshold: float | None = None,
                     refine_steps: int | None = None) -> Tensor:
        """Segmentation from image labels: (B,H,W) long label map, 0 = background, c+1 = class c.

        present: (B,C) classes to segment (the image labels); default the predicted classes (sigmoid > 0.5 when
        multi-label, at least the top class). threshold, refine_steps: default to the head's settings.
        """
        threshold = self.background_threshold if threshold is None else threshold
        if present is None:
            present = self.predicted_classes(output.logits)
        maps = self.segmentation_maps(output, refine_steps)
        return label_maps(maps, present.to(maps.device).bool(), threshold)

    def segmentation_maps(self, output: HeadOutput, refine_steps: int | None = None) -> Tensor:
        """(B,C,H,W) every class map at input resolution, after `refine_steps` (default: the head's) steps of E-MHA
        affinity propagation: what `pseudo_masks` thresholds."""
        steps = self.refine_steps if refine_steps is None else refine_steps
        maps = self.class_maps(output)
        if steps:
            refined = affinity_refine(rearrange(maps, "b c h w -> b c (h w)"), self.patch_affinity(output), steps)
            maps = rearrange(refined, "b c (h w) -> b c h w", h=output.tokens.grid[0])
        return upsample(maps, output.tokens.image_size)

    def predicted_classes(self, logits: Tensor) -> Tensor:
        """(B,C) bool: sigmoid > 0.5 when multi-label, always including the top class."""
        top = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
        return top | (logits > 0) if self.multi_label else top

    def loss(self, output: HeadOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """{"global", "local", "diversity" (see the module docstring), "loss": their weighted sum}."""
        present = self._present(output.logits, batch)
        terms = {
            "global": global_attribute_loss(output.logits, present, self.multi_label),
            "local": local_discriminability_loss(self.patch_evidence(output), present),
            "diversity": diversity_loss(output.aux["attributes"], self.diversity_pairs(present)),
        }
        terms["loss"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms

    def diversity_pairs(self, present: Tensor) -> Tensor:
        """(B,K,K) bool: pairs of attributes of the same class (the one each attribute weighs most for), that class
        present in the image; the pairs the diversity loss counts."""
        owner = self.class_weights.detach().argmax(0)  # (K,)
        same = owner[:, None] == owner[None, :]
        active = present[:, owner].bool()  # (B,K)
        return same & active[:, :, None] & active[:, None, :]

    def _present(self, logits: Tensor, batch: dict[str, Any]) -> Tensor:
        """(B,C) float {0,1} image labels from multi-hot, soft (B,C) or index (B,) labels."""
        self.classification_loss(logits, batch)  # validates the labels against the logits
        y = batch["label"].to(logits.device)
        return (y > 0).float() if y.ndim == 2 else F.one_hot(y.long(), self.num_classes).float()

    def explain(self, output: HeadOutput, target: Tensor) -> Explanation:
        tokens = output.tokens
        w = self.class_weights[target]  # (B,K)
        class_map = self.class_maps(output)[torch.arange(len(target)), target]  # (B,h,w)
        present = self.predicted_classes(output.logits) | F.one_hot(target, self.num_classes).bool()
        return Explanation(
            logits=output.logits,
            target=target,
            saliency=upsample(class_map, tokens.image_size),
            components=to_grid(output.aux["attributes"], tokens.grid),
            component_names=[f"attribute {k}" for k in range(self.num_attributes)],
            contributions=w * output.aux["scores"],
            details={
                "class_map": class_map,
                "bias": self.bias[target],
                "attribute_classes": self.class_weights.argmax(0),
                "emha_attention": self.patch_affinity(output),
                "pseudo_mask": self.pseudo_masks(output, present),
            },
        )

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_attributes={self.num_attributes}, depth={self.depth}, "
                f"weights={self.weights}")


@contextmanager
def _explicit_attention(attn: nn.Module):
    """timm attention computed explicitly (not fused), so its probabilities pass through attn_drop."""
    fused = attn.fused_attn
    attn.fused_attn = False
    try:
        yield attn
    finally:
        attn.fused_attn = fused


__all__ = ["ExViTHead", "affinity_refine", "attribute_maps", "diversity_loss", "global_attribute_loss",
           "label_maps", "local_discriminability_loss"]
