"""Training data: class folders, CSV/JSON Lines manifests with annotations, and annotations that follow augmentation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from glassvit import GlassViTError
from glassvit.training.datasets import ImageFolder, Manifest, open_data
from helpers import tiny_model

# a flip-only training transform: every image is mirrored, nothing else changes
FLIP = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, color_jitter=0.0)


@pytest.fixture(scope="module")
def model():
    return tiny_model("vit-ti16", num_classes=3)


def square(path, size=32, value=200):
    """A size x size RGB image: dark, with a bright block in rows 4..11, columns 2..9."""
    a = np.full((size, size, 3), 20, np.uint8)
    a[4:12, 2:10] = value
    Image.fromarray(a).save(path)
    return path


def config_for(model):
    return dict(data_config=model.data_config, grid=model.backbone.info.grid)


@pytest.fixture
def manifest_dir(tmp_path):
    for i in range(4):
        square(tmp_path / f"img{i}.png")
        m = np.zeros((32, 32), np.uint8)
        m[4:12, 2:10] = 255
        Image.fromarray(m).save(tmp_path / f"mask{i}.png")
    rows = [
        {"image": "img0.png", "label": "wren", "concepts": [1, 0, None], "parts": {"beak": [5.5, 6.5], "tail": None},
         "mask": "mask0.png", "box": [2, 4, 9, 11]},
        {"image": "img1.png", "label": "crow", "parts": {"tail": [30.5, 30.5]}},
        {"image": "img2.png", "label": "wren", "concepts": [0, 1, 1]},
        {"image": "img3.png", "label": "jay", "mask": "mask3.png"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path


def test_image_folder_classes_and_items(tmp_path, model):
    for name in ("cat", "dog"):
        (tmp_path / name / "sub").mkdir(parents=True)
        square(tmp_path / name / "a.png")
        square(tmp_path / name / "sub" / "b.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    data = ImageFolder(tmp_path, **config_for(model), train=False)
    assert data.label_names == ["cat", "dog"] and data.num_classes == 2 and len(data) == 4
    assert [int(data[i]["label"]) for i in range(4)] == [0, 0, 1, 1]
    item = data[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    mean, std = model.data_config["mean"], model.data_config["std"]
    expected = (20 / 255 - mean[0]) / std[0]  # a background pixel, normalised with the backbone's statistics
    assert float(item["image"][0, 31, 31]) == pytest.approx(expected, abs=1e-2)


def test_manifest_annotations_and_missing_is_nan(manifest_dir, model):
    data = Manifest(manifest_dir / "train.jsonl", **config_for(model), train=False)
    assert data.label_names == ["crow", "jay", "wren"] and data.part_names == ["beak", "tail"]
    items = [data[i] for i in range(4)]
    assert [int(it["label"]) for it in items] == [2, 0, 2, 1]
    assert torch.equal(torch.isnan(items[0]["concepts"]), torch.tensor([False, False, True]))
    assert torch.isnan(items[1]["concepts"]).all()  # no concept vector: unannotated, not zeros
    assert torch.isnan(items[2]["mask"]).all() and torch.isnan(items[1]["box"]).all()
    assert set(items[0]["mask"].unique().tolist()) == {0.0, 1.0}
    spatial = items[0]["spatial_concepts"]
    assert spatial.shape == (64, 2)
    annotated = (~torch.isnan(spatial).all(1)).nonzero().flatten().tolist()
    # eval transform of a 32 px image at 32 px: resize to 35 (crop_pct 0.9), centre crop; beak (5.5,6.5) -> patch (1,1)
    assert annotated == [9] and spatial[9].tolist() == [1.0, 0.0]
    assert torch.isnan(items[2]["spatial_concepts"]).all()  # no parts at all
    tail = items[1]["spatial_concepts"]
    assert (~torch.isnan(tail).all(1)).nonzero().flatten().tolist() == [63] and tail[63].tolist() == [0.0, 1.0]


def test_annotations_follow_the_augmentation(manifest_dir, model):
    """Keypoints, masks and boxes are mapped through the same random draws as the image (a horizontal flip here)."""
    plain = Manifest(manifest_dir / "train.jsonl", **config_for(model), train=True, augment=dict(FLIP, hflip=0.0))
    flipped = Manifest(manifest_dir / "train.jsonl", **config_for(model), train=True, augment=FLIP)
    a, b = plain[0], flipped[0]
    torch.testing.assert_close(b["image"], a["image"].flip(-1))
    torch.testing.assert_close(b["mask"], a["mask"].flip(-1))
    assert a["box"].tolist() == [2, 4, 9, 11] and b["box"].tolist() == [22, 4, 29, 11]
    beak_a = int((~torch.isnan(a["spatial_concepts"]).all(1)).nonzero())
    beak_b = int((~torch.isnan(b["spatial_concepts"]).all(1)).nonzero())
    assert (beak_a // 8, beak_a % 8) == (1, 1) and (beak_b // 8, beak_b % 8) == (1, 6)
    assert flipped.for_eval()[0]["box"].tolist() != b["box"].tolist()  # the evaluation view does not augment


def test_csv_manifest_multi_label(tmp_path, model):
    for i in range(2):
        square(tmp_path / f"{i}.png")
    (tmp_path / "m.csv").write_text('image,labels,concepts\n0.png,a;c,"[1, null]"\n1.png,b,\n')
    data = Manifest(tmp_path / "m.csv", **config_for(model), train=False)
    assert data.multi_label and data.label_names == ["a", "b", "c"]
    assert data[0]["label"].tolist() == [1.0, 0.0, 1.0] and data[1]["label"].tolist() == [0.0, 1.0, 0.0]
    assert torch.isnan(data[0]["concepts"][1]) and torch.isnan(data[1]["concepts"]).all()


def test_digitscenes_spec_uses_the_model(model):
    data = open_data("digitscenes:evenodd", model, num_scenes=3)
    item = data[0]
    assert data.num_classes == 2 and item["image"].shape == (3, 32, 32)
    assert item["spatial_concepts"].shape == (64, 10) and item["image"].min() < 0  # normalised


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "no class subfolders"),
    (lambda p: (p / "cat").mkdir() or p, "class folders without images in .*: cat"),
])
def test_bad_folders(tmp_path, model, make, match):
    with pytest.raises(GlassViTError, match=match):
        ImageFolder(make(tmp_path), **config_for(model))


def test_unreadable_image_names_its_path_or_is_skipped(tmp_path, model):
    (tmp_path / "cat").mkdir()
    square(tmp_path / "cat" / "good.png")
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    data = ImageFolder(tmp_path, **config_for(model))
    with pytest.raises(GlassViTError, match="cannot read image .*broken.png.*skip_bad_images"):
        [data[i] for i in range(len(data))]
    kept = ImageFolder(tmp_path, **config_for(model), skip_bad_images=True)
    assert len(kept) == 1 and kept.skipped == [str(tmp_path / "cat" / "broken.png")]


@pytest.mark.parametrize("rows, match", [
    ([{"image": "0.png", "label": 0, "concepts": [1, 0]}, {"image": "0.png", "label": 1, "concepts": [1]}],
     r"m.jsonl:2: 1 concepts, but earlier rows have 2"),
    ([{"image": "0.png"}], "m.jsonl:1: no label"),
    ([{"image": "0.png", "label": 0, "parts": {"beak": [1]}}], "part 'beak' must be"),
    ([{"image": "0.png", "label": 0, "box": [1, 2]}], "box must be"),
])
def test_bad_manifests(tmp_path, model, rows, match):
    square(tmp_path / "0.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(GlassViTError, match=match):
        Manifest(tmp_path / "m.jsonl", **config_for(model))


def test_manifest_label_outside_given_classes(tmp_path, model):
    square(tmp_path / "0.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "0.png", "label": 5}))
    with pytest.raises(GlassViTError, match=r"label 5 is outside \[0, 3\)"):
        Manifest(tmp_path / "m.jsonl", label_names=["a", "b", "c"], **config_for(model))
