"""Training-step time of glassvit's trainer against a plain timm + torch loop on the same backbone and batch.

    python -m benchmarks.train_step --model vit-s16 --model vit-net-s16 --model ct-s16 --batch 32 [--device cuda]

timm: `timm.create_model(backbone, num_classes=C)` carrying the zoo model's backbone weights, and per step
cross-entropy, backward, AdamW step, zero_grad. glassvit: `Trainer.train_step` as `fit` runs it (forward_detailed,
the head's loss, backward, scheduled AdamW step over backbone/head groups, the head's after_optimizer_step, metrics
kept on the device). Same batch, same number of classes, timings interleaved (benchmarks/common.py). The ratio is
glassvit / timm seconds per step: the linear head measures the trainer's overhead (target <= 1.05), other heads add
their own cost on top of the same backbone. --img-size/--tiny shrink the backbone for a quick CPU run.
"""

from __future__ import annotations

import argparse

import timm
import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_times, table
from glassvit import zoo
from glassvit.errors import GlassViTError
from glassvit.training import distributed
from glassvit.training.loop import Trainer

TINY = dict(patch_size=4, embed_dim=48, depth=2, num_heads=3)


def plain_timm_step(model, x: torch.Tensor, y: torch.Tensor, lr: float):
    """A bare timm classifier (with the linear head's weights when `model` has one) and the textbook step."""
    bare = timm.create_model(model.config.backbone, num_classes=model.num_classes, **model.config.backbone_kwargs)
    if model.config.head == "linear":
        state = {k.removeprefix("backbone.model."): v for k, v in model.state_dict().items()}
        state = {k.replace("head.fc.", "head."): v for k, v in state.items()}
        bare.load_state_dict(state, strict=True)
    bare = bare.to(x.device).train()
    optimizer = torch.optim.AdamW(bare.parameters(), lr=lr, weight_decay=0.05)

    def step():
        loss = F.cross_entropy(bare(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def glassvit_step(model, x: torch.Tensor, y: torch.Tensor, lr: float):
    """The trainer's step on the same batch (one micro-batch per optimiser step)."""
    labels = torch.eye(model.num_classes, device=x.device)[y] if model.head.multi_label else y
    items = [{"image": x[i].cpu(), "label": labels[i].cpu()} for i in range(len(x))]
    settings = dict(epochs=1, batch_size=len(x), lr=lr, backbone_lr=lr, weight_decay=0.05, warmup_epochs=0,
                    min_lr=0.0, grad_clip=None, accumulate=1, freeze_backbone_epochs=0, amp=False, seed=0,
                    val_fraction=0.0, select_metric="accuracy")
    trainer = Trainer(model, items, None, settings, distributed.Context(0, 1, x.device, owns_group=False),
                      out_dir=None, num_workers=0, progress=False)
    batch = {"image": x, "label": labels}
    model.train()
    return lambda: trainer.train_step(batch)


def compare(name: str, batch: int, device: str, repeats: int, classes: int, overrides: dict) -> dict[str, object]:
    torch.manual_seed(0)
    model = zoo.load(name, num_classes=classes, **overrides).to(device)
    size = model.data_config["input_size"][-1]
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    row: dict[str, object] = {"model": name, "head": model.config.head, "batch": batch, "input": size,
                              "device": device}
    plain = plain_timm_step(model, x, y, lr=1e-4)
    try:
        ours = glassvit_step(model, x, y, lr=1e-4)
        ours()
    except GlassViTError as e:
        return {**row, "glassvit ms/step": float("nan"), "timm ms/step": float("nan"), "ratio": f"n/a ({e})"}
    times = interleaved_times({"glassvit": ours, "timm": plain}, repeats=repeats, device=device)
    return {**row, "glassvit ms/step": 1000 * times["glassvit"], "timm ms/step": 1000 * times["timm"],
            "ratio": times["glassvit"] / times["timm"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="zoo name (repeatable; default vit-s16)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--img-size", type=int, help="input size override (default: the model's)")
    p.add_argument("--tiny", action="store_true", help=f"shrink the backbone to {TINY} (quick CPU runs)")
    args = p.parse_args(argv)
    overrides: dict = {}
    if args.img_size:
        overrides["img_size"] = args.img_size
    if args.tiny:
        overrides["backbone_kwargs"] = dict(TINY)
    rows = [compare(m, args.batch, args.device, args.repeats, args.classes, overrides)
            for m in args.model or ["vit-s16"]]
    print(table(rows))


if __name__ == "__main__":
    main()
