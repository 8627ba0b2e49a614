"""The black-box baseline: timm's standard linear classifier on pooled tokens.

    logits = W pool(tokens) + b,   pool = final-norm CLS token ("token") or mean of patch tokens ("avg")

It is the comparison every interpretable head is measured against on the same backbone. Its `explain` is post-hoc,
not a faithful decomposition of the decision:

- pool="avg": class activation mapping (Zhou et al., CVPR 2016). The logit is exactly
  b_t + sum_i W_t z_i / N over patch tokens z_i, so saliency_i = relu(W_t z_i / N) and the per-patch terms are
  returned in details["patch_contributions"] (they sum, with the bias, to the logit).
- pool="token": the CLS token mixes patches non-linearly, so no exact decomposition exists. Saliency is the last
  block's CLS->patch attention (mean over heads) times relu(W_t z_i): where the class token looked, kept where the
  patch's own final feature votes for the target class (a class-specific variant of raw attention).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import GlassViTError
from ..maps import to_grid, upsample
from ..types import BackboneInfo, Explanation, HeadOutput, TokenRequest, Tokens
from .base import Head, register_head


@register_head("linear")
class LinearHead(Head):
    """Linear classifier on the CLS token or on mean-pooled patch tokens.

    Args:
        pool: "token" (CLS; falls back to "avg" when the backbone has no class token) or "avg".
        drop_rate: dropout before the classifier.
    """

    paper = "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021 (arXiv:2010.11929)"

    def __init__(self, info: BackboneInfo, num_classes: int, pool: str = "token", drop_rate: float = 0.0,
                 multi_label: bool = False):
        super().__init__(info, num_classes, multi_label)
        if pool not in ("token", "avg"):
            raise GlassViTError(f"pool must be 'token' or 'avg', got {pool!r}")
        self.pool = pool if info.has_cls else "avg"
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(info.embed_dim, num_classes)

    def requests(self, explain: bool) -> TokenRequest:
        return TokenRequest(attention=(-1,)) if explain and self.pool == "token" else TokenRequest()

    def forward(self, tokens: Tokens) -> HeadOutput:
        pooled = tokens.cls if self.pool == "token" else tokens.patches.mean(1)
        return HeadOutput(self.fc(self.drop(pooled)), tokens)

    def explain(self, output: HeadOutput, target: Tensor) -> Explanation:
        tokens = output.tokens
        w = self.fc.weight[target]  # (B,D)
        scores = (tokens.patches * w[:, None]).sum(-1)  # (B,N): W_t z_i
        details = {}
        if self.pool == "avg":
            per_patch = scores / scores.shape[1]
            details["patch_contributions"] = to_grid(per_patch, tokens.grid)
            grid_map = per_patch.clamp_min(0)
        else:
            attn = tokens.attentions[self.info.num_blocks - 1]  # (B,heads,T,T)
            cls_attn = attn[:, :, 0, tokens.num_prefix_tokens:].mean(1)  # (B,N)
            details["cls_attention"] = to_grid(cls_attn, tokens.grid)
            grid_map = cls_attn * scores.clamp_min(0)
        return Explanation(
            logits=output.logits,
            target=target,
            saliency=upsample(to_grid(grid_map, tokens.grid), tokens.image_size),
            details=details,
        )
