"""Concept Transformer head: tokens cross-attend to learned concept embeddings (Rigotti et al., ICLR 2022).

Each branch is a cross-attention from query tokens x to K concept embeddings c_k (paper, Eq. 1-2) with H heads of
width d = D/H:

    a_hk = softmax_k( (W_q x)_h . (W_k c_k)_h / sqrt(d) )                     attention, per head h and concept k
    logits = W_o concat_h( sum_k a_hk (W_v c_k)_h ) + b = sum_{h,k} a_hk L_hk + b,   L_hk = W_o[:, h] (W_v c_k)_h

The values do not depend on the input, so every (head, concept) pair carries a fixed logit vector L_hk (C,) and the
logits are exactly linear in the attention. This is the head's faithfulness property: `explain` decomposes the
target logit into one contribution per concept, sum_h a_hk L_hk[t], which add up with the biases to the logit.
Attention is kept per head: averaging it over heads (as the reference returns it) is exact only for H = 1.

Branches (any subset; logits are summed):
    global       queried by the final-norm CLS token, or by attention-pooled patch tokens (softmax of a learned
                 score over tokens, the reference's sequence pooling) when the backbone has no CLS token;
                 supervised with per-image concept annotations.
    spatial      queried by every patch token; per-patch logits are averaged over patches (so a spatial concept
                 contributes mean_n sum_h a_nhk L_hk); supervised with per-patch concept annotations.
    unsupervised like global, with its own concepts and its own cross-attention, never supervised.

Explanation loss (paper, Eq. 3): concept annotations are normalised to sum 1 per row, rows that are NaN or all zero
(not annotated) are skipped, the cost is the squared error between the head-averaged attention and the normalised
annotation, summed over concepts and averaged over annotated rows (images for global concepts, patches over the
whole batch for spatial ones). Total = classification + expl_lambda x (global + spatial) + entropy_weight x entropy,
where entropy is the mean entropy (nats) of the per-head attention distributions of the supervised branches (the
reference averages -p log p over concepts as well, so its sparsity weight is ours x K).

Differences from the reference (IBM/concept_transformer, ctc/vit.py): the unsupervised branch uses its own module
(the reference calls the global branch's); explanations use the attention before dropout (the reference returns it
after); a batch of one works; a head count that does not divide the width fails at construction.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ..errors import GlassViTError
from ..maps import to_grid, upsample
from ..types import BackboneInfo, Explanation, HeadOutput, TokenRequest, Tokens
from .base import Head, register_head

BRANCHES = ("global", "unsup", "spatial")


class ConceptAttention(nn.Module):
    """Cross-attention from query tokens to `num_concepts` learned concept embeddings, producing class logits.

    Parameters mirror the reference's CrossAttention: q = Linear(D, D), kv = Linear(D, 2D) (no biases),
    proj = Linear(D, C); concept embeddings (K, D) initialised trunc_normal(std = 1/sqrt(D)).
    """

    def __init__(self, dim: int, num_concepts: int, num_classes: int, num_heads: int,
                 attention_dropout: float, projection_dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.concepts = nn.Parameter(torch.zeros(num_concepts, dim))
        nn.init.trunc_normal_(self.concepts, std=1.0 / math.sqrt(dim))
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, num_classes)
        self.attn_drop = nn.Dropout(attention_dropout)
        self.proj_drop = nn.Dropout(projection_dropout)

    def attention(self, x: Tensor) -> Tensor:
        """queries (B,Nq,D) -> attention (B,H,Nq,K) over concepts, before dropout."""
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k = rearrange(self.kv(self.concepts), "k (two h d) -> two h k d", two=2, h=self.num_heads)[0]
        return torch.softmax(torch.einsum("bhnd,hkd->bhnk", q, k) * self.scale, dim=-1)

    def concept_logits(self) -> Tensor:
        """The fixed logit vector of every (head, concept) pair: L (H,K,C), L_hk = W_o[:, h] v_hk."""
        v = rearrange(self.kv(self.concepts), "k (two h d) -> two h k d", two=2, h=self.num_heads)[1]
        w = rearrange(self.proj.weight, "c (h d) -> c h d", h=self.num_heads)
        return torch.einsum("hkd,chd->hkc", v, w)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """queries (B,Nq,D) -> (logits averaged over the queries (B,C), attention (B,H,Nq,K) before dropout).

        Projection dropout acts on each query's logits (as the reference's), so a training pass with it forms them
        first; otherwise the attention is averaged over the queries first, which is exact (the logits are linear
        in the attention) and saves a factor Nq in the logit projection.
        """
        attn = self.attention(x)
        weights, logit_vectors = self.attn_drop(attn), self.concept_logits()
        if self.training and self.proj_drop.p > 0:
            per_query = torch.einsum("bhnk,hkc->bnc", weights, logit_vectors) + self.proj.bias
            return self.proj_drop(per_query).mean(1), attn
        return torch.einsum("bhk,hkc->bc", weights.mean(2), logit_vectors) + self.proj.bias, attn


@register_head("concept")
class ConceptTransformerHead(Head):
    """Concept Transformer head with global, spatial and unsupervised concept branches (see the module docstring).

    Args:
        num_concepts: global concepts (queried by the CLS token or pooled tokens; annotations in batch["concepts"]).
        num_spatial_concepts: spatial concepts (queried by every patch; annotations in batch["spatial_concepts"]).
        num_unsup_concepts: unsupervised global concepts (their own cross-attention).
        num_heads: attention heads of every branch; must divide the backbone width. None: the backbone's count.
        attention_dropout: dropout on the concept attention (training only; explanations use it before dropout).
        projection_dropout: dropout on each query token's logits.
        concept_names, spatial_concept_names, unsup_concept_names: one name per concept (default "c0", "s0", "u0"...).
        expl_lambda: weight of the explanation loss (paper: 5 on MNIST even/odd, 1 on CUB-200).
        entropy_weight: weight of the attention-entropy (sparsity) term; 0 disables it.
        multi_label: multi-hot targets with BCE, as for every head.

    Explanation (`explain`), for the target class t:
        contributions (B,K): each concept's share of the target logit (global, then unsupervised, then spatial
            concepts); contributions.sum(-1) + details["bias"] equals the logit exactly.
        components (B,K,h,w), same order: a spatial concept's map is its head-averaged attention from every patch
            (the attention the decision used); a global or unsupervised concept's map localises it: the attention
            each patch token would give it, weighted by where the query came from (the last block's CLS attention
            to patches, renormalised, or the pooling weights).
        saliency (B,H,W): non-negative and class-specific; per patch n, relu of its exact share of the spatial
            branch's target logit, (1/N) sum_{h,k} a_nhk L_hk[t], plus, for the global and unsupervised branches,
            the query's weight on patch n times relu of the target logit that patch would produce as the query.
        details: "bias" (B,) the target's total bias; "global_attention", "unsup_attention" (B,H,K) per head;
            "spatial_attention" (B,H,K,h,w) per head; "query_weights" (B,h,w) where the global query came from.
    """

    paper = "Rigotti et al., Attention-based Interpretability with Concept Transformers, ICLR 2022"

    def __init__(self, info: BackboneInfo, num_classes: int, num_concepts: int = 10, num_spatial_concepts: int = 0,
                 num_unsup_concepts: int = 0, num_heads: int | None = None, attention_dropout: float = 0.1,
                 projection_dropout: float = 0.1, concept_names: list[str] | None = None,
                 spatial_concept_names: list[str] | None = None, unsup_concept_names: list[str] | None = None,
                 expl_lambda: float = 1.0, entropy_weight: float = 0.0, multi_label: bool = False):
        super().__init__(info, num_classes, multi_label)
        dim = info.embed_dim
        num_heads = num_heads or info.num_heads or 1
        if dim % num_heads:
            divisors = [h for h in range(1, min(dim, 64) + 1) if dim % h == 0]
            raise GlassViTError(f"num_heads={num_heads} does not divide the backbone width {dim}; "
                                f"choose one of {divisors}")
        counts = dict(zip(BRANCHES, (num_concepts, num_unsup_concepts, num_spatial_concepts)))
        if any(n < 0 for n in counts.values()) or not any(counts.values()):
            raise GlassViTError(f"concept counts must be >= 0 with at least one concept, got {counts}")
        given = dict(zip(BRANCHES, (concept_names, unsup_concept_names, spatial_concept_names)))
        self.concept_names: dict[str, list[str]] = {}
        for branch, prefix in zip(BRANCHES, ("c", "u", "s")):
            names = given[branch] or [f"{prefix}{i}" for i in range(counts[branch])]
            if len(names) != counts[branch]:
                raise GlassViTError(f"{len(names)} {branch} concept names for {counts[branch]} {branch} concepts")
            self.concept_names[branch] = list(names)
        self.num_heads = num_heads
        self.expl_lambda = expl_lambda
        self.entropy_weight = entropy_weight
        self.branches = nn.ModuleDict({
            branch: ConceptAttention(dim, n, num_classes, num_heads, attention_dropout, projection_dropout)
            for branch, n in counts.items() if n > 0
        })
        queried_globally = num_concepts > 0 or num_unsup_concepts > 0
        self.token_pool = nn.Linear(dim, 1) if queried_globally and not info.has_cls else None

    def requests(self, explain: bool) -> TokenRequest:
        global_query = "global" in self.branches or "unsup" in self.branches
        return TokenRequest(attention=(-1,)) if explain and global_query and self.token_pool is None else TokenRequest()

    def forward(self, tokens: Tokens) -> HeadOutput:
        """Tokens -> logits (B,C); aux: each branch's attention (B,H,Nq,K) before dropout as "<branch>_attention",
        "concepts" (B,K) the head-averaged global concept attention, "pool_weights" (B,N) when tokens are pooled."""
        aux: dict[str, Any] = {}
        logits = []
        if "global" in self.branches or "unsup" in self.branches:
            query = self._global_query(tokens, aux)
            for branch in ("global", "unsup"):
                if branch in self.branches:
                    z, aux[f"{branch}_attention"] = self.branches[branch](query)
                    logits.append(z)
            if "global" in self.branches:
                aux["concepts"] = aux["global_attention"][:, :, 0].mean(1)  # (B,K): scores for concept accuracy
        if "spatial" in self.branches:
            z, aux["spatial_attention"] = self.branches["spatial"](tokens.patches)
            logits.append(z)
        return HeadOutput(torch.stack(logits).sum(0), tokens, aux)

    def _global_query(self, tokens: Tokens, aux: dict[str, Any]) -> Tensor:
        """The query of the global branches (B,1,D): the CLS token, or patches pooled by learned softmax weights."""
        if self.token_pool is None:
            return tokens.cls[:, None]
        weights = torch.softmax(self.token_pool(tokens.patches)[..., 0], dim=-1)  # (B,N)
        aux["pool_weights"] = weights
        return torch.einsum("bn,bnd->bd", weights, tokens.patches)[:, None]

    def _query_weights(self, output: HeadOutput) -> Tensor:
        """Where the global query came from, (B,N) summing to 1: pooling weights or last-block CLS attention."""
        if "pool_weights" in output.aux:
            return output.aux["pool_weights"]
        tokens = output.tokens
        cls_attn = tokens.attentions[self.info.num_blocks - 1][:, :, 0, tokens.num_prefix_tokens:].mean(1)
        return cls_attn / cls_attn.sum(-1, keepdim=True).clamp_min(1e-12)

    def explain(self, output: HeadOutput, target: Tensor) -> Explanation:
        tokens = output.tokens
        contributions, maps, details = [], [], {}
        saliency = tokens.patches.new_zeros(tokens.patches.shape[:2])  # (B,N)
        bias = sum(branch.proj.bias[target] for branch in self.branches.values())
        if "global" in self.branches or "unsup" in self.branches:
            weights = self._query_weights(output)
            details["query_weights"] = to_grid(weights, tokens.grid)
        for name, branch in self.branches.items():
            logit_t = branch.concept_logits()[..., target].permute(2, 0, 1)  # (B,H,K)
            attn = output.aux[f"{name}_attention"]  # (B,H,Nq,K)
            if name == "spatial":
                contributions.append((attn.mean(2) * logit_t).sum(1))
                maps.append(attn.mean(1))
                saliency += torch.einsum("bhnk,bhk->bn", attn, logit_t).clamp_min(0) / attn.shape[2]
                details["spatial_attention"] = rearrange(attn, "b hd (h w) k -> b hd k h w", h=tokens.grid[0])
            else:
                contributions.append((attn[:, :, 0] * logit_t).sum(1))
                patch_attn = branch.attention(tokens.patches)  # (B,H,N,K): each patch as the query
                maps.append(patch_attn.mean(1) * weights[..., None])
                saliency += weights * torch.einsum("bhnk,bhk->bn", patch_attn, logit_t).clamp_min(0)
                details[f"{name}_attention"] = attn[:, :, 0]
        details["bias"] = bias
        return Explanation(
            logits=output.logits,
            target=target,
            saliency=upsample(to_grid(saliency, tokens.grid), tokens.image_size),
            components=to_grid(torch.cat(maps, -1), tokens.grid),
            component_names=[n for name in self.branches for n in self.concept_names[name]],
            contributions=torch.cat(contributions, -1),
            details=details,
        )

    def loss(self, output: HeadOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """classification + expl_lambda x (concept + spatial_concept) + entropy_weight x entropy.

        Annotations: batch["concepts"] (B,K) and batch["spatial_concepts"] (B,N,K_s), NaN rows unannotated; a
        branch whose annotations the batch lacks gets no explanation term (0).
        """
        ce = self.classification_loss(output.logits, batch)
        zero = output.logits.new_zeros(())
        terms = {"classification": ce, "concept": zero, "spatial_concept": zero}
        for branch, key, term in (("global", "concepts", "concept"), ("spatial", "spatial_concepts", "spatial_concept")):
            if branch in self.branches and batch.get(key) is not None:
                attn = output.aux[f"{branch}_attention"].mean(1)  # (B,Nq,K), head-averaged
                terms[term] = explanation_cost(attn, self._annotation(batch[key], attn, key))
        total = ce + self.expl_lambda * (terms["concept"] + terms["spatial_concept"])
        if self.entropy_weight > 0:
            supervised = [output.aux[f"{b}_attention"] for b in ("global", "spatial") if b in self.branches]
            terms["entropy"] = sum(attention_entropy(a) for a in supervised) if supervised else zero
            total = total + self.entropy_weight * terms["entropy"]
        terms["loss"] = total
        return terms

    @staticmethod
    def _annotation(target: Tensor, attn: Tensor, key: str) -> Tensor:
        """batch[key] as (B,Nq,K) on attn's device; a clear error when its shape does not fit the head."""
        target = torch.as_tensor(target, device=attn.device, dtype=attn.dtype)
        expected = attn.shape if key == "spatial_concepts" else attn.shape[::2]
        if tuple(target.shape) != tuple(expected):
            raise GlassViTError(f"batch[{key!r}] must have shape {tuple(expected)} for this head, "
                                f"got {tuple(target.shape)}")
        return target.reshape(attn.shape)

    def extra_repr(self) -> str:
        counts = ", ".join(f"{b}={len(self.concept_names[b])}" for b in self.branches)
        return f"{super().extra_repr()}, heads={self.num_heads}, concepts({counts})"


def explanation_cost(attn: Tensor, target: Tensor) -> Tensor:
    """Squared error between attention and annotations normalised to sum 1, summed over concepts, averaged over rows.

    attn, target (..., K). Rows whose annotation is NaN anywhere or sums to zero carry no annotation and are skipped;
    with no annotated row the cost is 0.
    """
    attn, target = attn.reshape(-1, attn.shape[-1]), target.reshape(-1, target.shape[-1])
    norm = target.sum(-1, keepdim=True)
    valid = (norm > 0).squeeze(-1)  # NaN compares False
    if not valid.any():
        return attn.sum() * 0
    return ((attn[valid] - target[valid] / norm[valid]) ** 2).sum(-1).mean()


def attention_entropy(attn: Tensor) -> Tensor:
    """Mean entropy (nats) of the attention distributions attn (..., K) over concepts."""
    return -(attn * torch.log(attn + 1e-8)).sum(-1).mean()
