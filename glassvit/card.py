"""Model cards: the README.md written beside config.json and model.safetensors.

YAML front matter as the Hugging Face Hub reads it (library_name, tags, pipeline_tag, license, base_model, datasets),
then what the head is, its paper, a usage snippet, the label names and evaluation results when a report exists.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _front_matter(meta: dict[str, Any]) -> str:
    lines = ["---"]
    for key, value in meta.items():
        if value in (None, [], ""):
            continue
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {json.dumps(v)}" for v in value)
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    lines.append("---")
    return "\n".join(lines)


def model_card(model, results: dict[str, Any] | None = None, repo_id: str | None = None,
               datasets: list[str] | None = None, license: str = "apache-2.0") -> str:
    """Markdown model card for a GlassViT `model`; `results` is a flat {metric: value} table when known."""
    cfg = model.config
    head = type(model.head)
    base = model.backbone.model.pretrained_cfg.get("hf_hub_id") if cfg.backbone_kwargs == {} else None
    meta = {
        "library_name": "glassvit",
        "tags": ["glassvit", "image-classification", "interpretability", f"head:{cfg.head}", "timm"],
        "pipeline_tag": "image-classification",
        "license": license,
        "base_model": base,
        "datasets": datasets or [],
    }
    summary = (sys.modules[head.__module__].__doc__ or head.__doc__ or cfg.head).strip().split("\n\n")[0]
    load_name = repo_id and f"hf-hub:{repo_id}" or "PATH_TO_THIS_DIRECTORY"
    parts = [
        _front_matter(meta),
        f"# {cfg.name}",
        f"A glassvit model: timm backbone `{cfg.backbone}` with the `{cfg.head}` head, {cfg.num_classes} classes.",
        "## The head",
        summary,
        f"Paper: {head.paper}" if head.paper else "",
        "## Usage",
        "```python\nfrom glassvit import zoo\n"
        f'model = zoo.load("{load_name}")\n'
        "logits = model(images)              # (B, C)\n"
        "explanation = model.explain(images) # saliency, components, contributions\n```",
    ]
    if cfg.label_names:
        parts += ["## Labels", ", ".join(f"`{n}`" for n in cfg.label_names)]
    if results:
        rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results.items())
        parts += ["## Evaluation", "| metric | value |\n|---|---|\n" + rows]
    return "\n\n".join(p for p in parts if p) + "\n"
