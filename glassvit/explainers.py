"""The explainer registry: every way of explaining a zoo model, behind one call shape.

    explainer(model, images (B,C,H,W), target (B,) | None, **kwargs) -> Explanation

"native" is the head's own explanation; post-hoc methods (R-Cut, attention rollout, Grad-CAM, ...) register here
from the module that defines them, so any zoo model can be explained by any of them through `model.explain(x,
method=...)`, and evaluation treats them all alike.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import unknown

Explainer = Callable[..., "Explanation"]  # noqa: F821 - documented above
EXPLAINERS: dict[str, Explainer] = {}


def register_explainer(name: str) -> Callable[[Explainer], Explainer]:
    """Decorator: make `fn(model, x, target, **kwargs) -> Explanation` available as `model.explain(x, method=name)`."""

    def deco(fn: Explainer) -> Explainer:
        EXPLAINERS[name] = fn
        return fn

    return deco


def get_explainer(name: str) -> Explainer:
    if name not in EXPLAINERS:
        raise unknown("explainer", name, ["native", *EXPLAINERS])
    return EXPLAINERS[name]
