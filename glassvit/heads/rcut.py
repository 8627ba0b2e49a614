"""R-Cut: Relationship Weighted Out and Cut, an explainer for any zoo classifier.

Niu et al., "R-Cut: Enhancing Explainability in Vision Transformers with Relationship Weighted Out and Cut",
Sensors 24(9):2695, 2024 (arXiv:2307.09050); official code oniu-uin0/R-Cut (r_cut.py, pytorch_grad_cam/base_cam.py).

    images (B,3,H,W) -> features F (B,N,D) of one block (its norm1 output, prefix tokens dropped)
      -> Relationship Weighted Out: channel weights w (B,D) for the target class, F' = F * w
      -> Cut: normalised cut of the token graph of F' -> Fiedler vector v (B,N)
      -> saliency = minmax(upsample(minmax(relu(v)))) (B,H,W), bilinear as the reference

Features. The tokens entering block `layer` after its first LayerNorm, i.e. norm1 applied to the previous block's
output: the reference's target layer (`blocks[11].norm1` of ViT-B). They are read with a forward hook on that
norm1, so that the gradient weighting differentiates exactly the tensor the block consumes.

Relationship weighting (`weighting`):
    "score"     the reference code (Score-CAM style): every channel map, min-max normalised on the token grid and
                upsampled, masks the input; the masked image's class probability p_t (softmax; sigmoid for
                multi-label heads) is the channel's score, and w = softmax of the scores over channels.
    "cosine"    the paper's figure: the score is the cosine similarity between the masked image's probability
                vector and the target's one-hot vector, p_t / ||p||_2 (the output's agreement with the class,
                discounted by competing classes); w = softmax over channels as above.
    "gradient"  the fast mode, one backward pass: Grad-CAM channel weights, the target logit's gradient with
                respect to F averaged over tokens, w = relu(mean_i dS_t/dF_i). The cosine affinity below depends
                on w_k only through w_k^2, so negative weights would count counter-evidence channels as evidence;
                they are set to zero instead.
    "none"      class-agnostic: w = 1 (the cut of the plain features, the reference's save_map["ncut"]).
The masked forwards run in batches of `batch_size` (all images of the batch share the queue). With `num_masks=k`
below the channel count, the channel maps are grouped by k-means (farthest-point initialisation, so deterministic)
and only the k group-mean masks are forwarded; every channel takes its group's score. The reference scheme is
`num_masks=None`: one forward per channel (768 for ViT-B) per image.

Cut (`normalized_cut`): L2-normalise the weighted tokens, cosine affinity A, edges above `tau` kept (binary: 1,
"weighted": the affinity), all others 1e-5 as in the reference; degree matrix D; the generalised eigenproblem
(D - A) v = lambda D v is solved as the symmetric problem D^-1/2 (D - A) D^-1/2 u = lambda u in float64, batched
over images, with v = D^-1/2 u (so v'Dv = 1, the normalisation of scipy's eigh(D - A, D)). The Fiedler vector is
the second-smallest, oriented as the reference: flipped unless its largest-magnitude entry lies above its mean.
A graph without structure (all edge weights equal, e.g. constant features) has no defined cut; its map is zero.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..errors import GlassViTError, unknown
from ..explainers import register_explainer
from ..maps import minmax, resolve_target, to_grid, upsample
from ..types import Explanation

WEIGHTINGS = ("score", "cosine", "gradient", "none")
EDGES = ("binary", "weighted")
ABSENT_EDGE = 1e-5  # the reference's weight for edges below tau: keeps every node connected
FLAT_TOLERANCE = 1e-6
KMEANS_ITERATIONS = 10


@register_explainer("rcut")
def rcut(model, x: Tensor, target: Tensor | int | None = None, *, weighting: str = "score", layer: int = -1,
         tau: float = 0.2, edges: str = "binary", batch_size: int = 64, num_masks: int | None = None) -> Explanation:
    """Explain `model`'s decision for `target` with R-Cut (see the module docstring).

    Args:
        model: a GlassViT whose backbone has transformer blocks (ViT, DeiT, register or distillation tokens);
            `layer` indexes the backbone's blocks (blocks a head took over with split_off_blocks are the head's).
        x: images (B,3,H,W).  target: (B,), an int, or None for the predicted class.
        weighting: "score" (reference code), "cosine" (paper figure), "gradient" (fast), "none" (class-agnostic).
        layer: the block whose input features are cut (default the last block, as the reference).
        tau: affinity threshold of the token graph.  edges: "binary" (reference) or "weighted".
        batch_size: masked images per forward pass.  num_masks: forward k clustered masks instead of one per channel.

    Returns an Explanation with saliency (B,H,W) in [0,1] and details: "fiedler" (B,h,w) the oriented Fiedler
    vector, "bipartition" (B,h,w) bool, "eigenvalue" (B,), "channel_weights" (B,D).
    """
    _check_options(weighting, edges, tau, batch_size, num_masks)
    block = model.backbone._resolve((layer,), "R-Cut features")[0]
    needs_grad = weighting == "gradient"
    with torch.set_grad_enabled(needs_grad), _norm1_output(model, block, needs_grad) as captured:
        output = model.forward_detailed(x)
        target = resolve_target(output.logits, target)
        features = captured["tokens"]
        if needs_grad:
            score = output.logits.gather(1, target[:, None]).sum()
            (grads,) = torch.autograd.grad(score, features)
    prefix = output.tokens.num_prefix_tokens
    features = features[:, prefix:].detach().float()  # (B,N,D)
    grid = output.tokens.grid
    with torch.no_grad():
        if weighting == "gradient":
            weights = grads[:, prefix:].float().mean(1).clamp_min(0)
        elif weighting == "none":
            weights = torch.ones_like(features[:, 0])
        else:
            weights = masked_input_weights(model, x, features, grid, target, weighting, batch_size, num_masks)
        fiedler, eigenvalue = normalized_cut(features * weights[:, None], tau, edges)
        grid_map = minmax(fiedler.clamp_min(0)).float()
    return Explanation(
        logits=output.logits.detach(),
        target=target,
        saliency=minmax(upsample(to_grid(grid_map, grid), tuple(x.shape[-2:]))),
        details={
            "fiedler": to_grid(fiedler, grid),
            "bipartition": to_grid(fiedler > fiedler.mean(1, keepdim=True), grid),
            "eigenvalue": eigenvalue,
            "channel_weights": weights,
        },
        method="rcut",
    )


def normalized_cut(features: Tensor, tau: float = 0.2, edges: str = "binary") -> tuple[Tensor, Tensor]:
    """The Cut module: features (B,N,D) -> (oriented Fiedler vector (B,N) float64, its eigenvalue (B,) float64).

    Graph: cosine affinity of the tokens, edges above `tau` (1 or the affinity), 1e-5 elsewhere. Solves
    (D - A) v = lambda D v through the symmetric normalised Laplacian (see the module docstring). A graph whose
    edge weights are all equal has no cut: its vector and eigenvalue are zero.
    """
    if features.shape[1] < 2:
        raise GlassViTError(f"the cut needs at least 2 tokens, got {features.shape[1]}")
    unit = F.normalize(features, dim=-1)
    affinity = unit @ unit.transpose(1, 2)
    kept = affinity if edges == "weighted" else torch.ones_like(affinity)
    a = torch.where(affinity > tau, kept, ABSENT_EDGE).double()  # (B,N,N)
    inv_sqrt = a.sum(-1).rsqrt()  # D^-1/2, degrees >= N * 1e-5
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    laplacian = eye - inv_sqrt[:, :, None] * a * inv_sqrt[:, None, :]
    values, vectors = torch.linalg.eigh(laplacian)
    v = vectors[:, :, 1] * inv_sqrt
    seed = v.abs().argmax(1, keepdim=True)
    v = torch.where(v.gather(1, seed) > v.mean(1, keepdim=True), v, -v)
    flat = (a.amax((1, 2)) - a.amin((1, 2))) <= FLAT_TOLERANCE
    return v.masked_fill(flat[:, None], 0.0), values[:, 1].masked_fill(flat, 0.0)


def masked_input_weights(model, x: Tensor, features: Tensor, grid: tuple[int, int], target: Tensor, weighting: str,
                         batch_size: int, num_masks: int | None) -> Tensor:
    """Relationship Weighted Out from masked inputs: features (B,N,D) -> channel weights (B,D), softmax over D."""
    b = features.shape[0]
    maps = minmax(rearrange(features, "b n d -> (b d) n"))  # every channel map in [0,1] on the token grid
    maps = rearrange(maps, "(b d) n -> b d n", b=b)
    if num_masks is not None and num_masks < maps.shape[1]:
        groups, masks = cluster_maps(maps, num_masks)
        scores = masked_scores(model, x, masks, grid, target, weighting, batch_size).gather(1, groups)
    else:
        scores = masked_scores(model, x, maps, grid, target, weighting, batch_size)
    return scores.softmax(-1)


def masked_scores(model, x: Tensor, maps: Tensor, grid: tuple[int, int], target: Tensor, weighting: str,
                  batch_size: int) -> Tensor:
    """Scores of the images masked by token-grid maps (B,M,N) -> (B,M), at most `batch_size` images per forward."""
    b, m = maps.shape[:2]
    flat = to_grid(rearrange(maps, "b m n -> (b m) n"), grid)  # (B*M,h,w)
    owner = torch.arange(b, device=x.device).repeat_interleave(m)
    multi_label = getattr(model.head, "multi_label", False)
    scores = []
    for chunk in torch.arange(b * m, device=x.device).split(batch_size):
        masks = minmax(upsample(flat[chunk], tuple(x.shape[-2:])))
        logits = model(x[owner[chunk]] * masks[:, None].to(x.dtype)).float()
        probs = logits.sigmoid() if multi_label else logits.softmax(-1)
        p_t = probs.gather(1, target[owner[chunk], None]).squeeze(1)
        scores.append(p_t if weighting == "score" else p_t / probs.norm(dim=-1).clamp_min(1e-12))
    return torch.cat(scores).view(b, m)


def cluster_maps(maps: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """k-means of channel maps (B,D,N) -> (group of every channel (B,D) long, group-mean maps (B,k,N)).

    Farthest-point initialisation from the map of largest variance, then `KMEANS_ITERATIONS` Lloyd steps; an empty
    group keeps its centre. Deterministic for given maps.
    """
    rows = torch.arange(maps.shape[0], device=maps.device)
    centres = maps[rows, maps.var(-1).argmax(-1)][:, None]  # (B,1,N)
    nearest = torch.cdist(maps, centres)[..., 0]
    for _ in range(k - 1):
        new = maps[rows, nearest.argmax(-1)][:, None]
        centres = torch.cat([centres, new], 1)
        nearest = torch.minimum(nearest, torch.cdist(maps, new)[..., 0])
    for _ in range(KMEANS_ITERATIONS):
        groups = torch.cdist(maps, centres).argmin(-1)  # (B,D)
        members = F.one_hot(groups, k).to(maps.dtype)  # (B,D,k)
        counts = members.sum(1)[..., None]
        centres = torch.where(counts > 0, members.transpose(1, 2) @ maps / counts.clamp_min(1), centres)
    return torch.cdist(maps, centres).argmin(-1), centres


@contextmanager
def _norm1_output(model, block: int, requires_grad: bool):
    """Record the output tokens (B,T,D) of `block`'s norm1 in the yielded dict under "tokens"."""
    norm = getattr(model.backbone.model.blocks[block], "norm1", None)
    if norm is None:
        raise GlassViTError(f"R-Cut reads the norm1 output of block {block}, which {model.backbone.name!r} lacks")
    store: dict[str, Tensor] = {}

    def hook(module, inputs, out):
        if requires_grad and not out.requires_grad:
            out.requires_grad_()  # a frozen model: the features are the leaf to differentiate
        store["tokens"] = out
        return out

    handle = norm.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _check_options(weighting: str, edges: str, tau: float, batch_size: int, num_masks: int | None) -> None:
    if weighting not in WEIGHTINGS:
        raise unknown("R-Cut weighting", weighting, WEIGHTINGS)
    if edges not in EDGES:
        raise unknown("R-Cut edge type", edges, EDGES)
    if not -1.0 <= tau < 1.0:
        raise GlassViTError(f"tau is a cosine-similarity threshold in [-1, 1), got {tau}")
    if batch_size < 1:
        raise GlassViTError(f"batch_size must be >= 1, got {batch_size}")
    if num_masks is not None and num_masks < 1:
        raise GlassViTError(f"num_masks must be >= 1 (or None for one mask per channel), got {num_masks}")
