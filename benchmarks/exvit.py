"""eX-ViT speed: whole-model inference overhead against the linear baseline on ViT-B/16, measured in one run.

    python -m benchmarks.exvit [--device cuda] [--batch 8] [--repeats 10]

ex-vit-b16 (its last block run as an E-MHA block with a locality bias, 80 attribute prototypes, 20 classes) against
vit-b16 (timm's linear classifier on the CLS token, 20 classes), on the same ViT-B/16 at 224 px, timed interleaved.
Overhead = time(ex-vit-b16) / time(vit-b16) - 1 (target <= 10%). A second row times `explain` (class map, attribute
maps, E-MHA attention recomputed for the affinity, pseudo mask) against the linear head's `explain`.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import inference, interleaved_times, table
from glassvit import zoo


def row(what: str, t: dict[str, float], batch: int, device: str) -> dict[str, object]:
    return {"comparison": what, "batch": batch, "device": device, "ex-vit ms": 1e3 * t["exvit"],
            "linear ms": 1e3 * t["linear"], "ratio (linear/ex-vit)": t["linear"] / t["exvit"],
            "overhead": f"{100 * (t['exvit'] / t['linear'] - 1):+.2f}%"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    exvit = zoo.load("ex-vit-b16", num_classes=20).eval().to(args.device)
    linear = zoo.load("vit-b16", num_classes=20).eval().to(args.device)
    with torch.no_grad():
        exvit.head.locality.fill_(0.1)  # a trained head's bias is non-zero; the cost is the same either way
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)
    forward = interleaved_times({"exvit": inference(lambda: exvit(x)), "linear": inference(lambda: linear(x))},
                                repeats=args.repeats, device=args.device)
    explain = interleaved_times({"exvit": lambda: exvit.explain(x), "linear": lambda: linear.explain(x)},
                                repeats=args.repeats, device=args.device)
    print(table([row("ex-vit-b16 vs vit-b16, forward", forward, args.batch, args.device),
                 row("ex-vit-b16 vs vit-b16, explain", explain, args.batch, args.device)]))


if __name__ == "__main__":
    main()
