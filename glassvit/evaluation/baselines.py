"""Post-hoc explainers for any zoo model, registered as `model.explain(x, method=NAME)`.

    "attention"  raw attention: the last block's CLS -> patch attention, mean over heads (not class-specific).
    "rollout"    attention rollout (Abnar & Zuidema, ACL 2020): prod_b (A_b + I)/2 over blocks, rows renormalised.
    "chefer"     transformer attribution by gradient-weighted attention (Chefer et al., Generic Attention-model
                 Explainability, ICCV 2021, eqs. 5-6, the LRP-free successor of their CVPR 2021 attribution):
                 R = I;  R <- R + mean_h[(dy_t/dA_b * A_b)^+] R  for every block b;  saliency = R[CLS, patches].
    "gradcam"    Grad-CAM (Selvaraju et al., ICCV 2017) on tokens: relu(sum_d alpha_d F_nd), alpha = token-mean of
                 dy_t/dF. F = the tokens entering the last block (ViT family; the last block's norm1 input, as
                 pytorch-grad-cam uses for ViTs) or the final feature map (hierarchical backbones such as Swin).
    "ig"         integrated gradients (Sundararajan et al., ICML 2017): (x - x0) * mean_k dy_t/dx at
                 x0 + (k + 1/2)/m (x - x0), a midpoint Riemann sum; saliency = positive part of the channel sum.

Every explainer has the registry's call shape fn(model, images (B,C,H,W), target (B,) | int | None, **kwargs) ->
Explanation with saliency (B,H,W) >= 0 at input resolution; y_t is the target-class logit. The attention methods read
attention probabilities and hidden states through `TokenRequest`, so they work on every head; they need per-block
attention, which windowed backbones (Swin) do not have: "gradcam" and "ig" work on every backbone.
For backbones without a class token the CLS row is replaced by the mean over patch rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import GlassViTError
from ..explainers import register_explainer
from ..maps import resolve_target, to_grid, upsample
from ..types import Explanation, HeadOutput, TokenRequest, Tokens
from .metrics import baseline_images


def _forward(model, x: Tensor, request: TokenRequest) -> HeadOutput:
    """The model's forward with `request` added to what its head asks for."""
    return model.head(model.backbone(x, request | model.head.requests(False)))


def _all_blocks(model) -> tuple[int, ...]:
    return tuple(range(model.backbone.info.num_blocks)) or (-1,)


def _query_row(matrix: Tensor, tokens: Tokens) -> Tensor:
    """(B,T,T) token-to-token relevance -> (B,N): the CLS row over patches, or the mean patch row without CLS."""
    p = tokens.num_prefix_tokens
    if tokens.cls is not None:
        return matrix[:, 0, p:]
    return matrix[:, p:, p:].mean(1)


def _target_logit(output: HeadOutput, target: Tensor) -> Tensor:
    return output.logits.gather(1, target.view(-1, 1)).sum()


def _explanation(output: HeadOutput, target: Tensor, grid_map: Tensor, image_size, **details) -> Explanation:
    """(B,N) non-negative token relevance -> Explanation with the upsampled saliency and the grid map in details."""
    grid = to_grid(grid_map.detach().clamp_min(0), output.tokens.grid)
    return Explanation(
        logits=output.logits.detach(),
        target=target,
        saliency=upsample(grid, image_size),
        details={"grid_saliency": grid, **details},
    )


def _with_grad(x: Tensor) -> Tensor:
    """A leaf copy of the images that requires grad, so the graph exists even for a frozen model."""
    return x.detach().requires_grad_(True)


@register_explainer("attention")
@torch.no_grad()
def raw_attention(model, x: Tensor, target: Tensor | int | None = None, block: int = -1) -> Explanation:
    """Last (or `block`) block's CLS -> patch attention, mean over heads. Not class-specific."""
    output = _forward(model, x, TokenRequest(attention=(block,)))
    target = resolve_target(output.logits, target)
    attn = output.tokens.attentions[block % model.backbone.info.num_blocks].mean(1)  # (B,T,T)
    return _explanation(output, target, _query_row(attn, output.tokens), x.shape[-2:])


def rollout_matrix(attentions: list[Tensor], head_fusion: str = "mean") -> Tensor:
    """Per-block attention (B,heads,T,T), first block first -> (B,T,T) rollout prod_b norm((fuse(A_b) + I) / 2)."""
    result = None
    for a in attentions:
        fused = a.mean(1) if head_fusion == "mean" else a.amax(1) if head_fusion == "max" else a.amin(1)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = 0.5 * fused + 0.5 * eye
        step = step / step.sum(-1, keepdim=True)
        result = step if result is None else step @ result
    return result


@register_explainer("rollout")
@torch.no_grad()
def attention_rollout(model, x: Tensor, target: Tensor | int | None = None, head_fusion: str = "mean") -> Explanation:
    """Attention rollout over all blocks (`head_fusion`: "mean", "max" or "min" over heads). Not class-specific."""
    if head_fusion not in ("mean", "max", "min"):
        raise GlassViTError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
    blocks = _all_blocks(model)
    output = _forward(model, x, TokenRequest(attention=blocks))
    target = resolve_target(output.logits, target)
    attns = [output.tokens.attentions[b % model.backbone.info.num_blocks] for b in blocks]
    return _explanation(output, target, _query_row(rollout_matrix(attns, head_fusion), output.tokens), x.shape[-2:])


@register_explainer("chefer")
def transformer_attribution(model, x: Tensor, target: Tensor | int | None = None) -> Explanation:
    """Gradient-weighted attention relevance accumulated over all blocks (see the module docstring). Class-specific."""
    blocks = _all_blocks(model)
    with torch.enable_grad():
        output = _forward(model, _with_grad(x), TokenRequest(attention=blocks))
        target = resolve_target(output.logits, target)
        attns = [output.tokens.attentions[b % model.backbone.info.num_blocks] for b in blocks]
        grads = torch.autograd.grad(_target_logit(output, target), attns)
    relevance = None
    for a, g in zip(attns, grads):
        cam = (g * a).clamp_min(0).mean(1).detach()  # (B,T,T)
        if relevance is None:
            relevance = torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device).expand_as(cam)
        relevance = relevance + cam @ relevance
    return _explanation(output, target, _query_row(relevance, output.tokens), x.shape[-2:])


@register_explainer("gradcam")
def grad_cam(model, x: Tensor, target: Tensor | int | None = None) -> Explanation:
    """Grad-CAM on the tokens entering the last block (or the final feature map). Class-specific."""
    n_blocks = model.backbone.info.num_blocks
    request = TokenRequest(hidden=(-2,)) if n_blocks >= 2 else TokenRequest()
    with torch.enable_grad():
        output = _forward(model, _with_grad(x), request)
        target = resolve_target(output.logits, target)
        tokens = output.tokens
        feats = tokens.hidden[n_blocks - 2] if n_blocks >= 2 else tokens.patches
        (grad,) = torch.autograd.grad(_target_logit(output, target), feats)
    if n_blocks >= 2:
        feats, grad = feats[:, tokens.num_prefix_tokens:], grad[:, tokens.num_prefix_tokens:]
    weights = grad.mean(1, keepdim=True)  # (B,1,D)
    cam = (weights * feats.detach()).sum(-1).clamp_min(0)  # (B,N)
    return _explanation(output, target, cam, x.shape[-2:])


@register_explainer("ig")
def integrated_gradients(model, x: Tensor, target: Tensor | int | None = None, steps: int = 32,
                         baseline: str = "zero", reduce: str = "positive", max_batch: int = 256) -> Explanation:
    """Integrated gradients from a `baseline` image ("zero", "mean", "blur"; see metrics.baseline_images).

    details["attribution"] (B,C,H,W) sums over pixels to y_t(x) - y_t(x0) up to the Riemann error (completeness);
    the saliency is the positive part of the channel sum (`reduce="positive"`) or its magnitude (`reduce="abs"`).
    The interpolation points go through the model together, at most `max_batch` images per pass.
    """
    if reduce not in ("positive", "abs"):
        raise GlassViTError(f"reduce must be 'positive' or 'abs', got {reduce!r}")
    if steps < 1:
        raise GlassViTError(f"integrated gradients needs steps >= 1, got {steps}")
    x = x.detach()
    x0 = baseline_images(x, baseline)
    with torch.no_grad():
        logits = model(x)
    target = resolve_target(logits, target)
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    total = torch.zeros_like(x)
    chunk = max(1, max_batch // x.shape[0])
    with torch.enable_grad():
        for a in alphas.split(chunk):
            points = x0 + a.view(-1, 1, 1, 1, 1) * (x - x0)  # (k,B,C,H,W)
            points = points.flatten(0, 1).requires_grad_(True)
            out = model(points)
            (g,) = torch.autograd.grad(out.gather(1, target.repeat(len(a)).view(-1, 1)).sum(), points)
            total += g.view(len(a), *x.shape).sum(0)
    attribution = (x - x0) * total / steps
    summed = attribution.sum(1)
    saliency = summed.clamp_min(0) if reduce == "positive" else summed.abs()
    return Explanation(logits=logits, target=target, saliency=saliency, details={"attribution": attribution})
