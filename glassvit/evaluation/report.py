"""The DigitScenes report: every head family trained the same way, then scored for accuracy and explanations.

    python -m glassvit.evaluation.report --out digitscenes-report        (or: glassvit report --out ...)

1. A shared backbone, the small ViT of the bundled DigitScenes models (`backbone`, `backbone_kwargs`): the one in
   `backbone_from` (a saved glassvit model directory) when given, else the bundled `vit-digits` weights when the
   package ships them (`use_bundled`), else one trained here with a linear head on the training scenes for
   `pretrain_epochs`.
2. One zoo entry per family (the first plain-ViT entry of each head and default explainer: the linear black box,
   R-Cut, the Concept Transformer, eX-ViT, ViT-NeT, and any head registered later) is rebuilt on that backbone
   with a fresh head, and fine-tuned with glassvit.training.fit for the same `epochs`, batch size and learning rate.
   Heads receive the dataset's concept count and names where they take them. Families that differ only in their
   explainer (R-Cut explains the linear classifier) share one trained model.
3. Each is evaluated on the test split: accuracy, then deletion/insertion AUC, pointing game, mask IoU and relevance
   mass of its native explanation and of every post-hoc baseline, all explaining the labelled class.

Writes OUT/report.md (the table), OUT/report.json, OUT/backbone and OUT/models/NAME (zoo.load directories), and
OUT/figures/NAME_sceneI.png (native and post-hoc overlays, plus the head's own figures where it has them).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import serialization, zoo
from ..data import DigitScenes
from ..zoo_entries import DIGITS_BACKBONE, DIGITS_VIT
from ..heads import head_arguments
from ..models.classifier import GlassViT, ModelConfig, evaluating
from ..training import fit
from ..training.datasets import open_data
from .runner import EvalSettings, evaluate_model, explanation_table, json_safe

BASELINE_EXPLAINERS = ("attention", "rollout", "chefer", "gradcam", "ig")
REPORT_METRICS = ("accuracy", "concept_accuracy", "deletion", "insertion", "pointing", "iou", "relevance_mass")
BUNDLED_BACKBONE = "vit-digits"


@dataclass
class ReportSettings:
    """The shared budget and backbone (see the module docstring)."""

    task: str = "single"
    size: int = 32
    train_scenes: int = 2000
    test_scenes: int = 100
    pretrain_epochs: int = 15
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    backbone_lr: float = 5e-4
    seed: int = 0
    backbone: str = DIGITS_BACKBONE
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DIGITS_VIT))
    backbone_from: str | None = None
    use_bundled: bool = True
    explainers: tuple[str, ...] = ("native", *BASELINE_EXPLAINERS)
    step: float = 0.2
    ig_steps: int = 16
    figures: int = 2


def report_families() -> list[str]:
    """One zoo name per (head, default explainer): the first plain-ViT entry in registration order."""
    chosen: dict[tuple[str, str], str] = {}
    for name, spec in zoo.REGISTRY.items():
        if spec.backbone.startswith("vit_") and (spec.head, spec.explainer) not in chosen:
            chosen[(spec.head, spec.explainer)] = name
    return list(chosen.values())


def build_for_data(name: str, data, settings: ReportSettings, backbone_from: Path | None = None) -> GlassViT:
    """Zoo entry `name` on the shared backbone (weights from `backbone_from` when given), sized for DigitScenes
    `data`: classes, label type, and the concept count, names and attention heads where the head takes them."""
    offered = {
        "multi_label": data.multi_label,
        "num_concepts": data.num_concepts,
        "num_spatial_concepts": data.num_concepts,
        "concept_names": list(data.concept_names),
        "spatial_concept_names": list(data.concept_names),
        "num_heads": settings.backbone_kwargs["num_heads"],
    }
    args = head_arguments(zoo.get_spec(name).head)
    return zoo.load(name, num_classes=data.num_classes, backbone=settings.backbone,
                    backbone_kwargs=dict(settings.backbone_kwargs), head_kwargs={k: v for k, v in offered.items()
                                                                                 if k in args},
                    label_names=list(data.label_names),
                    pretrained_file=str(backbone_from) if backbone_from is not None else None)


def starting_backbone(settings: ReportSettings) -> Path | None:
    """`backbone_from`, else the bundled vit-digits directory when shipped and `use_bundled`, else None."""
    if settings.backbone_from:
        return Path(settings.backbone_from)
    bundled = zoo.BUNDLED_DIR / BUNDLED_BACKBONE
    if settings.use_bundled and (bundled / serialization.WEIGHTS_NAME).exists():
        return bundled
    return None


def pretrain_backbone(out: Path, settings: ReportSettings, data, progress: bool) -> Path:
    """Train the shared backbone with a linear head on DigitScenes; returns its model directory (OUT/backbone)."""
    torch.manual_seed(settings.seed)
    config = ModelConfig(name="digitscenes-backbone", backbone=settings.backbone, head="linear",
                         num_classes=data.num_classes, backbone_kwargs=dict(settings.backbone_kwargs),
                         head_kwargs={"multi_label": data.multi_label}, label_names=list(data.label_names))
    model = GlassViT(config)
    train = open_data(f"digitscenes:{settings.task}:{settings.size}", model, split="train",
                      num_scenes=settings.train_scenes)
    fit(model, train, epochs=settings.pretrain_epochs, batch_size=settings.batch_size, lr=settings.lr,
        warmup_epochs=1, seed=settings.seed, progress=progress, out_dir=out / "backbone")
    return out / "backbone"


def run_report(out: str | Path, settings: ReportSettings | None = None, families: list[str] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every family (see the module docstring); returns what report.json holds."""
    settings = settings or ReportSettings()
    out = Path(out)
    families = families or report_families()
    spec = f"digitscenes:{settings.task}:{settings.size}"
    rows: dict[str, dict[str, float]] = {}
    accuracy: dict[str, dict[str, Any]] = {"accuracy": {}, "concept acc.": {}}
    summary: dict[str, Any] = {"settings": asdict(settings), "models": {}}
    probe = DigitScenes("train", settings.task, size=settings.size, num_scenes=1)
    started = time.time()
    backbone = starting_backbone(settings)
    if backbone is not None:
        start = f"the backbone of `{backbone.name}`"
    else:
        backbone = pretrain_backbone(out, settings, probe, progress)
        start = f"a backbone trained here with a linear head for {settings.pretrain_epochs} epochs"
    summary["backbone"] = {"path": str(backbone), "seconds": time.time() - started}
    trained: dict[str, tuple[dict[str, torch.Tensor], float]] = {}  # head + kwargs -> weights, training seconds
    for name in families:
        torch.manual_seed(settings.seed)
        model = build_for_data(name, probe, settings, backbone)
        test = open_data(spec, model, split="test", num_scenes=settings.test_scenes)
        same = json.dumps([model.config.head, model.config.head_kwargs], sort_keys=True)
        if same in trained:  # the same classifier under another explainer (R-Cut explains the linear head)
            model.load_state_dict(trained[same][0])
            model.save_pretrained(out / "models" / name)
        else:
            started = time.time()
            train = open_data(spec, model, split="train", num_scenes=settings.train_scenes)
            model = fit(model, train, epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                        backbone_lr=settings.backbone_lr, warmup_epochs=1, seed=settings.seed, progress=progress,
                        out_dir=out / "models" / name).model
            trained[same] = (model.state_dict(), time.time() - started)
        evaluation = evaluate_model(
            model, test, explainers=settings.explainers, metrics=_metrics(test), progress=progress,
            settings=EvalSettings(step=settings.step, explainer_kwargs={"ig": {"steps": settings.ig_steps}}),
            data_name=spec)
        explained_by = f" + {model.config.explainer}" if model.config.explainer != "native" else ""
        label = f"{name} ({model.config.head}{explained_by})"
        for explainer, scores in evaluation.explanations.items():
            key = f"{label} / {explainer}"
            rows[key] = scores
            accuracy["accuracy"][key] = evaluation.accuracy.get("accuracy")
            accuracy["concept acc."][key] = evaluation.accuracy.get("concept_accuracy")
        summary["models"][name] = {**evaluation.to_dict(), "train_seconds": trained[same][1]}
        _figures(model, test, settings, out / "figures", name)
    if not any(v is not None for v in accuracy["concept acc."].values()):
        del accuracy["concept acc."]
    table = explanation_table(rows, first="model (head) / explainer", extra=accuracy)
    summary["table"] = table
    serialization.write_json(out / "report.json", json_safe(summary))
    serialization.atomic_write(out / "report.md", lambda p: p.write_text(_markdown(table, settings, start)))
    return summary


def _metrics(data) -> list[str]:
    return [m for m in REPORT_METRICS if m != "concept_accuracy" or getattr(data, "num_concepts", 0)]


def _markdown(table: str, s: ReportSettings, start: str) -> str:
    bb = s.backbone_kwargs
    return (f"DigitScenes `{s.task}` at {s.size} px, {s.train_scenes} training and {s.test_scenes} test scenes. "
            f"Every model: the same ViT (width {bb.get('embed_dim')}, depth {bb.get('depth')}, patch "
            f"{bb.get('patch_size')}) starting from {start}, then fine-tuned for {s.epochs} epochs (batch "
            f"{s.batch_size}, lr {s.lr:g} for the head and {s.backbone_lr:g} for the backbone, seed {s.seed}). "
            f"Every explainer explains the labelled class. Deletion (to zero) and insertion (from a blur) in steps "
            f"of {s.step:g} of the pixels, scored by the class probability; pointing game, mask IoU (maps "
            f"thresholded at half their range) and relevance mass against the digit's pixel mask.\n\n{table}\n")


def _figures(model, data, settings: ReportSettings, folder: Path, name: str) -> None:
    """Overlays of every explainer for the first test scenes, and the head's own figures."""
    from ..viz import head_figures, save_overlays

    figures = head_figures(model.config.head)
    with evaluating(model):
        for i in range(settings.figures):
            item = data[i]
            x, target = item["image"][None], item["label"].view(1)
            display = torch.from_numpy(data.render(i)[0])  # the scene before normalisation
            explained = {method: model.explain(x, target=target, method=None if method == "native" else method,
                                               **({"steps": settings.ig_steps} if method == "ig" else {}))
                         for method in settings.explainers}
            maps = {m if e.method == m else f"{m} ({e.method})": e.saliency[0] for m, e in explained.items()}
            label = model.config.label_names[int(target)] if model.config.label_names else int(target)
            save_overlays(display, maps, folder / f"{name}_scene{i}.png", title=f"{name}: {label}")
            if figures is not None:
                native = explained["native"] if "native" in explained else model.explain(x, target=target)
                figures(model, display[None], native, folder, f"{name}_scene{i}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glassvit.evaluation.report", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


OPTION_HELP = {
    "task": "DigitScenes task: single, evenodd or multi (multi needs multi-label heads; the tree has none)",
    "size": "scene size in pixels (the backbone's img_size follows it)",
    "train_scenes": "training scenes (backbone pretraining and every fine-tuning)",
    "test_scenes": "test scenes every model is evaluated on",
    "pretrain_epochs": "epochs of the shared backbone's training",
    "epochs": "fine-tuning epochs of every family",
    "batch_size": "batch size of all training",
    "lr": "peak learning rate of the backbone's training and of every head (1 warm-up epoch, cosine decay)",
    "backbone_lr": "peak learning rate of the backbone while a family is fine-tuned",
    "seed": "seed of everything random",
    "backbone_from": "a saved glassvit model directory whose backbone every family starts from (skips pretraining)",
    "use_bundled": "start from the bundled vit-digits backbone when the package ships it (0: train one here)",
    "step": "deletion/insertion step, as a fraction of the pixels",
    "ig_steps": "integration steps of the ig baseline",
    "figures": "test scenes drawn per model",
}


def configure(p: argparse.ArgumentParser) -> None:
    d = ReportSettings()
    p.add_argument("--out", default="digitscenes-report", help="output folder (default: %(default)s)")
    p.add_argument("--families", default=None, help="comma-separated zoo names (default: one per head family)")
    for key, text in OPTION_HELP.items():
        default = getattr(d, key)
        kind = (lambda v: bool(int(v))) if isinstance(default, bool) else type(default) if default is not None else str
        p.add_argument("--" + key.replace("_", "-"), type=kind, default=default, help=f"{text} (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    settings = ReportSettings(**{key: getattr(args, key) for key in OPTION_HELP})
    settings.backbone_kwargs["img_size"] = settings.size
    families = [f.strip() for f in args.families.split(",")] if args.families else None
    summary = run_report(args.out, settings, families, progress=args.progress)
    print(summary["table"])
    print(f"wrote {Path(args.out) / 'report.md'} and {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
