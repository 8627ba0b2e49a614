"""Model cards: the README.md written beside config.json and model.safetensors, and pushed with them to the Hub.

YAML front matter as the Hugging Face Hub reads it: library_name glassvit, tags (glassvit, timm, the head),
pipeline_tag image-classification, license, base_model and datasets. base_model is the timm backbone's Hub id only
when the backbone really started from those pretrained weights (`ModelConfig.backbone_weights` records it when the
model is built); a backbone trained from scratch or from a local file names no base model. The body says what the
head is, its paper, how to load and explain the model, the label names, and evaluation results when a report exists.

A card glassvit writes starts its body with `GENERATED_MARKER`. Saving or pushing again refreshes such a card; a
card without the marker (written by a person, or edited with the marker line deleted) is kept unless replacing it
is asked for explicitly.
"""

from __future__ import annotations

import json
import sys
from typing import Any

GENERATED_MARKER = ("<!-- Written by glassvit, which refreshes it on every save or push. Delete this line to keep "
                    "your edits. -->")
DEFAULT_LICENSE = "apache-2.0"


def is_generated(card: str) -> bool:
    """True for a card glassvit wrote and may refresh; False for a card a person wrote or took over."""
    return GENERATED_MARKER in card


def base_model(model) -> str | None:
    """The Hub id of the pretrained weights the backbone started from, None when there is no such Hub model."""
    source = model.config.backbone_weights or ""
    return source[len("hf-hub:"):].split("@")[0] if source.startswith("hf-hub:") else None


def flatten_results(report: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested metrics dict -> {"a/b/metric": number or string}; lists and nulls are left out."""
    flat: dict[str, Any] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_results(value, f"{name}/"))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def _front_matter(meta: dict[str, Any]) -> str:
    """YAML front matter; every value is written as JSON, which YAML reads unchanged."""
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


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {_format(v)} |" for k, v in flatten_results(metrics).items())
    return "| metric | value |\n|---|---|\n" + rows if rows else ""


def evaluation_section(results: dict[str, Any]) -> list[str]:
    """Markdown blocks for the card: a `glassvit eval` report (eval.json: data, accuracy, explanations per
    explainer) as its data line, accuracy table and explanation table; any other dict as one table of metrics."""
    if not isinstance(results.get("explanations"), dict):
        table = _metrics_table(results)
        return [table] if table else []
    from .evaluation.runner import explanation_table

    blocks = [f"On `{results['data']}` ({results['num_images']} images)." if "data" in results else "",
              _metrics_table(results.get("accuracy") or {}),
              explanation_table(results["explanations"]) if results["explanations"] else ""]
    return [b for b in blocks if b]


def model_card(model, results: dict[str, Any] | None = None, repo_id: str | None = None,
               datasets: list[str] | None = None, license: str | None = None) -> str:
    """Markdown model card for a GlassViT `model`.

    Args:
        results: a `glassvit eval` report (the content of eval.json) or any {metric: value} dict (nested dicts
            are flattened to "a/b" names).
        repo_id: the Hub repo the card is for (the usage snippet loads "hf-hub:REPO_ID").
        datasets: Hub dataset ids (or names) the model was trained on.
        license: the weights' license; default: the pretrained backbone's license when it has one, else apache-2.0.
    """
    cfg = model.config
    head = type(model.head)
    base = base_model(model)
    pretrained_license = model.backbone.model.pretrained_cfg.get("license") if cfg.backbone_weights else None
    meta = {
        "library_name": "glassvit",
        "tags": ["glassvit", "timm", "image-classification", "interpretability", cfg.head, f"head:{cfg.head}"],
        "pipeline_tag": "image-classification",
        "license": license or pretrained_license or DEFAULT_LICENSE,
        "base_model": base,
        "datasets": list(datasets or []),
    }
    summary = (sys.modules[head.__module__].__doc__ or head.__doc__ or cfg.head).strip().split("\n\n")[0]
    load_name = f"hf-hub:{repo_id}" if repo_id else "PATH_TO_THIS_DIRECTORY"
    if base:
        start = f"fine-tuned from the pretrained timm weights [`{base}`](https://huggingface.co/{base})"
    elif cfg.backbone_weights:
        start = f"initialised from `{cfg.backbone_weights}`"
    else:
        start = "starting from random weights (no pretrained base model)"
    kwargs = f" with `{json.dumps(cfg.backbone_kwargs)}`" if cfg.backbone_kwargs else ""
    parts = [
        _front_matter(meta),
        GENERATED_MARKER,
        f"# {repo_id.split('/')[-1] if repo_id else cfg.name}",
        f"An image classifier from glassvit, model `{cfg.name}`: the timm backbone `{cfg.backbone}` with the "
        f"`{cfg.head}` head, {cfg.num_classes} classes.",
        "## The head",
        summary,
        f"Paper: {head.paper}" if head.paper else "",
        "## The backbone",
        f"`{cfg.backbone}`{kwargs}, {start}.",
        "## Usage",
        "```python\nfrom glassvit import zoo\n\n"
        f'model = zoo.load("{load_name}").eval()\n'
        "logits = model(images)               # images (B, 3, H, W) normalised with model.data_config\n"
        "explanation = model.explain(images)  # saliency (B, H, W), components, contributions\n```",
        "## Files",
        "`config.json` has timm's fields (`architecture` = the timm backbone, `num_classes`, `pretrained_cfg` with "
        "input size, mean, std and interpolation) and a `glassvit` section that rebuilds the model; "
        "`model.safetensors` holds the weights (backbone under `backbone.model.`, head under `head.`).",
    ]
    if cfg.label_names:
        parts += ["## Labels", ", ".join(f"`{n}`" for n in cfg.label_names)]
    evaluation = evaluation_section(results or {})
    if evaluation:
        parts += ["## Evaluation", *evaluation]
    return "\n\n".join(p for p in parts if p) + "\n"
