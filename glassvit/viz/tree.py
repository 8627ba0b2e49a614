"""Neural tree figures: one image's decision path, and the whole tree as it decided for that image.

For image i of a batch, two files in `out_dir`:
    {stem}_{i}_path.png   top row: the image, then each node's prototype (the training patch it was projected onto,
                          or "not projected"); bottom row: the saliency, then each node's presence map over the
                          image with a box at the best-matching window, titled present/absent, the presence score
                          and the probability of the step taken; right: the reached leaf's top classes
    {stem}_{i}_tree.png   every live node: internal nodes coloured by their presence score for this image and
                          showing their prototype patch when projected, pruned nodes as grey squares, leaves with
                          their top class and path probability; the greedy path drawn in red

Prototype patches are the input pixels as the model saw them, shown like the images (min-max scaled). Presence maps
are scaled to their own range in the path figure: the titles give the scores, the overlays where each node looked.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..maps import minmax, upsample
from ..types import Explanation
from . import overlay, pyplot, register_figure, to_display

TOP_CLASSES = 5


def _label(model, c: int) -> str:
    names = model.config.label_names
    return names[c] if names else f"class {c}"


def prototype_image(model, k: int) -> Tensor | None:
    """(H,W,3) numpy in [0,1]: the input pixels prototype k was projected onto, or None when not projected."""
    head = model.head
    if int(head.proto_source[k, 0]) < 0:
        return None
    return to_display(head.proto_patches[k])


def _node_map(e: Explanation, i: int, k: int) -> Tensor | None:
    name = f"node {k}"
    return e.components[i, e.component_names.index(name)] if name in e.component_names else None


def path_figure(model, image: Tensor, e: Explanation, i: int, path: Path) -> Path:
    """The greedy path of image i: prototypes, presence overlays, decisions, and the leaf's top classes."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    head, d = model.head, e.details
    depth = head.depth
    fig = plt.figure(figsize=(2.2 * (depth + 1) + 3.2, 5.0))
    grid = fig.add_gridspec(2, depth + 2, width_ratios=[1] * (depth + 1) + [1.5])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(to_display(image))
    ax.set_title(f"input\npredicted {_label(model, int(e.logits[i].argmax()))}", fontsize=9)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[1, 0])
    overlay(ax, image, e.saliency[i])
    ax.set_title(f"saliency: {_label(model, int(e.target[i]))}", fontsize=9)
    (h, w), (gh, gw) = image.shape[-2:], e.components.shape[-2:]
    for step in range(depth):
        k = int(d["path_nodes"][i, step])
        direction = "left" if bool(d["path_left"][i, step]) else "right"
        top, bottom = fig.add_subplot(grid[0, step + 1]), fig.add_subplot(grid[1, step + 1])
        patch = prototype_image(model, k)
        if patch is not None:
            top.imshow(patch)
            src = head.proto_source[k].tolist()
            top.set_title(f"node {k} prototype\n(train image {src[0]})", fontsize=9)
        else:
            top.text(0.5, 0.5, "not\nprojected", ha="center", va="center", fontsize=9, color="0.4")
            top.set_title(f"node {k} prototype", fontsize=9)
        top.set_xticks([]), top.set_yticks([])
        bottom.imshow(to_display(image))
        m = _node_map(e, i, k)
        if bool(d["path_forced"][i, step]) or m is None:
            bottom.set_title(f"node {k}: pruned\n-> {direction}", fontsize=9)
        else:
            m = m.detach().float().cpu()
            bottom.imshow(minmax(upsample(m[None], (h, w)))[0].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            r, c = divmod(int(m.argmax()), gw)
            size = head.proto_size
            bottom.add_patch(Rectangle((c * w / gw - 0.5, r * h / gh - 0.5), size * w / gw, size * h / gh,
                                       fill=False, edgecolor="white", linewidth=2))
            state = "present" if bool(d["path_present"][i, step]) else "absent"
            bottom.set_title(f"{state} {float(d['path_presence'][i, step]):.2f}\n"
                             f"-> {direction} (p={float(d['path_routing'][i, step]):.2f})", fontsize=9)
        bottom.set_axis_off()
    ax = fig.add_subplot(grid[:, depth + 1])
    dist = d["leaf_distribution"][i].detach().float().cpu()
    top_classes = dist.argsort(descending=True)[:TOP_CLASSES].flip(0)
    ax.barh(range(len(top_classes)), dist[top_classes], color="tab:blue")
    ax.set_yticks(range(len(top_classes)), [_label(model, int(c)) for c in top_classes])
    ax.set_xlim(0, 1)
    ax.set_title(f"leaf {int(d['leaf'][i])}\n(path prob. {float(d['path_probs'][i, d['leaf'][i]]):.2f})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tree_figure(model, e: Explanation, i: int, path: Path) -> Path:
    """The whole tree for image i: presence per node, pruned nodes, leaves' top classes, the greedy path in red."""
    plt = pyplot()
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    head, d = model.head, e.details
    depth, internal = head.depth, head.num_internal
    live = head.live_nodes().tolist()
    heap_to_pre = head.heap_to_pre.tolist()
    forced = head.forced_child.tolist()
    n_leaves = head.num_leaves
    x = [0.0] * (2 * n_leaves - 1)
    for h in range(internal, 2 * n_leaves - 1):
        x[h] = float(h - internal)
    for h in reversed(range(internal)):
        x[h] = (x[2 * h + 1] + x[2 * h + 2]) / 2

    def y(h: int) -> float:
        return -float((h + 1).bit_length() - 1)

    on_path = {int(k) for k in d["path_nodes"][i]} | {None}
    leaf = int(d["leaf"][i])
    width = max(6.0, 0.75 * n_leaves + 1)
    fig, ax = plt.subplots(figsize=(width, 1.3 * depth + 2.2))
    cmap = plt.get_cmap("viridis")
    for h in range(internal):
        if not live[h]:
            continue
        for side, child in enumerate((2 * h + 1, 2 * h + 2)):
            if not live[child]:
                continue
            red = heap_to_pre[h] in on_path and (
                (child < internal and heap_to_pre[child] in on_path) or child - internal == leaf)
            ax.plot([x[h], x[child]], [y(h), y(child)], color="tab:red" if red else "0.7",
                    linewidth=2.5 if red else 1, zorder=1)
            if red:
                p = float(d["left_probs"][i, heap_to_pre[h]])
                ax.text((x[h] + x[child]) / 2, (y(h) + y(child)) / 2, f"{p if side == 0 else 1 - p:.2f}",
                        fontsize=7, color="tab:red", ha="center", va="center",
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    for h in range(internal):
        if not live[h]:
            continue
        k = heap_to_pre[h]
        if forced[k] >= 0:
            ax.scatter([x[h]], [y(h)], marker="s", s=60, color="0.6", zorder=2)
            continue
        s = float(d["presence"][i, k])
        colour = cmap(min(max(s, 0.0), 1.0))
        patch = prototype_image(model, k)
        if patch is None:
            ax.scatter([x[h]], [y(h)], s=420, color=colour, edgecolor="black", zorder=2)
        else:
            ax.add_artist(AnnotationBbox(OffsetImage(patch, zoom=20 / patch.shape[0]), (x[h], y(h)),
                                         bboxprops=dict(edgecolor=colour, linewidth=4), pad=0.15, zorder=3))
        ax.text(x[h], y(h) + 0.33, f"{k}: {s:.2f}", ha="center", fontsize=7)
    dists = d["leaf_distributions"][i]
    for j in range(n_leaves):
        h = internal + j
        if not live[h]:
            continue
        c = int(dists[j].argmax())
        ax.text(x[h], y(h) - 0.1, f"{_label(model, c)}\n{float(dists[j, c]):.2f}\npi {float(d['path_probs'][i, j]):.2f}",
                ha="center", va="top", fontsize=7, color="tab:red" if j == leaf else "black",
                fontweight="bold" if j == leaf else "normal")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="presence")
    ax.set_xlim(-0.8, n_leaves - 0.2)
    ax.set_ylim(-depth - 1.0, 0.7)
    ax.set_axis_off()
    ax.set_title(f"{model.config.name}: greedy path in red; nodes: id, presence;\n"
                 f"leaves: top class, its probability, path probability pi", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_figure("neural_tree")
def tree_figures(model, images: Tensor, explanation: Explanation, out_dir: Path, stem: str) -> list[Path]:
    """Both figures for every image of the batch; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(path_figure(model, image, explanation, i, out_dir / f"{stem}_{i}_path.png"))
        paths.append(tree_figure(model, explanation, i, out_dir / f"{stem}_{i}_tree.png"))
    return paths
