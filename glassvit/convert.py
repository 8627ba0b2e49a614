"""Official checkpoints -> glassvit state dicts, one function per official format.

Official files are PyTorch pickles; they are read with `torch.load(weights_only=True)`, which restores tensors and
plain containers only and never runs code from the file. Each converter returns a state dict for `GlassViT` (keys
"backbone.model.*" and "head.*") that `glassvit.serialization.load_state_strict` loads without leftovers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import GlassViTError


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official .pth/.ckpt file (weights_only), unwrapped from a "state_dict" or "model" entry."""
    path = Path(path)
    if not path.is_file():
        raise GlassViTError(f"no checkpoint at {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise GlassViTError(f"cannot read {path} as a weights-only PyTorch checkpoint: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise GlassViTError(f"{path} holds no state dict of tensors")
    return dict(obj)


# Official ConceptTransformerVIT parameter prefixes (with the reference's spelling, "tranformer") -> our branches.
_CT_BRANCHES = {
    "concepts": ("global", "concept_tranformer."),
    "spatial_concepts": ("spatial", "spatial_concept_tranformer."),
    # The reference's forward runs the unsupervised concepts through the *global* cross-attention
    # (self.concept_tranformer), so those are the weights its outputs depend on; its unsup_concept_tranformer
    # is never called and is dropped.
    "unsup_concepts": ("unsup", "concept_tranformer."),
}
_CT_UNUSED = ("unsup_concept_tranformer.",)


def concept_transformer_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, int]]:
    """An official Concept Transformer state dict -> (glassvit state dict, concept counts for the head).

    Accepts IBM/concept_transformer's ConceptTransformerVIT alone, its CVIT wrapper ("classifier.*" head,
    "feature_extractor.*" timm ViT), or the Lightning CTCModel checkpoint around it ("model.*"). Backbone keys map
    to "backbone.model.*", head keys to "head.branches.{global,spatial,unsup}.*". The counts dict
    (num_concepts, num_spatial_concepts, num_unsup_concepts) goes to the head; the number of attention heads is not
    stored in the weights and must be the one the checkpoint was trained with (12 in the reference's CUB models):

        state, counts = concept_transformer_state_dict(read_official_checkpoint("cub.ckpt"))
        model = zoo.load("ct-b16", num_classes=200, **counts, num_heads=12)
        load_state_strict(model, state, "cub.ckpt")
    """
    state = {k.removeprefix("model."): v for k, v in state.items()}
    head, backbone, others = dict(state), {}, set()
    if any(k.startswith("classifier.") for k in state):
        head = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
        for k, v in state.items():
            if k.startswith("feature_extractor.") and not k.startswith("feature_extractor.head."):
                backbone[k.removeprefix("feature_extractor.")] = v
            elif not k.startswith(("classifier.", "feature_extractor.head.")):
                others.add(k)
    out = {f"backbone.model.{k}": v for k, v in backbone.items()}
    counts, used = {}, set()
    for param, (branch, module) in _CT_BRANCHES.items():
        if param not in head:
            raise GlassViTError(f"not a Concept Transformer state dict: {param!r} is missing")
        concepts = head[param]
        used.add(param)
        counts[f"num_{'' if branch == 'global' else branch + '_'}concepts"] = concepts.shape[-2]
        if concepts.shape[-2] == 0:
            continue
        out[f"head.branches.{branch}.concepts"] = concepts.reshape(concepts.shape[-2:])
        for name in ("q.weight", "kv.weight", "proj.weight", "proj.bias"):
            if module + name not in head:
                raise GlassViTError(f"not a Concept Transformer state dict: {module + name!r} is missing")
            out[f"head.branches.{branch}.{name}"] = head[module + name]
            used.add(module + name)
    leftover = sorted(others | {k for k in head if k not in used and not k.startswith(_CT_UNUSED)})
    if leftover:
        raise GlassViTError(f"unexpected keys in the Concept Transformer state dict: {leftover[:8]}")
    return out, counts


# Official ViT-NeT GCB / leaf parameter names -> ours (StackedRefinement, StackedLeaves rows).
_VITNET_GCB = {"cm.weight": "pool_weight", "cm.bias": "pool_bias", "wv1.weight": "fc1_weight", "wv1.bias": "fc1_bias",
               "norm.weight": "norm1_weight", "norm.bias": "norm1_bias", "wv2.weight": "fc2_weight",
               "wv2.bias": "fc2_bias", "ffn_norm.weight": "norm2_weight", "ffn_norm.bias": "norm2_bias"}
_VITNET_LEAF = {"pred.weight": "fc_weight", "pred.bias": "fc_bias", "norm_o.weight": "norm_weight",
                "norm_o.bias": "norm_bias"}


def vit_net_state_dict(state: Mapping[str, Tensor], out_map: Mapping[int | str, int], model: Any) -> dict[str, Tensor]:
    """An official ViT-NeT state dict (jumpsnack/ViT-NeT) -> a state dict for `model`, a GlassViT with the
    `neural_tree` head built for the checkpoint (same depth, proto_size, classes; the official Swin-B backbone is
    timm's `swin_base_patch4_window7_224` at img_size=448, window_size=14, as in `vit-net-swin-b`).

    out_map: the official tree's prototype assignment, {node index: row of tree.attrib_pvec}, as the official
    `model.tree._out_map` holds it (node indices count every node, leaves included, in pre-order). The official code
    builds this dict by iterating a Python set of modules, so it differs from process to process and is not stored
    in the checkpoint: save it in the training process (e.g. json.dump(model.tree._out_map, f)) to reload faithfully.
    Our prototypes are in pre-order, fixed.

    Keys: "tree.*" -> "head.*"; "patch_embedding.head.*" (the Swin classifier whose logits every leaf adds) ->
    "head.classifier.*"; the other "patch_embedding.*" keys (the Swin backbone, original Microsoft layout) ->
    "backbone.model.*" through timm's own Swin checkpoint filter. Head buffers the official format has no notion of
    (pruning, projection sources) are taken from `model` as built. For outputs identical to the official code,
    build the head with reference_routing=True (its unclamped routing); our default bounded routing differs.

        state = vit_net_state_dict(read_official_checkpoint("cub.pth"), json.load(open("out_map.json")), model)
        load_state_strict(model, state, "cub.pth")
    """
    from .heads.neural_tree import NeuralTreeHead, preorder

    head = getattr(model, "head", None)
    if not isinstance(head, NeuralTreeHead):
        raise GlassViTError("vit_net_state_dict needs a GlassViT whose head is 'neural_tree'")
    protos = state.get("tree.attrib_pvec")
    if protos is None:
        raise GlassViTError("not a ViT-NeT state dict: 'tree.attrib_pvec' is missing")
    k, dim, size = protos.shape[0], protos.shape[1], protos.shape[-1]
    depth = (k + 1).bit_length() - 1
    if 2 ** depth - 1 != k or (head.depth, head.proto_size, head.proto_dim) != (depth, size, dim):
        raise GlassViTError(f"the checkpoint holds {k} prototypes of dim {dim}, {size}x{size} (depth {depth}); build "
                            f"the model with depth={depth}, proto_size={size}, proto_dim={dim}")
    if head.static_leaves or not head.refine:
        raise GlassViTError("ViT-NeT checkpoints need leaves='tokens' and refine=True")
    order = preorder(depth)
    internal = [h for h in order if h < k]
    official_index = {h: i for i, h in enumerate(order)}
    rows = {int(node): int(row) for node, row in out_map.items()}
    if sorted(rows) != sorted(official_index[h] for h in internal) or sorted(rows.values()) != list(range(k)):
        raise GlassViTError(f"out_map must map the {k} internal node indices {sorted(official_index[h] for h in internal)} "
                            f"one-to-one onto prototype rows 0..{k - 1}, got {dict(sorted(rows.items()))}")

    def path(h: int) -> str:
        sides = []
        while h > 0:
            parent = (h - 1) // 2
            sides.append("l" if h == 2 * parent + 1 else "r")
            h = parent
        return "tree._root" + "".join(f".{s}" for s in reversed(sides))

    def take(key: str) -> Tensor:
        if key not in state:
            raise GlassViTError(f"not a ViT-NeT state dict of depth {depth}: {key!r} is missing")
        used.add(key)
        return state[key]

    used = {"tree.attrib_pvec"}
    out = {k_: v.clone() for k_, v in model.state_dict().items() if k_.startswith("head.")}
    out["head.add_on.weight"] = take("tree.add_on.0.weight")
    out["head.prototypes"] = torch.stack([protos[rows[official_index[h]]] for h in internal])
    for name in ("weight", "bias"):
        out[f"head.classifier.{name}"] = take(f"patch_embedding.head.{name}")
    for theirs, ours in _VITNET_GCB.items():
        per_node = []
        for h in range(1, 2 * k + 1):
            parent = (h - 1) // 2
            side = "l" if h == 2 * parent + 1 else "r"
            per_node.append(take(f"{path(parent)}.gcb_{side}.{theirs}").reshape(out[f"head.refinement.{ours}"].shape[1:]))
        out[f"head.refinement.{ours}"] = torch.stack(per_node)
    for theirs, ours in _VITNET_LEAF.items():
        out[f"head.leaves.{ours}"] = torch.stack([take(f"{path(h)}.{theirs}") for h in range(k, 2 * k + 1)])
    backbone = {key.removeprefix("patch_embedding."): v for key, v in state.items()
                if key.startswith("patch_embedding.") and key not in used}
    leftover = sorted(key for key in state if key not in used and not key.startswith("patch_embedding."))
    if leftover:
        raise GlassViTError(f"unexpected keys in the ViT-NeT state dict: {leftover[:8]}")
    if backbone:
        from timm.models.swin_transformer import checkpoint_filter_fn

        if not hasattr(model.backbone.model, "layers"):
            raise GlassViTError(f"the checkpoint's backbone is a Swin Transformer; {model.config.backbone!r} is not")
        out.update({f"backbone.model.{key}": v for key, v in checkpoint_filter_fn(backbone, model.backbone.model).items()})
    return out
