"""The model zoo: named specs of backbone + head, and the one `load` that builds any of them.

    zoo.list_models("vit-net*")                      -> names
    zoo.load("vit-net-b16", num_classes=200)         -> GlassViT, random head (backbone pretrained with pretrained=True)
    zoo.load("runs/birds")                           -> GlassViT from a save_pretrained / training run directory
    zoo.load("hf-hub:me/vit-net-b16-birds@v1")       -> GlassViT from the Hugging Face Hub, pinned to a revision

Overrides change a spec before building: `img_size`, `backbone`, `backbone_kwargs` (merged), `head_kwargs` (merged),
`explainer`, `explainer_kwargs`, `label_names`, and any argument of the spec's head by name (`depth=6`).
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import serialization
from .errors import GlassViTError, unknown
from .heads import head_arguments
from .models.classifier import GlassViT, ModelConfig

BUNDLED_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """A named zoo entry.

    weights: where pretrained weights for the whole model come from when `pretrained=True`: None (only the
    backbone, through timm), "hf-hub:org/repo[@rev]", or "bundled:NAME" (a directory shipped in glassvit/weights).
    """

    name: str
    backbone: str
    head: str
    num_classes: int
    description: str
    paper: str
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    explainer: str = "native"
    explainer_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None

    def config(self) -> ModelConfig:
        return ModelConfig(
            name=self.name,
            backbone=self.backbone,
            head=self.head,
            num_classes=self.num_classes,
            backbone_kwargs=copy.deepcopy(self.backbone_kwargs),
            head_kwargs=copy.deepcopy(self.head_kwargs),
            explainer=self.explainer,
            explainer_kwargs=copy.deepcopy(self.explainer_kwargs),
        )


REGISTRY: dict[str, ModelSpec] = {}
_WARNED_UNTRAINED: set[str] = set()


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the zoo (names are unique)."""
    if spec.name in REGISTRY:
        raise GlassViTError(f"zoo name {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in REGISTRY if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise unknown("zoo model", name, REGISTRY)
    return REGISTRY[name]


SPEC_OVERRIDES = ("img_size", "backbone", "backbone_kwargs", "head_kwargs", "explainer", "explainer_kwargs",
                  "label_names")


def apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """A copy of `config` with `overrides` applied (see the module docstring); unknown keys fail with close matches."""
    config = copy.deepcopy(config)
    head_args = head_arguments(config.head)
    for key, value in overrides.items():
        if key == "img_size":
            config.backbone_kwargs["img_size"] = value
        elif key in ("backbone_kwargs", "head_kwargs", "explainer_kwargs"):
            getattr(config, key).update(value)
        elif key in ("backbone", "explainer", "label_names"):
            setattr(config, key, value)
        elif key in head_args:
            config.head_kwargs[key] = value
        else:
            raise unknown(f"override for {config.name!r}", key, [*SPEC_OVERRIDES, *sorted(head_args)])
    return config


def load(name: str | Path, *, pretrained: bool = False, num_classes: int | None = None,
         pretrained_file: str | None = None, **overrides: Any) -> GlassViT:
    """Build a zoo model by name, or load one from a directory or the Hub.

    Args:
        name: a registered name, a directory written by `save_pretrained` (or "local-dir:PATH"), or
            "hf-hub:org/repo[@revision]".
        pretrained: for registered names, load published weights (the spec's `weights`), else the backbone's
            pretrained weights through timm (the head stays untrained, with a warning).
        num_classes: the number of classes; for a saved model, a different number keeps the backbone and
            re-initialises the head (fine-tuning on new classes).
        pretrained_file: a local timm weights file for the backbone (offline use of timm weights), or a saved
            glassvit model directory whose backbone to start from (e.g. a new head on a fine-tuned backbone).
        **overrides: see the module docstring. For hf-hub names, `revision`, `cache_dir`, `force_download`
            and `token` are passed to the download.
    """
    name = str(name)
    if name.startswith("hf-hub:"):
        from .hub import load_from_hub

        return load_from_hub(name[len("hf-hub:"):], num_classes=num_classes, **overrides)
    if name.startswith("local-dir:") or Path(name).is_dir():
        return load_dir(name.removeprefix("local-dir:"), num_classes=num_classes, **overrides)
    spec = get_spec(name)
    if pretrained and spec.weights is not None:
        if spec.explainer != "native":
            overrides = {"explainer": spec.explainer, **overrides}
        model = _load_published(spec.weights, num_classes=num_classes, **overrides)
        model.config.name = spec.name
        return model
    config = apply_overrides(spec.config(), overrides)
    if num_classes is not None:
        config.num_classes = num_classes
    if pretrained and spec.name not in _WARNED_UNTRAINED:
        _WARNED_UNTRAINED.add(spec.name)
        warnings.warn(f"{spec.name!r} has no published head weights: the backbone is pretrained, the "
                      f"{spec.head!r} head is untrained; fine-tune it (glassvit train)", stacklevel=2)
    return GlassViT(config, pretrained_backbone=pretrained, pretrained_file=pretrained_file)


def _load_published(source: str, **kwargs: Any) -> GlassViT:
    if source.startswith("bundled:"):
        return load_dir(BUNDLED_DIR / source[len("bundled:"):], **kwargs)
    return load(source, **kwargs)


def load_dir(directory: str | Path, *, num_classes: int | None = None, **overrides: Any) -> GlassViT:
    """Rebuild a model from config.json + model.safetensors with identical outputs.

    A different `num_classes` keeps the backbone weights and re-initialises the head.
    """
    directory = Path(directory)
    raw = serialization.read_config(directory)
    config = apply_overrides(ModelConfig.from_dict(raw["glassvit"], f"{directory}/config.json"), overrides)
    state = serialization.read_weights(directory / serialization.WEIGHTS_NAME)
    new_head = num_classes is not None and num_classes != config.num_classes
    if new_head:
        config = replace(config, num_classes=num_classes, label_names=None)
    model = GlassViT(config)
    source = str(directory / serialization.WEIGHTS_NAME)
    if new_head:
        backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        serialization.load_state_strict(model.backbone, backbone_state, source)
    else:
        serialization.load_state_strict(model, state, source)
    return model


def _register_builtin() -> None:
    """The baselines; heads add their named entries in glassvit/zoo_entries.py."""
    from . import zoo_entries  # noqa: F401 - registers on import


_register_builtin()
