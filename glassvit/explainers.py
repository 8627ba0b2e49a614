"""The explainer registry: every way of explaining a zoo model, behind one call shape.

    explainer(model, images (B,C,H,W), target (B,) | None, **kwargs) -> Explanation

"native" is the head's own explanation; post-hoc methods (R-Cut, attention rollout, Grad-CAM, ...) register here
from the module that defines them, so any zoo model can be explained by any of them through `model.explain(x,
method=...)`, and evaluation treats them all alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .errors import unknown

Explainer = Callable[..., "Explanation"]  # noqa: F821 - documented above
EXPLAINERS: dict[str, Explainer] = {}

# modules that register built-in explainers; imported on first lookup so `model.explain(x, method="rollout")`
# works without importing them, and importing glassvit stays light
BUILTIN_MODULES = ("glassvit.evaluation.baselines",)


def register_explainer(name: str) -> Callable[[Explainer], Explainer]:
    """Decorator: make `fn(model, x, target, **kwargs) -> Explanation` available as `model.explain(x, method=name)`."""

    def deco(fn: Explainer) -> Explainer:
        EXPLAINERS[name] = fn
        return fn

    return deco


def available_explainers() -> list[str]:
    """Every registered explainer name ("native" first), the built-in post-hoc methods included."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return ["native", *EXPLAINERS]


def get_explainer(name: str) -> Explainer:
    if name not in EXPLAINERS:
        available = available_explainers()
        if name not in EXPLAINERS:
            raise unknown("explainer", name, available)
    return EXPLAINERS[name]
