"""Your images as training data: class folders or a manifest, with the annotations interpretable heads learn from.

    ImageFolder(root, data_config=model.data_config)               root/<class>/<image>
    Manifest("train.jsonl" | "train.csv", data_config=..., grid=model.backbone.info.grid)

A manifest has one row per image (JSON Lines objects, or CSV columns; list- and dict-valued CSV cells are JSON):

    image     path, relative to the manifest's folder
    label     class index or class name;  or labels: a list of them (multi-label; "a;b" in CSV)
    concepts  optional (K,) concept vector; null entries, or a missing vector, are unannotated (NaN)
    parts     optional {part name: [x, y] pixel coordinates, or null when not visible}
    mask      optional path of a mask image (non-zero = object)
    box       optional [x0, y0, x1, y1] in pixels

Items are dicts: image (3,H,W) float normalised with the backbone's mean and std, label () long or (C,) float
multi-hot, and where the data has them concepts (K,), spatial_concepts (h*w, P) on the model's token grid (one
concept per part: 1 on the patch holding the part's keypoint; rows of patches holding no keypoint are NaN),
mask (H,W) float 0/1, box (4,) float; an image without an annotation gets NaN there, never zeros.

Transforms are timm's (`timm.data.create_transform` with the backbone's data config: size, mean, std,
interpolation, crop): random-resized crop, flip and colour jitter for training, resize and centre crop for
evaluation. Annotations follow the image through the geometric part of the transform (the same random draws are
replayed on masks, box masks and coordinate maps), so keypoints become patch maps AFTER augmentation.
"""

from __future__ import annotations

import copy
import csv
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.digitscenes import DigitScenes, spatial_concepts
from ..data.digitscenes import _box as _mask_box
from ..errors import GlassViTError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise GlassViTError("reading image files needs Pillow: pip install 'glassvit[data]'") from e
    return Image


@dataclass
class ImageTransforms:
    """geometric: PIL -> PIL, replayed on annotations; photometric: PIL -> normalised (3,H,W) tensor, image only."""

    geometric: Callable[[Any], Any]
    photometric: Callable[[Any], Tensor]

    @classmethod
    def from_timm(cls, data_config: dict[str, Any], train: bool, **timm_kwargs: Any) -> ImageTransforms:
        """timm's transforms for `data_config` (e.g. model.data_config); `timm_kwargs` go to create_transform
        (scale, hflip, color_jitter, auto_augment, re_prob, ...)."""
        from timm.data import create_transform
        from torchvision import transforms as T

        keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        config = {k: data_config[k] for k in keys if k in data_config}
        try:
            separate = train and not timm_kwargs.get("no_aug", False)
            built = create_transform(**config, **timm_kwargs, is_training=train, separate=separate)
        except TypeError as e:
            raise GlassViTError(f"bad augmentation arguments {timm_kwargs}: {e}") from e
        if isinstance(built, tuple):  # training: (geometric crop/flip, colour, to-tensor + normalise)
            primary, secondary, final = built
            return cls(primary, T.Compose([secondary, final]))
        steps = built.transforms  # evaluation, or training without augmentation: resize, crop | to-tensor, normalise
        cut = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
        return cls(T.Compose(steps[:cut]), T.Compose(steps[cut:]))


@dataclass
class _Record:
    path: Path
    label: Any
    concepts: list[float | None] | None = None
    parts: dict[str, Sequence[float] | None] | None = None
    mask: Path | None = None
    box: Sequence[float] | None = None


class ImageDataset(Dataset):
    """Images with labels and optional annotations (see the module docstring); base of ImageFolder and Manifest.

    Args:
        data_config: timm data config of the model (model.data_config): input size, mean, std, interpolation.
        grid: the model's token grid (model.backbone.info.grid), needed for spatial_concepts from parts.
        train: training transforms (augmentation) when True, evaluation transforms when False; `for_eval()`
            gives the evaluation view of a training dataset (used for held-out validation data).
        augment: extra arguments for timm's training transform (e.g. dict(scale=(0.5, 1), hflip=0.0)).
        skip_bad_images: decode every image once up front, drop unreadable ones and count them in `skipped`;
            otherwise an unreadable image fails, naming its path, when it is loaded.
    """

    def __init__(self, records: list[_Record], label_names: list[str], multi_label: bool, *,
                 data_config: dict[str, Any], grid: tuple[int, int] | None = None, train: bool = True,
                 augment: dict[str, Any] | None = None, skip_bad_images: bool = False,
                 concept_names: list[str] | None = None, part_names: list[str] | None = None, source: str = ""):
        self.source = source
        self.label_names, self.num_classes, self.multi_label = label_names, len(label_names), multi_label
        self.concept_names, self.part_names = concept_names, part_names
        self.grid = tuple(grid) if grid is not None else None
        if part_names and self.grid is None:
            raise GlassViTError(f"{source} has part keypoints: pass the model's token grid (grid=) to turn them into "
                                "spatial concept maps")
        self.train = train
        self.transform = ImageTransforms.from_timm(data_config, train, **(augment or {}))
        self.eval_transform = ImageTransforms.from_timm(data_config, False) if train else self.transform
        self.skipped: list[str] = []
        if skip_bad_images:
            records = self._readable(records)
        if not records:
            raise GlassViTError(f"{source} has no usable images")
        self.records = records

    # -- torch Dataset
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        image = self._open(r.path)
        aux = []
        if r.mask is not None:
            mask = self._open(r.mask, mode="L")
            if mask.size != image.size:
                raise GlassViTError(f"mask {r.mask} is {mask.size[0]}x{mask.size[1]} but its image {r.path} is "
                                    f"{image.size[0]}x{image.size[1]}")
            aux.append(mask.point(lambda v: 255 if v else 0))
        if r.box is not None:
            aux.append(_box_mask(r.box, image.size))
        if r.parts is not None:
            aux.extend(_coordinate_maps(image.size))
        outputs = _replay(self.transform.geometric, [image, *aux])
        image, aux = outputs[0], outputs[1:]
        item: dict[str, Any] = {"image": self.transform.photometric(image), "label": self._label(r.label)}
        size = item["image"].shape[-2:]
        if self.concept_names is not None:
            item["concepts"] = _concept_vector(r.concepts, len(self.concept_names))
        if self.has("mask"):
            item["mask"] = _mask_tensor(aux.pop(0)) if r.mask is not None else torch.full(size, float("nan"))
        if self.has("box"):
            item["box"] = _mask_box(_mask_tensor(aux.pop(0)) > 0) if r.box is not None else torch.full((4,), float("nan"))
        if self.part_names:
            item["spatial_concepts"] = self._part_maps(r.parts, aux, size)
        item["path"] = str(r.path)
        return item

    def has(self, key: str) -> bool:
        """Whether any record carries the annotation `key` ("mask" or "box")."""
        return any(getattr(r, key) is not None for r in self.records)

    def for_eval(self) -> ImageDataset:
        """The same images with evaluation transforms (no augmentation)."""
        view = copy.copy(self)
        view.transform, view.train = self.eval_transform, False
        return view

    # -- helpers
    def _label(self, label: Any) -> Tensor:
        if self.multi_label:
            y = torch.zeros(self.num_classes)
            y[list(label)] = 1.0
            return y
        return torch.tensor(label, dtype=torch.long)

    def _part_maps(self, parts: dict[str, Any] | None, coords: list, size: tuple[int, int]) -> Tensor:
        """(h*w, P): 1 where a part's keypoint lands after the transform; rows without keypoints NaN."""
        h, w = size
        masks = torch.zeros(len(self.part_names), h, w)
        if parts is not None:
            xs, ys = (torch.from_numpy(np.array(c, dtype=np.float32)) for c in coords)
            spacing = max(float((xs[:, 1:] - xs[:, :-1]).abs().median()), float((ys[1:] - ys[:-1]).abs().median()))
            for k, name in enumerate(self.part_names):
                point = parts.get(name)
                if point is None:
                    continue
                d2 = (xs - float(point[0])) ** 2 + (ys - float(point[1])) ** 2
                j = int(d2.argmin())
                if float(d2.view(-1)[j]) <= spacing ** 2:
                    masks[k].view(-1)[j] = 1.0
        cover = spatial_concepts(masks, self.grid)
        return torch.where(torch.isnan(cover), cover, (cover > 0).float())

    def _open(self, path: Path, mode: str = "RGB"):
        Image = _pil()
        try:
            with Image.open(path) as img:
                return img.convert(mode)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise GlassViTError(f"cannot read image {path}: {e}; fix or remove it, or skip unreadable images "
                                "(skip_bad_images=True, --skip-bad-images)") from e

    def _readable(self, records: list[_Record]) -> list[_Record]:
        kept = []
        for r in records:
            try:
                self._open(r.path)
                if r.mask is not None:
                    self._open(r.mask, mode="L")
                kept.append(r)
            except GlassViTError:
                self.skipped.append(str(r.path))
        return kept


class ImageFolder(ImageDataset):
    """root/<class name>/<image>: one subfolder per class (sorted names = class indices), images at any depth."""

    def __init__(self, root: str | Path, **kwargs: Any):
        root = Path(root)
        if not root.is_dir():
            raise GlassViTError(f"image folder {root} does not exist")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise GlassViTError(f"image folder {root} has no class subfolders (expected {root}/<class>/<image>)")
        records, empty = [], []
        for index, name in enumerate(classes):
            files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                empty.append(name)
            records += [_Record(path=p, label=index) for p in files]
        if empty:
            raise GlassViTError(f"class folders without images in {root}: {', '.join(empty[:10])} "
                                f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})")
        super().__init__(records, classes, False, source=str(root), **kwargs)


class Manifest(ImageDataset):
    """A CSV or JSON Lines manifest (see the module docstring).

    Args:
        path: the manifest (.csv, or .jsonl/.json for JSON Lines).
        label_names: class names in index order (default: sorted names found, or 0..max for integer labels).
        concept_names / part_names: fix the concept vector's names and the parts' order (default: "c0".. and the
            parts in order of first appearance).
        **kwargs: see ImageDataset.
    """

    def __init__(self, path: str | Path, label_names: list[str] | None = None,
                 concept_names: list[str] | None = None, part_names: list[str] | None = None, **kwargs: Any):
        path = Path(path)
        if not path.is_file():
            raise GlassViTError(f"manifest {path} does not exist")
        rows = _read_rows(path)
        if not rows:
            raise GlassViTError(f"manifest {path} has no rows")
        multi = any("labels" in row for row in rows)
        label_names = _label_names(rows, multi, label_names, path)
        index = {name: i for i, name in enumerate(label_names)}
        records = []
        num_concepts = None
        for n, row in enumerate(rows, start=1 if path.suffix.lower() != ".csv" else 2):
            where = f"{path}:{n}"
            if not row.get("image"):
                raise GlassViTError(f"{where}: no 'image' path")
            raw = row.get("labels" if multi else "label")
            if raw is None or raw == "":
                raise GlassViTError(f"{where}: no {'labels' if multi else 'label'}")
            labels = [_class_index(v, index, len(label_names), where) for v in _as_list(raw)]
            concepts = _parse(row.get("concepts"), where)
            if concepts is not None:
                if not isinstance(concepts, list):
                    raise GlassViTError(f"{where}: concepts must be a list of numbers (null = unannotated)")
                if num_concepts is not None and len(concepts) != num_concepts:
                    raise GlassViTError(f"{where}: {len(concepts)} concepts, but earlier rows have {num_concepts}")
                num_concepts = len(concepts)
            parts = _parse(row.get("parts"), where)
            if parts is not None and not isinstance(parts, dict):
                raise GlassViTError(f"{where}: parts must map part names to [x, y] or null")
            for name, point in (parts or {}).items():
                if point is not None and (not isinstance(point, list) or len(point) != 2):
                    raise GlassViTError(f"{where}: part {name!r} must be [x, y] or null, got {point!r}")
            box = _parse(row.get("box"), where)
            if box is not None and (not isinstance(box, list) or len(box) != 4):
                raise GlassViTError(f"{where}: box must be [x0, y0, x1, y1], got {box!r}")
            mask = row.get("mask") or None
            records.append(_Record(path=path.parent / row["image"], label=labels if multi else labels[0],
                                   concepts=concepts, parts=parts, mask=path.parent / mask if mask else None, box=box))
        if num_concepts is not None:
            if concept_names is not None and len(concept_names) != num_concepts:
                raise GlassViTError(f"{path}: {len(concept_names)} concept names for {num_concepts} concepts")
            concept_names = concept_names or [f"c{k}" for k in range(num_concepts)]
        found = list(dict.fromkeys(name for r in records for name in (r.parts or {})))
        if part_names is not None:
            unknown_parts = sorted(set(found) - set(part_names))
            if unknown_parts:
                raise GlassViTError(f"{path}: parts {unknown_parts} are not among part_names {part_names}")
        part_names = part_names or (found or None)
        super().__init__(records, label_names, multi, concept_names=concept_names, part_names=part_names,
                         source=str(path), **kwargs)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GlassViTError(f"cannot read manifest {path}: {e}") from e
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise GlassViTError(f"{path}: the CSV header must name an 'image' column (got {reader.fieldnames})")
        return [{k: v for k, v in row.items() if v not in (None, "")} for row in reader]
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise GlassViTError(f"{path}:{n} is not valid JSON: {e}") from e
        if not isinstance(row, dict):
            raise GlassViTError(f"{path}:{n}: each line must be a JSON object")
        rows.append(row)
    return rows


def _parse(value: Any, where: str) -> Any:
    """CSV cells holding JSON lists/objects are decoded; JSON Lines values pass through."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise GlassViTError(f"{where}: cannot parse {value!r} as JSON: {e}") from e
    return value


def _as_list(raw: Any) -> list[Any]:
    raw = _parse(raw, "")
    if isinstance(raw, list):
        return raw
    if isinstance(raw, str) and ";" in raw:
        return [v.strip() for v in raw.split(";") if v.strip()]
    return [raw]


def _label_names(rows: list[dict[str, Any]], multi: bool, given: list[str] | None, path: Path) -> list[str]:
    if given is not None:
        return list(given)
    values = [v for row in rows for v in _as_list(row.get("labels" if multi else "label", []))]
    if all(_is_int(v) for v in values):
        top = max(int(v) for v in values) if values else -1
        return [str(i) for i in range(top + 1)]
    names = sorted({str(v) for v in values})
    if not names:
        raise GlassViTError(f"{path}: no labels")
    return names


def _is_int(v: Any) -> bool:
    return isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit())


def _class_index(value: Any, index: dict[str, int], num_classes: int, where: str) -> int:
    if isinstance(value, str) and value in index:
        return index[value]
    if _is_int(value):
        i = int(value)
        if not 0 <= i < num_classes:
            raise GlassViTError(f"{where}: label {i} is outside [0, {num_classes}) ({num_classes} classes)")
        return i
    raise GlassViTError(f"{where}: unknown class {value!r}; classes: {', '.join(list(index)[:12])}")


def _concept_vector(values: list[float | None] | None, k: int) -> Tensor:
    if values is None:
        return torch.full((k,), float("nan"))
    return torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float32)


def _replay(transform: Callable, images: list) -> list:
    """Apply a random transform to several images with the same random draws (Python and torch RNGs)."""
    py, th = random.getstate(), torch.get_rng_state()
    out = [transform(images[0])]
    after_py, after_th = random.getstate(), torch.get_rng_state()
    for img in images[1:]:
        random.setstate(py)
        torch.set_rng_state(th)
        out.append(transform(img))
    random.setstate(after_py)
    torch.set_rng_state(after_th)
    return out


def _coordinate_maps(size: tuple[int, int]) -> list:
    """Two float images holding each pixel's source x and y (pixel centres)."""
    Image = _pil()
    w, h = size
    xs = np.tile(np.arange(w, dtype=np.float32) + 0.5, (h, 1))
    ys = np.tile((np.arange(h, dtype=np.float32) + 0.5)[:, None], (1, w))
    return [Image.fromarray(xs), Image.fromarray(ys)]


def _box_mask(box: Sequence[float], size: tuple[int, int]):
    Image = _pil()
    w, h = size
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    canvas = np.zeros((h, w), np.uint8)
    canvas[max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = 255
    return Image.fromarray(canvas)


def _mask_tensor(img) -> Tensor:
    return torch.from_numpy((np.asarray(img, dtype=np.float32) > 127).astype(np.float32))


def open_data(spec: str | Path, model: Any, *, split: str = "train", train: bool = True,
              augment: dict[str, Any] | None = None, skip_bad_images: bool = False,
              num_scenes: int | None = None) -> Dataset:
    """A dataset for `model` from a spec: "digitscenes:TASK[:SIZE]", an image folder, or a .csv/.jsonl manifest.

    Images are sized and normalised for the model (model.data_config); spatial annotations use its token grid.
    `split` picks DigitScenes' split ("train" or "test"); `num_scenes` its size.
    """
    grid = model.backbone.info.grid
    config = model.data_config
    text = str(spec)
    if text.startswith("digitscenes:"):
        from torchvision.transforms import Normalize

        parts = text.split(":")
        if len(parts) > 3 or not parts[1]:
            raise GlassViTError(f"expected digitscenes:TASK[:SIZE], got {text!r}")
        size = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None
        if len(parts) == 3 and size is None:
            raise GlassViTError(f"the DigitScenes size must be an integer, got {parts[2]!r}")
        size = size or int(config["input_size"][-1])
        return DigitScenes(split, parts[1], size=size, grid=grid, num_scenes=num_scenes,
                           transform=Normalize(config["mean"], config["std"]))
    path = Path(text)
    common = dict(data_config=config, grid=grid, train=train, augment=augment, skip_bad_images=skip_bad_images)
    if path.is_dir():
        return ImageFolder(path, **common)
    if path.suffix.lower() in (".csv", ".jsonl", ".json"):
        return Manifest(path, **common)
    if not path.exists():
        raise GlassViTError(f"data {text!r} does not exist (expected a folder of class subfolders, a .csv/.jsonl "
                            "manifest, or digitscenes:TASK[:SIZE])")
    raise GlassViTError(f"cannot read data from {text!r}: expected a folder, a .csv/.jsonl manifest, or "
                        "digitscenes:TASK[:SIZE]")
