"""ViT-NeT's tree: our level-batched head against the official recursive implementation, and its whole-model cost.

    python -m benchmarks.neural_tree --official /tmp/ViT-NeT [--device cuda] [--repeats 5] [--threads 1]

`--official` is a checkout of github.com/jumpsnack/ViT-NeT; its tree is imported from there (never copied here),
built at the paper's Swin-B width (1024 -> 256, 200 classes, 1x1 prototypes), and loaded into our head with
`glassvit.convert.vit_net_state_dict`, so both sides run the same weights (ours with reference_routing=True; the
outputs are checked to agree before anything is timed). Rows, all measured in one run, interleaved:

    head, soft      one forward of the tree on (batch, 196, 1024) tokens, depth 6, batch 32: official / ours
    head, greedy    greedy inference of `batch` images, depth 6, batch 64: the official hard_forward called once
                    per image (it takes batch 1 only) / our batched greedy path
    whole model     vit-net-b16 (depth 4) against vit-b16 (timm's linear classifier), same ViT-B/16, 200 classes:
                    relative overhead of the tree

Targets: soft >= 5x faster, greedy >= 20x faster, whole-model overhead <= 10% (baseline / ours >= 0.91).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import fixture_recorder, interleaved_times, table
from glassvit import zoo
from glassvit.convert import vit_net_state_dict
from glassvit.heads.neural_tree import NeuralTreeHead
from glassvit.types import BackboneInfo, Tokens

WIDTH, CLASSES, GRID = 1024, 200, (14, 14)


def official_tree(checkout: Path, depth: int, device: str):
    """The official DTree and the Swin classifier whose logits its leaves add, plus our head with their weights."""
    swin_tree, _ = fixture_recorder("record_neural_tree").import_official(checkout)
    torch.manual_seed(0)
    theirs = swin_tree.DTree(num_classes=CLASSES, tree_depth=depth, embed_dim=WIDTH, proto_size=[1, 1])
    classifier = nn.Linear(WIDTH, CLASSES)
    info = BackboneInfo(WIDTH, GRID, 0, False, 0, 0, (448, 448))
    holder = nn.Module()
    holder.head = NeuralTreeHead(info, CLASSES, depth=depth, reference_routing=True)
    state = {f"tree.{k}": v for k, v in theirs.state_dict().items()}
    state.update({f"patch_embedding.head.{k}": v for k, v in classifier.state_dict().items()})
    converted = vit_net_state_dict(state, theirs._out_map, holder)
    holder.head.load_state_dict({k.removeprefix("head."): v for k, v in converted.items()})
    return theirs.to(device).eval(), classifier.to(device).eval(), holder.head.to(device).eval()


def tokens(batch: int, device: str) -> Tokens:
    patches = torch.randn(batch, GRID[0] * GRID[1], WIDTH, device=device)
    return Tokens(cls=None, patches=patches, grid=GRID, image_size=(448, 448), num_prefix_tokens=0)


def head_rows(checkout: Path, device: str, repeats: int, soft_batch: int, greedy_batch: int) -> list[dict]:
    theirs, classifier, ours = official_tree(checkout, 6, device)
    soft, greedy = tokens(soft_batch, device), tokens(greedy_batch, device)

    def official_soft():
        return theirs(classifier(soft.patches.mean(1)), soft.patches, None, None)

    def official_greedy():
        x = greedy.patches
        return torch.cat([theirs.hard_forward(classifier(x[i:i + 1].mean(1)), x[i:i + 1], None, None)
                          for i in range(x.shape[0])])

    with torch.inference_mode():
        agree_soft = float((official_soft() - ours(soft).aux["probs"]).abs().max())
        agree_greedy = float((official_greedy() - ours.greedy(greedy)[1]).abs().max())
        if max(agree_soft, agree_greedy) > 1e-4:
            raise RuntimeError(f"outputs disagree (soft {agree_soft:.2e}, greedy {agree_greedy:.2e})")
        t = interleaved_times({"official": official_soft, "ours": lambda: ours(soft)}, repeats=repeats, device=device)
        g = interleaved_times({"official": official_greedy, "ours": lambda: ours.greedy(greedy)}, repeats=repeats,
                              device=device)
    return [
        {"measurement": f"head, soft, depth 6, batch {soft_batch}", "baseline": "official tree",
         "baseline s": t["official"], "ours s": t["ours"], "baseline / ours": t["official"] / t["ours"],
         "target": ">= 5", "note": f"max |diff| {agree_soft:.1e}"},
        {"measurement": f"head, greedy, depth 6, batch {greedy_batch}", "baseline": f"official, {greedy_batch} x batch 1",
         "baseline s": g["official"], "ours s": g["ours"], "baseline / ours": g["official"] / g["ours"],
         "target": ">= 20", "note": f"max |diff| {agree_greedy:.1e}"},
    ]


def model_row(device: str, repeats: int, batch: int) -> dict:
    torch.manual_seed(0)
    tree = zoo.load("vit-net-b16", num_classes=CLASSES).eval().to(device)
    torch.manual_seed(0)
    linear = zoo.load("vit-b16", num_classes=CLASSES).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.inference_mode():
        t = interleaved_times({"tree": lambda: tree(x), "linear": lambda: linear(x)}, repeats=repeats, device=device)
    return {"measurement": f"whole model vit-net-b16, batch {batch}", "baseline": "vit-b16 (linear)",
            "baseline s": t["linear"], "ours s": t["tree"], "baseline / ours": t["linear"] / t["tree"],
            "target": ">= 0.91", "note": f"overhead {100 * (t['tree'] / t['linear'] - 1):+.1f}%"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", type=Path, required=True, help="a checkout of github.com/jumpsnack/ViT-NeT")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--soft-batch", type=int, default=32)
    p.add_argument("--greedy-batch", type=int, default=64)
    p.add_argument("--model-batch", type=int, default=None, help="whole-model batch (default 64 on GPU, 8 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's; 1 is steadier on a "
                                                             "shared machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = head_rows(args.official, args.device, args.repeats, args.soft_batch, args.greedy_batch)
    rows.append(model_row(args.device, args.repeats, args.model_batch or (64 if args.device == "cuda" else 8)))
    print(f"device: {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} threads")
    print(table(rows))


if __name__ == "__main__":
    main()
