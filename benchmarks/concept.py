"""Concept Transformer speed: whole-model overhead against the linear baseline, and our head against the official one.

    python -m benchmarks.concept --official /tmp/concept_transformer [--device cuda] [--batch 8] [--repeats 10]
                                 [--threads 1]

1. Whole model, inference: ct-b16 (13 global + 95 spatial concepts, 12 heads) against vit-b16 (linear head), both
   with 200 classes on the same ViT-B/16 at 224 px. Overhead = time(ct-b16) / time(vit-b16) - 1 (target <= 3%);
   also time(concept head alone) / time(vit-b16), the same overhead without the noise of two whole-model timings.
2. Head alone, same shapes (width 768, 12 heads, 200 classes, 13 + 95 concepts, 196 patch tokens), eval mode:
   ours against IBM/concept_transformer's ConceptTransformerVIT (ctc/vit.py), imported from the checkout given by
   --official (never part of this repository) as tests/fixtures/record_concept_transformer.py imports it. Ratio = time(official) / time(ours) (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import fixture_recorder, inference, interleaved_times, table
from glassvit import zoo
from glassvit.types import Tokens

CONCEPTS = dict(num_concepts=13, num_spatial_concepts=95, num_heads=12)


def whole_model(batch: int, device: str, repeats: int) -> dict[str, object]:
    """ct-b16 against vit-b16, interleaved; also the concept head alone on the same tokens, whose time over the
    linear model's is the overhead without the run-to-run noise of two whole-model timings."""
    torch.manual_seed(0)
    ct = zoo.load("ct-b16", num_classes=200).eval().to(device)
    linear = zoo.load("vit-b16", num_classes=200).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.inference_mode():
        tokens = ct.backbone(x)
    t = interleaved_times({"ct": inference(lambda: ct(x)), "linear": inference(lambda: linear(x)),
                           "head": inference(lambda: ct.head(tokens))}, repeats=repeats, device=device)
    return {"comparison": "ct-b16 vs vit-b16 (whole model)", "batch": batch, "device": device,
            "ours ms": 1e3 * t["ct"], "other ms": 1e3 * t["linear"], "ratio (other/ours)": t["linear"] / t["ct"],
            "overhead": f"{100 * (t['ct'] / t['linear'] - 1):+.2f}% (head alone: {100 * t['head'] / t['linear']:.2f}%)"}


def head_only(official: Path, batch: int, device: str, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    ours = zoo.load("ct-b16", num_classes=200).head.eval().to(device)
    vit, _ = fixture_recorder("record_concept_transformer").import_official(official)
    theirs = vit.ConceptTransformerVIT(
        embedding_dim=768, num_classes=200, num_heads=12, n_unsup_concepts=0, n_concepts=13, n_spatial_concepts=95,
    ).eval().to(device)
    cls, patches = torch.randn(batch, 768, device=device), torch.randn(batch, 196, 768, device=device)
    tokens = Tokens(cls=cls, patches=patches, grid=(14, 14), image_size=(224, 224), num_prefix_tokens=1)
    t = interleaved_times({"ours": inference(lambda: ours(tokens)),
                           "official": inference(lambda: theirs(cls[:, None], patches))},
                          repeats=repeats, device=device)
    return {"comparison": "concept head vs official ConceptTransformerVIT", "batch": batch, "device": device,
            "ours ms": 1e3 * t["ours"], "other ms": 1e3 * t["official"], "ratio (other/ours)": t["official"] / t["ours"],
            "overhead": f"{100 * (t['ours'] / t['official'] - 1):+.2f}%"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", type=Path, help="an IBM/concept_transformer checkout (for the head comparison)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [whole_model(args.batch, args.device, args.repeats)]
    if args.official is not None:
        rows.append(head_only(args.official, args.batch, args.device, 5 * args.repeats))
    print(table(rows))


if __name__ == "__main__":
    main()
