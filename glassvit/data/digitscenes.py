"""DigitScenes: a bundled, offline benchmark with the ground truth interpretable heads and metrics need.

Scenes are rendered from scikit-learn's handwritten digits (1,797 real 8x8 scans of 43 writers' digits,
shipped inside scikit-learn, so nothing is downloaded). Each scene places upscaled, coloured digits on a dark,
noisy canvas with clutter (fragments of other digits and line strokes, never a whole digit).

Tasks:
    "single"  one digit per scene, label = digit (10 classes); its pixel mask and box.
    "evenodd" the same scenes, label = parity (even=0, odd=1); digit identity is the global concept vector
              (the Concept Transformer's MNIST even/odd experiment).
    "multi"   2-3 non-overlapping distinct digits per scene, multi-hot labels (10 classes), per-class masks
              (weakly supervised segmentation: train on labels, evaluate masks).

Every item is a dict:
    image (3,S,S) float in [0,1] (before `transform`), label () long or (10,) float multi-hot,
    concepts (10,) float digit indicator, masks (10,S,S) bool per-class pixel masks, mask (S,S) bool of the
    label's digits, boxes (10,4) float x0,y0,x1,y1 (inclusive pixel bounds, NaN for absent digits), box (4,) the
    first labelled digit's box, and with `grid` given, spatial_concepts (h*w,10): the fraction of each patch
    covered by each digit, NaN rows for patches no digit touches (no annotation, not "no concept").

Splits are by source sample: a stratified `test_fraction` of the 1,797 scans is reserved for "test", the rest for
"train", so no handwritten sample appears on both sides. Scene i of a split is rendered from a generator seeded by
(seed, split, i): the same seed gives the same scenes on any machine, in any order of access.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import GlassViTError

TASKS = ("single", "evenodd", "multi")
DIGIT_NAMES = [str(d) for d in range(10)]
_SPLIT_IDS = {"train": 0, "test": 1}


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise GlassViTError("DigitScenes needs scikit-learn: pip install 'glassvit[data]'") from e
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def source_indices(split: str, seed: int = 0, test_fraction: float = 0.3) -> np.ndarray:
    """Indices of the scikit-learn scans reserved for `split`, stratified by digit; train and test are disjoint."""
    if split not in _SPLIT_IDS:
        raise GlassViTError(f"unknown DigitScenes split {split!r}; use 'train' or 'test'")
    _, targets = _digits()
    rng = np.random.default_rng([seed, 7919])
    chosen = []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(targets == digit))
        n_test = int(round(len(idx) * test_fraction))
        chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
    return np.sort(np.concatenate(chosen))


def spatial_concepts(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Per-patch concept coverage on a token grid.

    masks (K,H,W) -> (h*w, K): the fraction of each patch covered by each concept's mask; rows of patches no
    concept touches are NaN (unannotated), so losses skip them instead of reading them as "no concept".
    """
    h, w = grid
    k, H, W = masks.shape
    if H % h or W % w:
        raise GlassViTError(f"mask size {(H, W)} is not divisible by the token grid {grid}")
    cover = reduce(masks.float(), "k (h ph) (w pw) -> (h w) k", "mean", h=h, w=w)
    cover[cover.sum(-1) == 0] = float("nan")
    return cover


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(img)[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


class DigitScenes(Dataset):
    """Scenes of real handwritten digits with masks, boxes and concept annotations (see the module docstring).

    Args:
        split: "train" or "test" (disjoint source scans).
        task: "single", "evenodd" or "multi".
        size: canvas side in pixels (>= 24; 32 and 64 are the usual choices).
        num_scenes: scenes in the split (default 2000 for train, 500 for test).
        seed: fixes the source split and every scene.
        clutter: add digit fragments and strokes to the background.
        grid: a token grid (h,w); adds "spatial_concepts" to every item.
        transform: applied to the image tensor (e.g. normalisation with the backbone's mean and std).
        test_fraction: share of source scans reserved for the test split.
    """

    num_concepts = 10
    concept_names = DIGIT_NAMES

    def __init__(self, split: str = "train", task: str = "single", size: int = 32, num_scenes: int | None = None,
                 seed: int = 0, clutter: bool = True, grid: tuple[int, int] | None = None,
                 transform: Callable[[Tensor], Tensor] | None = None, test_fraction: float = 0.3):
        if task not in TASKS:
            raise GlassViTError(f"unknown DigitScenes task {task!r}; choose one of {', '.join(TASKS)}")
        if size < 24:
            raise GlassViTError(f"DigitScenes canvases must be at least 24 px, got {size}")
        self.split, self.task, self.size, self.seed = split, task, size, seed
        self.clutter, self.transform = clutter, transform
        self.grid = tuple(grid) if grid is not None else None
        self.sources = source_indices(split, seed, test_fraction)
        self.num_scenes = num_scenes if num_scenes is not None else (2000 if split == "train" else 500)
        self.multi_label = task == "multi"
        self.num_classes = 2 if task == "evenodd" else 10
        self.label_names = ["even", "odd"] if task == "evenodd" else list(DIGIT_NAMES)

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < self.num_scenes:
            raise IndexError(i)
        image, masks, digits = self.render(i)
        masks_t = torch.from_numpy(masks)
        present = torch.zeros(10)
        present[list(digits)] = 1.0
        boxes = torch.stack([_box(m) for m in masks_t])
        if self.task == "multi":
            label = present.clone()
        elif self.task == "evenodd":
            label = torch.tensor(digits[0] % 2)
        else:
            label = torch.tensor(digits[0])
        img = torch.from_numpy(image)
        item = {
            "image": self.transform(img) if self.transform else img,
            "label": label,
            "concepts": present,
            "masks": masks_t,
            "mask": masks_t[list(digits)].any(0),
            "boxes": boxes,
            "box": boxes[digits[0]],
        }
        if self.grid is not None:
            item["spatial_concepts"] = spatial_concepts(masks_t, self.grid)
        return item

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Scene i: image (3,S,S) float32 in [0,1], masks (10,S,S) bool, and the digits placed (first = label)."""
        images, targets = _digits()
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i])
        s = self.size
        canvas = rng.uniform(0.0, 0.2, size=3).astype(np.float32)[:, None, None] * np.ones((3, s, s), np.float32)
        canvas += rng.normal(0, 0.04, size=(3, s, s)).astype(np.float32)
        if self.clutter:
            self._add_clutter(canvas, rng, images)
        n_digits = int(rng.integers(2, 4)) if self.task == "multi" else 1
        digits = [int(d) for d in rng.choice(10, size=n_digits, replace=False)]
        scale = (0.38, 0.5) if self.task == "multi" else (0.45, 0.65)
        masks = np.zeros((10, s, s), bool)
        placed: list[tuple[int, int, int]] = []
        for digit in digits:
            src = rng.choice(self.sources[targets[self.sources] == digit])
            d = int(rng.integers(int(s * scale[0]), int(s * scale[1]) + 1))
            y, x = self._place(rng, d, placed)
            placed.append((y, x, d))
            alpha = _resize(images[src], d)
            color = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
            color[rng.integers(3)] = 1.0
            region = canvas[:, y:y + d, x:x + d]
            canvas[:, y:y + d, x:x + d] = region * (1 - alpha) + color[:, None, None] * alpha
            masks[digit, y:y + d, x:x + d] = alpha > 0.3
        return np.clip(canvas, 0, 1), masks, digits

    def _place(self, rng: np.random.Generator, d: int, placed: list[tuple[int, int, int]]) -> tuple[int, int]:
        s = self.size
        for _ in range(200):
            y, x = (int(v) for v in rng.integers(0, s - d + 1, size=2))
            if all(y + d <= py or py + pd <= y or x + d <= px or px + pd <= x for py, px, pd in placed):
                return y, x
        return y, x  # a crowded canvas: accept the last draw (overlaps are rare at the default scales)

    def _add_clutter(self, canvas: np.ndarray, rng: np.random.Generator, images: np.ndarray) -> None:
        s = self.size
        for _ in range(int(rng.integers(2, 5))):
            frag = images[rng.choice(self.sources)]
            r, c = (int(v) for v in rng.integers(0, 5, size=2))
            piece = _resize(frag[r:r + 3, c:c + 3], max(4, s // 6))
            d = piece.shape[0]
            y, x = (int(v) for v in rng.integers(0, s - d + 1, size=2))
            color = rng.uniform(0.2, 0.6, size=3).astype(np.float32)
            canvas[:, y:y + d, x:x + d] = np.maximum(canvas[:, y:y + d, x:x + d], color[:, None, None] * piece)
        for _ in range(int(rng.integers(1, 3))):
            y0, x0, y1, x1 = rng.integers(0, s, size=4)
            n = 2 * s
            ys = np.linspace(y0, y1, n).round().astype(int)
            xs = np.linspace(x0, x1, n).round().astype(int)
            color = rng.uniform(0.15, 0.45, size=3).astype(np.float32)
            canvas[:, ys, xs] = np.maximum(canvas[:, ys, xs], color[:, None])


def _box(mask: Tensor) -> Tensor:
    """(H,W) bool -> (4,) x0,y0,x1,y1 inclusive, NaN when empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return torch.full((4,), float("nan"))
    return torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)

