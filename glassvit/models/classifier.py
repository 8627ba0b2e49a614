"""GlassViT: a timm backbone joined to an interpretable head, with the contract every zoo model keeps.

    model(x) -> logits (B,C)                         plain nn.Module forward
    model.forward_detailed(x) -> HeadOutput          logits + what losses and explanations need
    model.loss(output, batch) -> {"loss": ..., ...}  the head's named loss terms
    model.explain(x, target=None) -> Explanation     saliency (B,H,W) at input resolution, components, ...
    model.save_pretrained(dir)                       config.json + model.safetensors + README.md
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import serialization
from ..errors import GlassViTError
from ..explainers import get_explainer
from ..heads import build_head
from ..maps import resolve_target
from ..types import Explanation, HeadOutput
from .backbone import Backbone


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored as the "glassvit" section of config.json.

    name: zoo name (or the user's), backbone/backbone_kwargs: timm model and its arguments, head/head_kwargs:
    registered head and its arguments, explainer/explainer_kwargs: the default explanation method ("native" = the
    head's own), label_names: one per class, when known. backbone_weights: where the backbone's initial weights came
    from ("hf-hub:ORG/NAME" for timm's pretrained weights on the Hub, "file:NAME" for a local file, "url:URL"), None
    when it started from random weights; model cards name it as the base model only when it is a Hub id.
    """

    name: str
    backbone: str
    head: str
    num_classes: int
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    explainer: str = "native"
    explainer_kwargs: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] | None = None
    backbone_weights: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> ModelConfig:
        fields = set(cls.__dataclass_fields__)
        unknown_keys = set(d) - fields
        missing = {"name", "backbone", "head", "num_classes"} - set(d)
        if unknown_keys or missing:
            raise GlassViTError(f"{where}: unknown keys {sorted(unknown_keys)}, missing keys {sorted(missing)}")
        return cls(**copy.deepcopy(d))


class GlassViT(nn.Module):
    """A zoo model. Build it through `glassvit.zoo.load`; construct directly from a `ModelConfig` if you must.

    Args:
        config: what to build.
        pretrained_backbone: load timm's pretrained backbone weights.
        pretrained_file: a local timm weights file for the backbone (implies pretrained_backbone).
    """

    def __init__(self, config: ModelConfig, pretrained_backbone: bool = False, pretrained_file: str | None = None):
        super().__init__()
        self.config = config
        if config.label_names is not None and len(config.label_names) != config.num_classes:
            raise GlassViTError(f"{len(config.label_names)} label names for {config.num_classes} classes")
        self.backbone = Backbone(config.backbone, pretrained_backbone, pretrained_file, **config.backbone_kwargs)
        if pretrained_backbone or pretrained_file is not None:
            config.backbone_weights = pretrained_source(self.backbone.model.pretrained_cfg, pretrained_file)
        self.head = build_head(config.head, self.backbone.info, config.num_classes, **config.head_kwargs)
        self.head.bind(self.backbone)
        if config.explainer != "native":
            get_explainer(config.explainer)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def data_config(self) -> dict[str, Any]:
        """timm data config (input_size, mean, std, interpolation, crop) for building transforms."""
        return self.backbone.data_config

    def forward(self, x: Tensor) -> Tensor:
        """images (B,C,H,W) -> logits (B,num_classes)."""
        return self.forward_detailed(x).logits

    def forward_detailed(self, x: Tensor, explain: bool = False) -> HeadOutput:
        """images (B,C,H,W) -> HeadOutput; `explain` asks the backbone for what the head's explanation needs."""
        return self.head(self.backbone(x, self.head.requests(explain)))

    def loss(self, output: HeadOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named loss terms of the head; "loss" is the total to minimise."""
        return self.head.loss(output, batch)

    def explain(self, x: Tensor, target: Tensor | int | None = None, method: str | None = None,
                **kwargs: Any) -> Explanation:
        """Explain the model's decision for `target` (default: the predicted class) with `method`.

        `method` defaults to this model's configured explainer ("native": the head's own explanation). The model is
        explained in eval mode (dropout off) and restored to its previous mode afterwards.
        """
        method = method or self.config.explainer
        with evaluating(self):
            if method == "native":
                with torch.no_grad():
                    output = self.forward_detailed(x, explain=True)
                    explanation = self.head.explain(output, resolve_target(output.logits, target))
            else:
                options = {**self.config.explainer_kwargs, **kwargs} if method == self.config.explainer else kwargs
                explanation = get_explainer(method)(self, x, target, **options)
        explanation.method = method
        return explanation

    def save_pretrained(self, directory: str | Path, card: str | None = None) -> Path:
        """Write config.json, model.safetensors and a README.md model card to `directory`; returns it.

        An existing README.md written by a person is kept unless `card` is given; one glassvit wrote is refreshed
        (see glassvit.card for what the default card holds).
        """
        from ..card import is_generated, model_card

        directory = Path(directory)
        serialization.write_json(directory / serialization.CONFIG_NAME, self.to_config_dict())
        serialization.write_weights(directory / serialization.WEIGHTS_NAME, self.state_dict(), {"format": "pt"})
        card_path = directory / serialization.CARD_NAME
        if card is not None or not card_path.exists() or is_generated(card_path.read_text()):
            serialization.atomic_write(card_path, lambda p: p.write_text(card or model_card(self)))
        return directory

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                    commit_message: str | None = None, token: str | None = None, **card_options: Any):
        """Upload config.json, model.safetensors and a README.md model card to the Hub repo `repo_id`.

        See `glassvit.hub.push_to_hub` for the card options (overwrite_card, results, datasets, license) and
        what is returned.
        """
        from ..hub import push_to_hub

        return push_to_hub(self, repo_id, private=private, revision=revision, commit_message=commit_message,
                           token=token, **card_options)

    def to_config_dict(self) -> dict[str, Any]:
        """config.json content: timm-style top-level fields plus the "glassvit" section that rebuilds the model."""
        dc = self.data_config
        return {
            "format_version": serialization.FORMAT_VERSION,
            "library_name": "glassvit",
            "architecture": self.config.backbone,
            "num_classes": self.config.num_classes,
            "num_features": self.backbone.info.embed_dim,
            "label_names": self.config.label_names,
            "pretrained_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in dc.items()},
            "glassvit": asdict(self.config),
        }


def pretrained_source(pretrained_cfg: dict[str, Any], pretrained_file: str | None) -> str | None:
    """Where timm took pretrained weights from, in timm's order of preference: a local file, the Hub, a URL."""
    if pretrained_file is not None:
        return f"file:{Path(pretrained_file).name}"
    if pretrained_cfg.get("hf_hub_id"):
        return f"hf-hub:{pretrained_cfg['hf_hub_id']}"
    return f"url:{pretrained_cfg['url']}" if pretrained_cfg.get("url") else None


@contextmanager
def evaluating(model: nn.Module):
    """Temporarily put `model` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
