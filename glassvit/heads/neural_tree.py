"""ViT-NeT: a soft binary decision tree with one prototype per internal node, decoding the backbone's tokens.

Kim et al., ViT-NeT: Interpretable Vision Transformers with Neural Tree Decoder, ICML 2022. It grew from ProtoTree
(Nauta et al., Neural Prototype Trees for Interpretable Fine-grained Image Recognition, CVPR 2021), which the same
head expresses through its options.

    z_i = sigmoid(A t_i)                              add-on: patch token t_i (D) -> z_i (C), A has no bias
    d_k(u) = ||z^k[u] - p_k||_2                       prototype p_k (C,P,P) against every PxP token window u of z^k
    m_k(u) = f(d_k(u)),  s_k = max_u m_k(u)           node k's presence map and presence score
    node k sends s_k of its mass to its "present" child and 1 - s_k to the other
    z^c = sigmoid(LN(z^k + g_c(sum_i softmax_i(a_c . z^k_i) z^k_i)))
                                                      per-child refinement (ViT-NeT's GCB): child c of node k
                                                      pools node k's tokens by attention, transforms the pooled
                                                      vector (g_c: Linear, LN, GELU, Linear), adds it to every token
    q_l = softmax(LN_l(W_l max_i z^l_i + b_l + c(x)))  leaf l; c(x) = V mean_i t_i + v is the backbone classifier,
                                                      a linear layer on the avg-pooled tokens owned by this head
    y = sum_l pi_l q_l                                pi_l = product of the routing probabilities on l's path

`y` is a class distribution; the head's logits are log(y + 1e-12), so cross-entropy on them is ViT-NeT's loss, the
NLL of log(y + 1e-12) (hard or soft targets), to within log(1 + C 1e-12).

Faithfulness: the output is exactly sum_l pi_l q_l (aux "path_probs" (B,L) and "leaf_probs" (B,L,C)), with
pi_l in [0,1] and sum_l pi_l = 1 (up to rounding).

Presence f (option `similarity`):
    "log"  ViT-NeT's similarity s = log((d + 1) / (d + 1e-4)) lies in (0, 9.21]; the official code routes s to the
           left child and 1 - s to the right without clamping, so mass turns negative where d < 0.58. Ours routes
           f(d) = 1 - exp(-s) = (1 - 1e-4) / (1 + d): the same similarity normalised monotonically onto (0, 1),
           equal to s to first order where s is small (where the official routing is valid). The official
           unclamped routing, f = s, exists only behind `reference_routing=True` (parity with the official code).
    "exp"  ProtoTree's f(d) = exp(-d).
The prototype is "present" when s_k > 0.5; greedy inference follows that decision at every node.

Node orders (fixed, so saved models reload identically):
    heap numbering   root 0, children of node h are 2h+1 (left) and 2h+2 (right); level l is [2^l - 1, 2^(l+1) - 1).
                     Refinement blocks are stored one per non-root node (row h-1 for node h) and leaves left to
                     right, so that every level is one contiguous slice evaluated by batched ops for all of its
                     nodes at once (on CPU without autograd, in cache-sized blocks: see StackedRefinement).
    pre-order        root, left subtree, right subtree, internal nodes only: the rows of `prototypes` and of every
                     per-prototype tensor (presence, components, `forced_child`, `proto_source`, `proto_patches`).
                     It is ViT-NeT's node numbering with the leaves skipped; the official code assigns prototypes
                     to nodes by iterating a Python set, which changes from process to process.

Options that turn the head into ProtoTree: similarity="exp", present="right", refine=False (every node compares
its prototype to the same add-on features), leaves="static" (class distributions softmax(c_l), updated without
gradients after every optimiser step, see `update_leaves`), prune_threshold=0.01, project_after_training=True.
`PROTOTREE` holds these options.

Inference (option `inference`, in eval mode; training always evaluates the soft tree):
    "soft"        y = sum_l pi_l q_l
    "sample_max"  y = q_l* for the leaf with the largest path probability
    "greedy"      y = q_l* for the leaf reached by following each node's decision; with refinement only the
                  nodes on each image's path are evaluated (batched: one gathered op per level)

Pruning (`prune`, ProtoTree's criterion): a subtree whose leaves all have max class probability <= threshold is cut
off; its parent stops deciding and passes all of its mass to the other child (`forced_child`), keeping that
child's refinement chain, so the kept leaves see the same features as before. Leaves that depend on the image
("tokens") are judged by their reach-weighted mean distribution over a data set (`leaf_distributions`).

Projection (`project`): every prototype is replaced by its nearest training window of its own node's features,
among images whose label is the top class of some live leaf below the node (ProtoTree's class constraint). The
image index (position in the loader's order), window location and the input pixels under the window are kept in
`proto_source` and `proto_patches` for figures.

Explanation (`explain`): the greedy decision path, every live deciding node's presence map as a component
(upsampled to the token grid by taking, for each token, the largest presence of a window covering it), routing
probabilities and leaf distributions in details. Saliency for target t: take the leaf l_t that gives t the most
of its output mass (argmax_l w_l q_l[t], w = the inference mode's leaf weights: pi, or one-hot at the greedy or
sample-max leaf) and sum the presence maps of the deciding nodes on l_t's path, each minus its own minimum (the
floor of a map says nothing about location), times that mass w_lt q_lt[t]. Absent steps add little because their
maps are low and flat. The map is non-negative and class-specific (the path and the mass depend on t).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import GlassViTError
from ..maps import upsample
from ..types import BackboneInfo, Explanation, HeadOutput, Tokens
from .base import Head, register_head

LOG_EPS = 1e-12  # y -> log(y + LOG_EPS), as in ViT-NeT's loss
SIM_EPS = 1e-4  # ViT-NeT's similarity log((d + 1) / (d + SIM_EPS))
PROTOTREE = dict(similarity="exp", present="right", refine=False, leaves="static", prune_threshold=0.01,
                 project_after_training=True)


def preorder(depth: int) -> list[int]:
    """Heap indices of all nodes of a complete tree of `depth` (internal nodes and leaves) in pre-order."""
    internal = 2 ** depth - 1
    out, stack = [], [0]
    while stack:
        h = stack.pop()
        out.append(h)
        if h < internal:
            stack += [2 * h + 2, 2 * h + 1]
    return out


@dataclass
class TreeState:
    """The soft tree for a batch, every node evaluated.

    presence: (B,K) presence score s_k per internal node, pre-order.  maps: (B,K,h',w') presence maps, pre-order.
    choose_left: (B,K) bool, the node's greedy decision (forced nodes included).  left: (B,K) probability of the
    left child.  path_probs: (B,L) pi_l.  leaf_probs: (B,L,C) q_l.  probs: (B,C) sum_l pi_l q_l.
    """

    presence: Tensor
    maps: Tensor
    choose_left: Tensor
    left: Tensor
    path_probs: Tensor
    leaf_probs: Tensor
    probs: Tensor


class StackedRefinement(nn.Module):
    """ViT-NeT's GCB for many tree nodes at once: parameters stacked with one row per node.

    For node features x (C per token) and a row's parameters: a = softmax_i(w . x_i + b) over tokens,
    g = fc2(GELU(LN1(fc1(sum_i a_i x_i)))), out_i = sigmoid(LN2(x_i + g)).

    The last step touches the largest tensors of the tree. Without autograd on CPU it runs in blocks of a few
    images per parent, small enough to stay in cache (one op per level would stream every intermediate through
    memory, which on CPU costs more than the official node-by-node recursion); elsewhere it is one op per level.
    """

    block_elements = 2 ** 18  # CPU inference: elements of one block of the last step

    def __init__(self, rows: int, dim: int):
        super().__init__()
        bound = 1 / math.sqrt(dim)  # nn.Linear's default initialisation, as in the official blocks

        def uniform(*shape):
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.pool_weight, self.pool_bias = uniform(rows, dim), uniform(rows)
        self.fc1_weight, self.fc1_bias = uniform(rows, dim, dim), uniform(rows, dim)
        self.norm1_weight, self.norm1_bias = nn.Parameter(torch.ones(rows, dim)), nn.Parameter(torch.zeros(rows, dim))
        self.fc2_weight, self.fc2_bias = uniform(rows, dim, dim), uniform(rows, dim)
        self.norm2_weight, self.norm2_bias = nn.Parameter(torch.ones(rows, dim)), nn.Parameter(torch.zeros(rows, dim))

    def forward(self, x: Tensor, rows: slice | Tensor, pool: bool = False) -> Tensor:
        """x (n,B,N,C) features of n parent nodes; `rows` selects n*s parameter rows, s children per parent, in
        parent-major order -> the children's features (n*s,B,N,C), or with `pool` their max over tokens (n*s,B,C)
        (taken before the sigmoid, which commutes with it)."""
        n, b, tokens, c = x.shape
        p = {k: v[rows].unflatten(0, (n, -1)) for k, v in self.named_parameters()}
        attn = torch.einsum("nblc,nsc->nbsl", x, p["pool_weight"]) + p["pool_bias"][:, None, :, None]
        pooled = torch.einsum("nbsl,nblc->nsbc", attn.softmax(-1), x)
        g = torch.einsum("nsbc,nsdc->nsbd", pooled, p["fc1_weight"]) + p["fc1_bias"][:, :, None]
        g = F.gelu(F.layer_norm(g, (c,)) * p["norm1_weight"][:, :, None] + p["norm1_bias"][:, :, None])
        g = torch.einsum("nsbc,nsdc->nsbd", g, p["fc2_weight"]) + p["fc2_bias"][:, :, None]
        weight, bias = p["norm2_weight"][:, :, None, None], p["norm2_bias"][:, :, None, None]
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return _refined(x[:, None], g[:, :, :, None], weight, bias, pool).flatten(0, 1)
        s = g.shape[1]
        out = x.new_empty((n, s, b, c) if pool else (n, s, b, tokens, c))
        step = max(1, self.block_elements // (s * tokens * c))
        for j in range(n):
            for i in range(0, b, step):
                _refined(x[j, None, i:i + step], g[j, :, i:i + step, None], weight[j], bias[j], pool,
                         out=out[j, :, i:i + step])
        return out.flatten(0, 1)


def _refined(x: Tensor, g: Tensor, weight: Tensor, bias: Tensor, pool: bool, out: Tensor | None = None) -> Tensor:
    """sigmoid(LN(x + g) * weight + bias) over the last dim, or its max over tokens (dim -2) when `pool`; written
    into `out` when given."""
    z = torch.addcmul(bias, F.layer_norm(x + g, (x.shape[-1],)), weight)
    return torch.sigmoid(z.amax(-2) if pool else z, out=out)


class StackedLeaves(nn.Module):
    """ViT-NeT's leaves, stacked: q_l = softmax(LN_l(W_l v_l + b_l + logits)) for leaf rows l."""

    def __init__(self, rows: int, dim: int, num_classes: int):
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.fc_weight = nn.Parameter(torch.empty(rows, num_classes, dim).uniform_(-bound, bound))
        self.fc_bias = nn.Parameter(torch.empty(rows, num_classes).uniform_(-bound, bound))
        self.norm_weight = nn.Parameter(torch.ones(rows, num_classes))
        self.norm_bias = nn.Parameter(torch.zeros(rows, num_classes))

    def forward(self, pooled: Tensor, rows: slice | Tensor, logits: Tensor | None) -> Tensor:
        """pooled (n,B,C) max-pooled features of r leaves (n = r, or 1 when shared); logits broadcastable to
        (r,B,K) -> (r,B,K)."""
        w, b = self.fc_weight[rows], self.fc_bias[rows]
        if pooled.shape[0] == 1:
            out = torch.einsum("bc,rkc->rbk", pooled[0], w)
        else:
            out = torch.einsum("rbc,rkc->rbk", pooled, w)
        out = out + b[:, None]
        out = F.layer_norm(out if logits is None else out + logits, (w.shape[1],))
        return torch.addcmul(self.norm_bias[rows][:, None], out, self.norm_weight[rows][:, None]).softmax(-1)


def window_distances(x: Tensor, protos: Tensor, grid: tuple[int, int]) -> Tensor:
    """L2 distance of every prototype to every PxP token window.

    x (g,B,N,C) features of g groups (nodes, or one shared group); protos (g*m,C,P,P), m per group in group order
    -> (g*m,B,h-P+1,w-P+1). d = sqrt(max(|x_u|^2 + |p|^2 - 2 x_u . p, 1e-12)) (ProtoPNet's expansion, as in both
    reference implementations; the floor keeps the gradient finite at d = 0, e.g. right after projection).
    """
    g, b, _, c = x.shape
    size = protos.shape[-1]
    x = rearrange(x, "g b (h w) c -> g b h w c", h=grid[0], w=grid[1])
    p = rearrange(protos, "(g m) c i j -> g m i j c", g=g)
    hh, ww = grid[0] - size + 1, grid[1] - size + 1
    x2 = torch.linalg.vector_norm(x, dim=-1).square()  # one reduction, no (g,B,h,w,C) temporary
    if size > 1:
        x2 = F.avg_pool2d(x2.flatten(0, 1), size, stride=1) * size * size
    xp = sum(torch.einsum("gbhwc,gmc->gmbhw", x[:, :, i:i + hh, j:j + ww], p[:, :, i, j])
             for i in range(size) for j in range(size))
    d2 = x2.view(g, 1, b, hh, ww) + p.pow(2).sum((2, 3, 4))[:, :, None, None, None] - 2 * xp
    return d2.clamp_min(1e-12).sqrt().flatten(0, 1)


@register_head("neural_tree")
class NeuralTreeHead(Head):
    """ViT-NeT's neural tree decoder (see the module docstring for the math, the orders and every choice).

    Args:
        depth: levels of decisions; 2^depth - 1 prototypes and 2^depth leaves (the paper: 4 for CUB-200, 6 for
            Stanford Cars and Dogs).
        proto_dim: add-on width C (default: embed_dim // 4, the paper's 1024 -> 256).
        proto_size: prototype side P in tokens (the paper: 1, or 2 for Dogs).
        similarity: "log" (ViT-NeT) or "exp" (ProtoTree).
        present: the child that receives the presence score: "left" (ViT-NeT) or "right" (ProtoTree).
        refine: per-child token refinement (ViT-NeT); False shares the add-on features across nodes (ProtoTree).
        leaves: "tokens" (ViT-NeT: from max-pooled tokens plus the backbone classifier) or "static" (ProtoTree:
            softmax of per-leaf class counts, updated without gradients).
        reference_routing: ViT-NeT's unclamped routing (mass can go negative); for parity with the official code.
        inference: "soft", "greedy" or "sample_max" (eval mode only).
        leaf_memory: static leaves: the counts decay by 1/leaf_memory per update (ProtoTree forgets one epoch's
            counts over one epoch; use the number of batches per epoch).
        prune_threshold: when set, `after_training` prunes with this threshold.
        project_after_training: `after_training` projects the prototypes onto training windows.
    """

    paper = "Kim et al., ViT-NeT: Interpretable Vision Transformers with Neural Tree Decoder, ICML 2022"

    def __init__(self, info: BackboneInfo, num_classes: int, depth: int = 4, proto_dim: int | None = None,
                 proto_size: int = 1, similarity: str = "log", present: str = "left", refine: bool = True,
                 leaves: str = "tokens", reference_routing: bool = False, inference: str = "soft",
                 leaf_memory: int = 100, prune_threshold: float | None = None, project_after_training: bool = False,
                 multi_label: bool = False):
        super().__init__(info, num_classes, multi_label)
        _check(multi_label is False, "the neural tree outputs one class distribution; multi-label is not supported")
        _check(isinstance(depth, int) and 1 <= depth <= 12, f"depth must be an integer in [1, 12], got {depth!r}")
        _choice("similarity", similarity, ("log", "exp"))
        _choice("present", present, ("left", "right"))
        _choice("leaves", leaves, ("tokens", "static"))
        _choice("inference", inference, ("soft", "greedy", "sample_max"))
        _check(not (reference_routing and similarity != "log"), "reference_routing applies to similarity='log' only")
        _check(1 <= proto_size <= min(info.grid), f"proto_size must be in [1, {min(info.grid)}], got {proto_size}")
        _check(leaf_memory >= 1, f"leaf_memory must be >= 1, got {leaf_memory}")
        self.depth, self.proto_size = depth, proto_size
        self.similarity, self.present_left, self.refine = similarity, present == "left", refine
        self.static_leaves, self.reference_routing, self.inference = leaves == "static", reference_routing, inference
        self.leaf_memory, self.prune_threshold = leaf_memory, prune_threshold
        self.project_after_training = project_after_training
        self.num_internal, self.num_leaves = 2 ** depth - 1, 2 ** depth
        dim = proto_dim or max(1, info.embed_dim // 4)
        self.proto_dim = dim

        self.add_on = nn.Linear(info.embed_dim, dim, bias=False)
        nn.init.xavier_normal_(self.add_on.weight, gain=nn.init.calculate_gain("sigmoid"))
        self.prototypes = nn.Parameter(torch.randn(self.num_internal, dim, proto_size, proto_size) * 0.1 + 0.5)
        self.refinement = StackedRefinement(2 * self.num_leaves - 2, dim) if refine else None
        if self.static_leaves:
            self.register_buffer("leaf_counts", torch.zeros(self.num_leaves, num_classes))
            self.classifier = self.leaves = None
        else:
            self.classifier = nn.Linear(info.embed_dim, num_classes)
            nn.init.trunc_normal_(self.classifier.weight, std=0.02)
            nn.init.zeros_(self.classifier.bias)
            self.leaves = StackedLeaves(self.num_leaves, dim, num_classes)

        order = [h for h in preorder(depth) if h < self.num_internal]
        self.register_buffer("heap_to_pre", torch.tensor(order).argsort(), persistent=False)
        self.register_buffer("pre_to_heap", torch.tensor(order), persistent=False)
        self.register_buffer("forced_child", torch.full((self.num_internal,), -1))
        self.register_buffer("proto_source", torch.full((self.num_internal, 3), -1))
        ph, pw = (proto_size * s // g for s, g in zip(info.image_size, info.grid))
        self.register_buffer("proto_patches", torch.zeros(self.num_internal, 3, ph, pw))

    # ---- evaluation -------------------------------------------------------------------------------------------

    def forward(self, tokens: Tokens) -> HeadOutput:
        """Tokens (patches (B,N,D)) -> HeadOutput: logits log(y + 1e-12) (B,C); aux "probs" (B,C) = y,
        "leaf_weights" (B,L) (pi, or one-hot for greedy/sample-max), and with the soft tree "tree" (TreeState),
        "path_probs" (B,L), "leaf_probs" (B,L,C); greedy path-only evaluation adds "leaf" (B,) instead."""
        mode = "soft" if self.training else self.inference
        if mode == "greedy" and self.refine:
            leaf, probs = self.greedy(tokens)
            weights = F.one_hot(leaf, self.num_leaves).to(probs.dtype)
            return HeadOutput(torch.log(probs + LOG_EPS), tokens, {"probs": probs, "leaf_weights": weights,
                                                                  "leaf": leaf})
        state = self.evaluate(tokens)
        weights = self.leaf_weights(state, mode)
        probs = state.probs if mode == "soft" else torch.einsum("bl,blc->bc", weights, state.leaf_probs)
        aux = {"probs": probs, "leaf_weights": weights, "tree": state, "path_probs": state.path_probs,
               "leaf_probs": state.leaf_probs}
        return HeadOutput(torch.log(probs + LOG_EPS), tokens, aux)

    def evaluate(self, tokens: Tokens) -> TreeState:
        """The soft tree, level by level: one batched op per level for all of its nodes."""
        x, logits = self._inputs(tokens)
        feats, mass = x, x.new_ones(1, x.shape[1])
        levels = []  # per level, heap order: presence (n,B), maps (n,B,h',w'), decisions (n,B), p_left (n,B)
        for level in range(self.depth):
            rows = self.heap_to_pre[self._level(level)]
            maps = self._presence(window_distances(feats, self.prototypes[rows], tokens.grid))
            s = maps.flatten(2).amax(-1)
            p_left, go_left = self._route(s, self.forced_child[rows][:, None])
            mass = torch.stack([mass * p_left, mass * (1 - p_left)], 1).flatten(0, 1)
            feats = self._descend(feats, level)
            levels.append((s, maps, go_left, p_left))
        leaf_probs = self._leaf_probs(feats, slice(None), logits).transpose(0, 1)
        path_probs = mass.T
        presence, maps, choose_left, left = (torch.cat(parts)[self.pre_to_heap].transpose(0, 1)
                                             for parts in zip(*levels))
        return TreeState(presence, maps, choose_left, left, path_probs, leaf_probs,
                         torch.einsum("bl,blc->bc", path_probs, leaf_probs))

    def greedy(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        """Greedy inference, batched -> leaf index (B,) and its distribution q_leaf (B,C).

        With refinement only the nodes on each image's path are evaluated: every level gathers each image's node
        parameters and runs one op for the whole batch. Shared features (refine=False) make every node's cost one
        distance map, so the whole tree is evaluated and the path read off it.
        """
        if not self.refine:
            state = self.evaluate(tokens)
            leaf = self.walk(state.choose_left)[1]
            return leaf, state.leaf_probs[torch.arange(leaf.shape[0], device=leaf.device), leaf]
        x, backbone_logits = self._inputs(tokens)
        feats = x.transpose(0, 1)  # (B,1,N,C): one group per image
        node = torch.zeros(feats.shape[0], dtype=torch.long, device=x.device)
        for level in range(self.depth):
            rows = self.heap_to_pre[node]
            s = self._presence(window_distances(feats, self.prototypes[rows], tokens.grid)).flatten(1).amax(-1)
            node = 2 * node + 2 - self._route(s, self.forced_child[rows])[1].long()
            feats = self.refinement(feats, node - 1, pool=level == self.depth - 1)
        leaf = node - self.num_internal
        logits = None if backbone_logits is None else backbone_logits[:, None]
        return leaf, self._leaf_probs(feats, leaf, logits)[:, 0]

    def leaf_weights(self, state: TreeState, mode: str) -> Tensor:
        """(B,L) weights of the leaves in the output: pi ("soft"), or one-hot at the greedy or sample-max leaf."""
        if mode == "soft":
            return state.path_probs
        leaf = self.walk(state.choose_left)[1] if mode == "greedy" else state.path_probs.argmax(1)
        return F.one_hot(leaf, self.num_leaves).to(state.path_probs.dtype)

    def walk(self, choose_left: Tensor, leaf: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Paths as heap nodes (B,depth) and leaves (B,): following the decisions `choose_left` (B,K, pre-order),
        or, given `leaf` (B,), the path down to that leaf."""
        b = choose_left.shape[0]
        if leaf is not None:
            heap = leaf + self.num_internal
            path = [(heap + 1) // 2 ** (self.depth - level) - 1 for level in range(self.depth)]
            return torch.stack(path, 1), leaf
        node, path = torch.zeros(b, dtype=torch.long, device=choose_left.device), []
        for _ in range(self.depth):
            path.append(node)
            go_left = choose_left.gather(1, self.heap_to_pre[node][:, None])[:, 0]
            node = 2 * node + 2 - go_left.long()
        return torch.stack(path, 1), node - self.num_internal

    def _inputs(self, tokens: Tokens) -> tuple[Tensor, Tensor | None]:
        """Add-on features (1,B,N,C) and the backbone classifier's logits (B,K) (None for static leaves)."""
        x = torch.sigmoid(self.add_on(tokens.patches))[None]
        return x, None if self.static_leaves else self.classifier(tokens.patches.mean(1))

    def _presence(self, d: Tensor) -> Tensor:
        if self.similarity == "exp":
            return torch.exp(-d)
        if self.reference_routing:
            return torch.log((d + 1) / (d + SIM_EPS))
        return (1 - SIM_EPS) / (d + 1)

    def _route(self, s: Tensor, forced: Tensor) -> tuple[Tensor, Tensor]:
        """Presence scores s and forced children (-1 none, 0 left, 1 right), broadcastable -> probability of the
        left child and the greedy decision "go left" (present when s > 0.5)."""
        p_left = s if self.present_left else 1 - s
        go_left = (s > 0.5) == self.present_left
        p_left = torch.where(forced == 0, 1.0, torch.where(forced == 1, 0.0, p_left))
        go_left = torch.where(forced < 0, go_left, forced == 0)
        return p_left, go_left

    def _level(self, level: int, offset: int = 0) -> slice:
        """Heap indices of a level's nodes, minus `offset` (1: their refinement rows)."""
        return slice(2 ** level - 1 - offset, 2 ** (level + 1) - 1 - offset)

    def _descend(self, feats: Tensor, level: int) -> Tensor:
        """Features of level+1 (2n,B,N,C) from level `level` (n,B,N,C); at the leaves only their max over tokens
        (2n,B,C). Shared features pass through (and are max-pooled at the leaves)."""
        leaves = level == self.depth - 1
        if not self.refine:
            return feats.amax(2) if leaves else feats
        return self.refinement(feats, self._level(level + 1, offset=1), pool=leaves)

    def _leaf_probs(self, pooled: Tensor, rows: slice | Tensor, logits: Tensor | None) -> Tensor:
        """(L,B,C) leaf distributions from the leaves' max-pooled features (L or 1,B,C)."""
        if self.static_leaves:
            return self.leaf_counts[rows].softmax(-1)[:, None].expand(-1, pooled.shape[1], -1)
        return self.leaves(pooled, rows, logits)

    # ---- training hooks -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_leaves(self, output: HeadOutput, labels: Tensor) -> None:
        """ProtoTree's derivative-free leaf update for static leaves, from one training step's output.

        update_l = sum_b pi_l(b) q_l y_b / y(b) (elementwise over classes; y_b one-hot or soft targets);
        counts_l <- counts_l (1 - 1/leaf_memory) + update_l; q_l = softmax(counts_l).
        """
        _check(self.static_leaves, "update_leaves applies to static leaves (leaves='static') only")
        target = _targets(labels, self.num_classes).to(self.leaf_counts)
        probs = output.aux["probs"].detach().clamp_min(LOG_EPS)
        q = self.leaf_counts.softmax(-1)
        update = torch.einsum("bl,lc,bc->lc", output.aux["path_probs"].detach(), q, target / probs)
        self.leaf_counts.mul_(1 - 1 / self.leaf_memory).add_(update)

    def after_optimizer_step(self, output: HeadOutput, batch: dict[str, Any]) -> None:
        if self.static_leaves:
            self.update_leaves(output, batch["label"])

    def after_training(self, model: nn.Module, loader: Iterable) -> None:
        if self.prune_threshold is not None:
            dists = None if self.static_leaves else self.leaf_distributions(model, loader)
            self.prune(self.prune_threshold, dists)
        if self.project_after_training:
            self.project(model, loader)

    # ---- pruning and projection ---------------------------------------------------------------------------------

    def live_nodes(self) -> Tensor:
        """(2^(depth+1)-1,) bool over heap nodes: reachable without crossing a pruned (forced-away) edge."""
        live = [True] * (2 * self.num_leaves - 1)
        forced = self.forced_child[self.heap_to_pre].tolist()
        for h in range(self.num_internal):
            for side in (0, 1):
                live[2 * h + 1 + side] = live[h] and forced[h] in (-1, side)
        return torch.tensor(live, device=self.forced_child.device)

    def deciding_nodes(self) -> list[int]:
        """Pre-order ids of live internal nodes that still decide (not pruned, not forced)."""
        live = self.live_nodes()[self.pre_to_heap]
        return [k for k in range(self.num_internal) if live[k] and int(self.forced_child[k]) < 0]

    @torch.no_grad()
    def leaf_distributions(self, model: nn.Module, loader: Iterable) -> Tensor:
        """(L,C) each leaf's class distribution: static leaves' own, or for image-dependent leaves the mean of
        q_l over `loader`'s images weighted by their path probability pi_l (zero rows for unreached leaves)."""
        if self.static_leaves:
            return self.leaf_counts.softmax(-1)
        total = torch.zeros(self.num_leaves, self.num_classes, device=self.prototypes.device)
        reach = torch.zeros(self.num_leaves, device=total.device)
        from ..models.classifier import evaluating  # the classifier imports the heads: import on use

        with evaluating(model):
            for images, _ in _batches(loader, model):
                state = self.evaluate(model.backbone(images))
                total += torch.einsum("bl,blc->lc", state.path_probs, state.leaf_probs)
                reach += state.path_probs.sum(0)
        return total / reach.clamp_min(1e-12)[:, None]

    @torch.no_grad()
    def prune(self, threshold: float = 0.01, leaf_distributions: Tensor | None = None) -> list[int]:
        """Cut off every maximal subtree whose live leaves all have max class probability <= threshold
        (ProtoTree's criterion); the parent then forwards all of its mass to the other child.

        leaf_distributions (L,C): required for image-dependent leaves (see `leaf_distributions`).
        Returns the pre-order ids of the internal nodes that stopped deciding. A tree whose every leaf is
        uninformative is left as it is.
        """
        if leaf_distributions is None:
            _check(self.static_leaves, "pruning image-dependent leaves needs leaf_distributions "
                                       "(head.leaf_distributions(model, loader))")
            leaf_distributions = self.leaf_counts.softmax(-1)
        _check(tuple(leaf_distributions.shape) == (self.num_leaves, self.num_classes),
               f"leaf_distributions must be ({self.num_leaves}, {self.num_classes}), "
               f"got {tuple(leaf_distributions.shape)}")
        live = self.live_nodes().tolist()
        weak = (leaf_distributions.max(-1).values <= threshold).tolist()
        prunable = [False] * (2 * self.num_leaves - 1)  # all live leaves below are weak (and there is one)
        has_live = [False] * len(prunable)
        for h in reversed(range(len(prunable))):
            if h >= self.num_internal:
                has_live[h] = live[h]
                prunable[h] = live[h] and weak[h - self.num_internal]
            else:
                kids = [c for c in (2 * h + 1, 2 * h + 2) if has_live[c]]
                has_live[h] = live[h] and bool(kids)
                prunable[h] = has_live[h] and all(prunable[c] for c in kids)
        pruned = []
        for h in range(1, len(prunable)):
            parent = (h - 1) // 2
            if prunable[h] and not prunable[parent]:
                k = int(self.heap_to_pre[parent])
                self.forced_child[k] = 1 if h == 2 * parent + 1 else 0
                pruned.append(k)
        return sorted(pruned)

    @torch.no_grad()
    def project(self, model: nn.Module, loader: Iterable) -> dict[int, dict[str, Any]]:
        """Replace each deciding node's prototype by the nearest window of that node's features over `loader`'s
        images, among images labelled with the top class of some live leaf below the node.

        Remembers the image index (order of the loader), window row/column and the input pixels under the window.
        Returns {pre-order node: {"image", "row", "col", "distance"}}; nodes without an admissible image keep
        their prototype and are left out.
        """
        classes = self._subtree_classes(self.leaf_distributions(model, loader))
        best = torch.full((self.num_internal,), float("inf"), device=self.prototypes.device)
        prototypes, source, patches = self.prototypes.clone(), self.proto_source.clone(), self.proto_patches.clone()
        found: dict[int, dict[str, Any]] = {}
        seen = 0
        from ..models.classifier import evaluating  # the classifier imports the heads: import on use

        with evaluating(model):
            for images, labels in _batches(loader, model):
                tokens = model.backbone(images)
                feats, _ = self._inputs(tokens)
                label = _targets(labels, self.num_classes).argmax(-1)
                for level in range(self.depth):
                    rows = self.heap_to_pre[self._level(level)]
                    d = window_distances(feats, self.prototypes[rows], tokens.grid)  # (n,B,h',w')
                    d = d.masked_fill(~classes[rows][:, label, None, None], float("inf"))
                    dmin, idx = d.flatten(1).min(1)
                    for j in (dmin < best[rows]).nonzero()[:, 0].tolist():
                        k, (i, r, c) = int(rows[j]), _unravel(int(idx[j]), d.shape[1:])
                        node_feats = feats[j if feats.shape[0] > 1 else 0, i]  # (N,C)
                        window = rearrange(node_feats, "(h w) c -> c h w", h=tokens.grid[0])
                        prototypes[k] = window[:, r:r + self.proto_size, c:c + self.proto_size]
                        best[k] = dmin[j]
                        source[k] = torch.tensor([seen + i, r, c])
                        patches[k] = _crop(images[i], (r, c), self.proto_size, tokens.grid, tuple(patches.shape[-2:]))
                        found[k] = {"image": seen + i, "row": r, "col": c, "distance": float(dmin[j])}
                    if level < self.depth - 1:
                        feats = self._descend(feats, level)
                seen += images.shape[0]
        self.prototypes.copy_(prototypes)
        self.proto_source.copy_(source)
        self.proto_patches.copy_(patches)
        return dict(sorted(found.items()))

    def _subtree_classes(self, leaf_distributions: Tensor) -> Tensor:
        """(K,C) bool, pre-order: classes that are the top class of a live, reached leaf below each node."""
        live = self.live_nodes()
        leaf_ok = live[self.num_internal:] & (leaf_distributions.sum(-1) > 0)
        top = F.one_hot(leaf_distributions.argmax(-1), self.num_classes).bool() & leaf_ok[:, None]
        heap = torch.zeros(2 * self.num_leaves - 1, self.num_classes, dtype=torch.bool, device=top.device)
        heap[self.num_internal:] = top
        for h in reversed(range(self.num_internal)):
            heap[h] = heap[2 * h + 1] | heap[2 * h + 2]
        return heap[:self.num_internal][self.pre_to_heap]

    # ---- explanation -----------------------------------------------------------------------------------------

    def explain(self, output: HeadOutput, target: Tensor) -> Explanation:
        """Greedy path, presence maps of the live deciding nodes, and the target's path saliency (module docstring)."""
        state = output.aux["tree"] if "tree" in output.aux else self.evaluate(output.tokens)
        tokens = output.tokens
        weights = output.aux["leaf_weights"]
        b = target.shape[0]
        arange = torch.arange(b, device=target.device)
        grid_maps = F.max_pool2d(state.maps, self.proto_size, stride=1, padding=self.proto_size - 1) \
            if self.proto_size > 1 else state.maps  # (B,K,h,w)
        mass = weights * state.leaf_probs[arange, :, target]  # (B,L)
        target_leaf = mass.argmax(1)
        target_path = self.heap_to_pre[self.walk(state.choose_left, target_leaf)[0]]  # (B,depth) pre-order
        deciding = torch.tensor(self.deciding_nodes(), dtype=torch.long, device=target.device)
        on_path = torch.zeros(b, self.num_internal, device=target.device)
        on_path.scatter_(1, target_path, 1.0)
        on_path[:, self.forced_child >= 0] = 0
        floor = grid_maps.flatten(2).amin(-1)[..., None, None]
        saliency = torch.einsum("bk,bkhw->bhw", on_path, grid_maps - floor) * mass[arange, target_leaf][:, None, None]
        heap_path, leaf = self.walk(state.choose_left)
        path = self.heap_to_pre[heap_path]
        step_left = torch.cat([heap_path[:, 1:], (leaf + self.num_internal)[:, None]], 1) % 2 == 1
        presence = state.presence.gather(1, path)
        p_left = state.left.gather(1, path)
        details = {
            "path_nodes": path,
            "path_left": step_left,
            "path_present": step_left == self.present_left,
            "path_presence": presence,
            "path_routing": torch.where(step_left, p_left, 1 - p_left),
            "path_forced": self.forced_child[path] >= 0,
            "leaf": leaf,
            "leaf_distribution": state.leaf_probs[arange, leaf],
            "presence": state.presence,
            "left_probs": state.left,
            "path_probs": state.path_probs,
            "leaf_distributions": state.leaf_probs,
            "leaf_weights": weights,
            "target_leaf": target_leaf,
            "target_path_nodes": target_path,
        }
        return Explanation(
            logits=output.logits,
            target=target,
            saliency=upsample(saliency, tokens.image_size),
            components=grid_maps[:, deciding],
            component_names=[f"node {k}" for k in deciding.tolist()],
            details=details,
        )

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, proto_dim={self.proto_dim}, proto_size={self.proto_size}, "
                f"similarity={self.similarity!r}, refine={self.refine}, static_leaves={self.static_leaves}, "
                f"reference_routing={self.reference_routing}, inference={self.inference!r}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise GlassViTError(message)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _targets(labels: Tensor, num_classes: int) -> Tensor:
    """Class indices (B,) or soft targets (B,C) -> (B,C) float."""
    if labels.ndim == 2:
        return labels.float()
    return F.one_hot(labels.long(), num_classes).float()


def _batches(loader: Iterable, model: nn.Module):
    """(images, labels) on the model's device from batches that are dicts ("image", "label") or (x, y) pairs."""
    device = next(model.parameters()).device
    for batch in loader:
        if isinstance(batch, dict):
            _check("image" in batch and "label" in batch, "batches need 'image' and 'label' entries")
            images, labels = batch["image"], batch["label"]
        else:
            images, labels = batch[0], batch[1]
        yield images.to(device), labels.to(device)


def _unravel(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        index, rest = divmod(index, size)
        out.append(rest)
    return tuple(reversed(out))


def _crop(image: Tensor, at: tuple[int, int], size: int, grid: tuple[int, int], out: tuple[int, int]) -> Tensor:
    """The input pixels (3,ph,pw) under the window of `size` tokens at token position `at`."""
    (r, c), (gh, gw) = at, grid
    sh, sw = image.shape[-2] // gh, image.shape[-1] // gw
    crop = image[:, r * sh:(r + size) * sh, c * sw:(c + size) * sw]
    if tuple(crop.shape[-2:]) != tuple(out):
        crop = F.interpolate(crop[None].float(), size=tuple(out), mode="bilinear", align_corners=False)[0]
    return crop
