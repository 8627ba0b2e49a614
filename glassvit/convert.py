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
