"""Every speed and memory comparison, one after the other on one machine, in one Markdown report.

    python -m benchmarks.report --out benchmark-report.md \
        [--vit-net /tmp/ViT-NeT] [--concept-transformer /tmp/concept_transformer] [--device cuda] [--quick] \
        [--skip rcut]

Runs, each in its own process so that one does not warm the other's caches, and copies their tables:
    speed          zoo linear baseline vs bare timm: forward throughput and peak memory (ViT-B/16)
    train_step     training step of the linear, tree and concept heads vs a plain timm + torch loop
    neural_tree    tree head vs the official recursive ViT-NeT (soft and greedy) and whole-model overhead
                   (needs --vit-net: a checkout of jumpsnack/ViT-NeT)
    concept        Concept Transformer whole-model overhead, and head vs the official one (--concept-transformer:
                   a checkout of IBM/concept_transformer; without it only the overhead row)
    rcut           R-Cut explanation cost as multiples of one forward pass (and its DigitScenes quality table)
    exvit          eX-ViT whole-model overhead vs the linear baseline
Comparisons whose official checkout is not given are listed as skipped, with the reason. The report opens with the
machine it ran on (CPU, cores, GPU, torch and timm versions). Whole-model comparisons use batch 64 on a GPU and 8 on
CPU; --quick uses fewer repeats and batch 4. --skip leaves a comparison out (e.g. rcut, which trains its DigitScenes
model on the CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores, GPU: {gpu}; Python {platform.python_version()}, torch {torch.__version__},"
            f" timm {timm.__version__}")


SECTIONS = ("speed", "train_step", "exvit", "concept", "neural_tree", "rcut")


def runs(args: argparse.Namespace) -> list[tuple[str, list[str] | None, str]]:
    """(title, module arguments or None when skipped, why skipped)."""
    dev = ["--device", args.device]
    reps = ["--repeats", "3" if args.quick else "10"]
    batch = ["--batch", "4" if args.quick else "64" if args.device == "cuda" else "8"]
    out = [
        ("Forward: zoo linear baseline vs bare timm (ViT-B/16)", ["speed", "--model", "vit-b16", *batch, *dev, *reps], ""),
        ("Training step vs a plain timm + torch loop", ["train_step", "--model", "vit-ti16", "--model", "vit-net-ti16",
                                                        "--model", "ct-ti16", *batch, *dev, *reps], ""),
        ("eX-ViT: whole-model overhead (ViT-B/16)", ["exvit", *batch, *dev, *reps], ""),
    ]
    concept = ["concept", *batch, *dev, *reps]
    if args.concept_transformer:
        concept += ["--official", str(args.concept_transformer)]
    out.append(("Concept Transformer: overhead and head vs the official head", concept, ""))
    tree_why = "needs --vit-net (a checkout of jumpsnack/ViT-NeT)"
    tree = ["neural_tree", "--official", str(args.vit_net), *dev, "--repeats", "3" if args.quick else "5"]
    out.append(("ViT-NeT: tree vs the official recursive tree, and whole-model overhead",
                tree if args.vit_net else None, tree_why))
    rcut = ["rcut", "--threads", "1", "--out", str(Path(args.out).with_suffix("")) + "-rcut"]
    if args.quick:
        rcut += ["--train", "1000", "--epochs", "3", "--test", "100", "--skip-vit-s"]
    out.append(("R-Cut: explanation cost and DigitScenes localisation", rcut, ""))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmark-report.md")
    p.add_argument("--vit-net", type=Path, help="checkout of jumpsnack/ViT-NeT")
    p.add_argument("--concept-transformer", type=Path, help="checkout of IBM/concept_transformer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller batches")
    p.add_argument("--skip", action="append", default=[], choices=SECTIONS, help="leave this comparison out")
    args = p.parse_args(argv)
    sections = ["# glassvit benchmark report", f"Machine: {machine()}", f"Command: `python -m benchmarks.report "
                f"{' '.join(argv if argv is not None else sys.argv[1:])}`"]
    for title, module_args, why in runs(args):
        if module_args is not None and module_args[0] in args.skip:
            module_args, why = None, "left out with --skip"
        if module_args is None:
            sections += [f"## {title}", f"Skipped: {why}."]
            continue
        start = time.time()
        result = subprocess.run([sys.executable, "-m", f"benchmarks.{module_args[0]}", *module_args[1:]],
                                capture_output=True, text=True)
        body = result.stdout.strip() if result.returncode == 0 else (
            f"Failed (exit {result.returncode}):\n\n```\n{result.stderr.strip()[-2000:]}\n```")
        sections += [f"## {title}", f"`python -m benchmarks.{' '.join(module_args)}` ({time.time() - start:.0f} s)",
                     body]
        print(f"{title}: done in {time.time() - start:.0f} s", flush=True)
    Path(args.out).write_text("\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
