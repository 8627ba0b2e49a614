"""glassvit: a model zoo of inherently interpretable Vision Transformers."""

from . import zoo
from .errors import GlassViTError
from .explainers import EXPLAINERS, register_explainer
from .heads import HEADS, Head, register_head
from .models import Backbone, GlassViT, ModelConfig
from .types import BackboneInfo, Explanation, HeadOutput, TokenRequest, Tokens

__version__ = "0.1.0"

__all__ = [
    "EXPLAINERS", "HEADS", "Backbone", "BackboneInfo", "Explanation", "GlassViT", "GlassViTError", "Head",
    "HeadOutput", "ModelConfig", "TokenRequest", "Tokens", "register_explainer", "register_head", "zoo",
]
