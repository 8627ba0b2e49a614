"""The three values that flow through glassvit: Tokens -> HeadOutput -> Explanation.

    images (B,3,H,W) -> Backbone -> Tokens -> Head -> HeadOutput -> loss | Explanation

Every head consumes `Tokens` and returns a `HeadOutput`; every explainer, a head's native one or a post-hoc
baseline, returns an `Explanation`, which is all the evaluation code ever sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenRequest:
    """What a head asks the backbone for beyond the final tokens.

    Block indices follow Python indexing over the backbone's transformer blocks (-1 is the last block).
    `attention`: blocks whose attention probabilities (B,heads,T,T) are recorded (before dropout).
    `hidden`: blocks whose output tokens (B,T,D), prefix tokens included, are recorded.
    """

    attention: tuple[int, ...] = ()
    hidden: tuple[int, ...] = ()

    def __or__(self, other: TokenRequest) -> TokenRequest:
        return TokenRequest(
            tuple(dict.fromkeys(self.attention + other.attention)),
            tuple(dict.fromkeys(self.hidden + other.hidden)),
        )


@dataclass(frozen=True)
class BackboneInfo:
    """Static facts about a backbone that a head needs to build its layers."""

    embed_dim: int
    grid: tuple[int, int]
    num_prefix_tokens: int
    has_cls: bool
    num_blocks: int
    num_heads: int
    image_size: tuple[int, int]


@dataclass
class Tokens:
    """Backbone output, prefix tokens (class, register, distillation) already separated.

    cls: (B,D) final-norm class token, or None when the backbone has none.
    patches: (B,N,D) final-norm patch tokens, N = h*w, row-major over `grid`.
    grid: (h,w) token grid.  image_size: (H,W) of the input images.
    attentions: block index (non-negative) -> (B,heads,T,T) attention probabilities, T = prefix + N.
    hidden: block index (non-negative) -> (B,T,D) block output, prefix tokens first.
    """

    cls: Tensor | None
    patches: Tensor
    grid: tuple[int, int]
    image_size: tuple[int, int]
    num_prefix_tokens: int
    attentions: dict[int, Tensor] = field(default_factory=dict)
    hidden: dict[int, Tensor] = field(default_factory=dict)


@dataclass
class HeadOutput:
    """logits (B,C) plus whatever the head's loss and explanation need, by name in `aux`."""

    logits: Tensor
    tokens: Tokens
    aux: dict[str, Any] = field(default_factory=dict)


@dataclass
class Explanation:
    """What a model looked at, and why, for one batch.

    logits: (B,C).  target: (B,) the explained class.
    saliency: (B,H,W) non-negative, class-specific, at input resolution: what every metric consumes.
    components: (B,K,h,w) per-component maps (concepts, prototypes, attributes) with `component_names` (K).
    contributions: (B,K) how much each component adds to the target logit, where the head is additive.
    details: head-specific structure (tree path, per-head concept attention, ...).
    method: the explainer that produced it ("native", "rollout", "rcut", ...).
    """

    logits: Tensor
    target: Tensor
    saliency: Tensor
    components: Tensor | None = None
    component_names: list[str] | None = None
    contributions: Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)
    method: str = "native"

    def detach(self) -> Explanation:
        """A copy with every tensor detached (details included, one level deep)."""

        def d(v):
            return v.detach() if isinstance(v, torch.Tensor) else v

        return Explanation(
            logits=d(self.logits),
            target=d(self.target),
            saliency=d(self.saliency),
            components=d(self.components),
            component_names=self.component_names,
            contributions=d(self.contributions),
            details={k: d(v) for k, v in self.details.items()},
            method=self.method,
        )
