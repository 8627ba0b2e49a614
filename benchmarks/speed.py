"""Forward throughput and peak memory of a zoo model against the bare timm model with the same backbone.

    python -m benchmarks.speed --model vit-b16 --batch 8 [--device cuda] [--repeats 10]

Both models get the same timm backbone, the same batch and the same number of classes; the ratio is
glassvit / timm (throughput below 1 means slower, memory above 1 means more).
"""

from __future__ import annotations

import argparse

import timm
import torch

from benchmarks.common import inference, interleaved_times, peak_memory_mb, table
from glassvit import zoo

SETUP = """
import timm, torch
from glassvit import zoo
def setup():
    torch.manual_seed(0)
    if {bare!r}:
        model = timm.create_model({backbone!r}, num_classes={classes}, **{kwargs!r})
    else:
        model = zoo.load({name!r}, num_classes={classes}, **{overrides!r})
    model = model.eval().to({device!r})
    x = torch.randn({batch}, 3, {size}, {size}, device={device!r})
    def run():
        with torch.inference_mode():
            model(x)
    return run
"""


def compare(name: str, batch: int, device: str = "cpu", repeats: int = 10, classes: int = 1000,
            overrides: dict | None = None) -> dict[str, object]:
    """One row: throughput and peak memory of zoo model `name` and of bare timm, with their ratios."""
    overrides = overrides or {}
    torch.manual_seed(0)
    model = zoo.load(name, num_classes=classes, **overrides).eval().to(device)
    spec = zoo.get_spec(name)
    kwargs = model.config.backbone_kwargs
    bare = timm.create_model(spec.backbone, num_classes=classes, **kwargs).eval().to(device)
    size = model.data_config["input_size"][-1]
    x = torch.randn(batch, 3, size, size, device=device)

    times = interleaved_times({"glassvit": inference(lambda: model(x)), "timm": inference(lambda: bare(x))},
                              repeats=repeats, device=device)
    fmt = dict(backbone=spec.backbone, classes=classes, kwargs=kwargs, name=name, overrides=overrides,
               device=device, batch=batch, size=size)
    mem_g = peak_memory_mb(SETUP.format(bare=False, **fmt), device)
    mem_t = peak_memory_mb(SETUP.format(bare=True, **fmt), device)
    return {
        "model": name,
        "batch": batch,
        "device": device,
        "glassvit img/s": batch / times["glassvit"],
        "timm img/s": batch / times["timm"],
        "throughput ratio": times["timm"] / times["glassvit"],
        "glassvit peak MiB": mem_g,
        "timm peak MiB": mem_t,
        "memory ratio": mem_g / max(mem_t, 1e-9),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="zoo name (repeatable; default vit-b16)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    rows = [compare(m, args.batch, args.device, args.repeats) for m in args.model or ["vit-b16"]]
    print(table(rows))


if __name__ == "__main__":
    main()
