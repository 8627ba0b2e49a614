"""The head contract and the head registry.

A head turns `Tokens` into a `HeadOutput` (forward), names its loss terms (`loss`), and explains its own output
(`explain`). It knows nothing of training or evaluation. Adding a head is one file that subclasses `Head` and is
decorated with `@register_head("name")`, plus its import in `glassvit/heads/__init__.py`.

Constructor convention: `Head(info: BackboneInfo, num_classes: int, **kwargs)`, where every kwarg is a plain
JSON value, so that `config.json` stores the kwargs and rebuilds the same head.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GlassViTError, unknown
from ..types import BackboneInfo, Explanation, HeadOutput, TokenRequest, Tokens

if TYPE_CHECKING:
    from ..models.backbone import Backbone

HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: make a head buildable by name from a zoo spec or a config.json."""

    def deco(cls: type[Head]) -> type[Head]:
        cls.head_name = name
        HEADS[name] = cls
        return cls

    return deco


def head_arguments(name: str) -> set[str]:
    """Constructor keyword arguments a registered head accepts (besides info and num_classes)."""
    if name not in HEADS:
        raise unknown("head", name, HEADS)
    params = inspect.signature(HEADS[name].__init__).parameters
    return {p for p in params if p not in ("self", "info", "num_classes")}


def build_head(name: str, info: BackboneInfo, num_classes: int, **kwargs: Any) -> Head:
    """Build a registered head; unknown heads and unknown kwargs fail with close matches."""
    allowed = head_arguments(name)
    for key in kwargs:
        if key not in allowed:
            raise unknown(f"argument for head {name!r}", key, allowed)
    return HEADS[name](info, num_classes, **kwargs)


class Head(nn.Module):
    """Base class: classification loss, target handling, and the interface every head implements.

    Subclasses implement `forward(tokens) -> HeadOutput` and `explain(output, target) -> Explanation`, and may
    override `requests(explain)` to ask the backbone for attention or hidden states, and `loss` to add terms.
    """

    head_name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, info: BackboneInfo, num_classes: int, multi_label: bool = False):
        super().__init__()
        if num_classes < 1:
            raise GlassViTError(f"num_classes must be >= 1, got {num_classes}")
        self.info = info
        self.num_classes = num_classes
        self.multi_label = multi_label

    def requests(self, explain: bool) -> TokenRequest:
        """What the head needs from the backbone; `explain` is True when the forward pass feeds `explain`."""
        return TokenRequest()

    def bind(self, backbone: Backbone) -> None:
        """Called once by GlassViT right after the head is built, with the backbone whose tokens it will read.

        A head that runs the backbone's last blocks itself takes them here (`backbone.split_off_blocks`), so that
        their pretrained weights carry over and no block runs twice. Default: nothing.
        """

    def forward(self, tokens: Tokens) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def explain(self, output: HeadOutput, target: Tensor) -> Explanation:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, output: HeadOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """{"classification": ..., "loss": total}. Subclasses add their terms and keep "loss" the sum."""
        ce = self.classification_loss(output.logits, batch)
        return {"classification": ce, "loss": ce}

    def classification_loss(self, logits: Tensor, batch: dict[str, Any]) -> Tensor:
        """Cross-entropy for class indices (B,) or soft targets (B,C); BCE-with-logits when multi-label."""
        if "label" not in batch:
            raise GlassViTError("the batch has no 'label' entry; every head's loss needs labels")
        y = batch["label"].to(logits.device)
        if self.multi_label:
            if y.shape != logits.shape:
                raise GlassViTError(f"multi-label targets must be (B,{self.num_classes}) multi-hot, got {tuple(y.shape)}")
            return F.binary_cross_entropy_with_logits(logits, y.float())
        if y.ndim == 2:
            if y.shape != logits.shape:
                raise GlassViTError(f"soft targets must be (B,{self.num_classes}), got {tuple(y.shape)}")
            return torch.sum(-y * F.log_softmax(logits, -1), -1).mean()
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise GlassViTError(f"labels must lie in [0, {self.num_classes}), got range [{int(y.min())}, {int(y.max())}]")
        return F.cross_entropy(logits, y.long())

    def after_optimizer_step(self, output: HeadOutput, batch: dict[str, Any]) -> None:
        """Called by the trainer after every optimiser step with that step's output and batch.

        For updates that are not gradient steps (ProtoTree's derivative-free leaf distributions). Default: nothing.
        """

    def after_training(self, model: nn.Module, loader: Any) -> None:
        """Called by the trainer once after the last epoch with the model and a training-data loader.

        For end-of-training steps such as prototype projection onto training patches. Default: nothing.
        """

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, multi_label={self.multi_label}"
