"""Backbone adapter (timm -> Tokens) and the classifier that joins backbone and head."""

from .backbone import Backbone
from .classifier import GlassViT, ModelConfig

__all__ = ["Backbone", "GlassViT", "ModelConfig"]
