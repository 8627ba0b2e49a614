"""DigitScenes: deterministic, split by source scan, with masks, boxes and concept annotations that agree."""

import numpy as np
import pytest
import torch

from glassvit import GlassViTError
from glassvit.data import DigitScenes, source_indices, spatial_concepts


def test_split_is_by_source_scan():
    train, test = source_indices("train"), source_indices("test")
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == 1797
    assert abs(len(test) / 1797 - 0.3) < 0.01
    assert not np.array_equal(source_indices("test", seed=1), test)


def test_deterministic_by_seed_in_any_order():
    a, b = DigitScenes("train", size=32, seed=3), DigitScenes("train", size=32, seed=3)
    later = b[5]
    first = b[0]
    torch.testing.assert_close(a[0]["image"], first["image"])
    torch.testing.assert_close(a[5]["image"], later["image"])
    assert not torch.equal(DigitScenes("train", size=32, seed=4)[0]["image"], first["image"])


@pytest.mark.parametrize("size", [32, 64])
def test_single_digit_item(size):
    ds = DigitScenes("test", "single", size=size, num_scenes=20)
    for i in range(20):
        item = ds[i]
        d = int(item["label"])
        assert item["image"].shape == (3, size, size) and 0 <= item["image"].min() and item["image"].max() <= 1
        assert item["concepts"].tolist() == torch.eye(10)[d].tolist()
        assert item["masks"][d].sum() > 0 and item["masks"].sum(dim=(1, 2)).nonzero().flatten().tolist() == [d]
        torch.testing.assert_close(item["mask"], item["masks"][d])
        ys, xs = item["mask"].nonzero(as_tuple=True)
        assert item["box"].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        # the digit is drawn on top: its pixels are brighter than the dark background on average
        img = item["image"].mean(0)
        assert img[item["mask"]].mean() > img[~item["mask"]].mean() + 0.2


def test_evenodd_labels_parity_with_digit_concepts():
    ds = DigitScenes("train", "evenodd", num_scenes=30)
    assert ds.num_classes == 2 and ds.label_names == ["even", "odd"]
    for i in range(30):
        item = ds[i]
        assert int(item["label"]) == int(item["concepts"].argmax()) % 2


def test_multi_label_scenes():
    ds = DigitScenes("train", "multi", size=64, num_scenes=30)
    assert ds.multi_label
    for i in range(30):
        item = ds[i]
        present = item["label"].nonzero().flatten().tolist()
        assert 2 <= len(present) <= 3
        assert item["masks"].flatten(1).any(1).nonzero().flatten().tolist() == present
        assert torch.isnan(item["boxes"][[d for d in range(10) if d not in present]]).all()
        assert not torch.isnan(item["boxes"][present]).any()


def test_spatial_concepts_on_grid():
    ds = DigitScenes("train", "evenodd", size=32, grid=(8, 8), num_scenes=5)
    item = ds[0]
    sc = item["spatial_concepts"]
    assert sc.shape == (64, 10)
    covered = ~torch.isnan(sc).any(-1)
    assert covered.any() and (~covered).any()
    d = int(item["concepts"].argmax())
    assert (sc[covered].argmax(-1) == d).all()
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1, :2, :1] = True
    got = spatial_concepts(masks, (2, 2))
    torch.testing.assert_close(got[0], torch.tensor([1.0, 0.5]))
    assert torch.isnan(got[1:]).all()
    with pytest.raises(GlassViTError, match="not divisible"):
        spatial_concepts(masks, (3, 3))


def test_bad_arguments():
    with pytest.raises(GlassViTError, match="unknown DigitScenes task"):
        DigitScenes(task="pairs")
    with pytest.raises(GlassViTError, match="unknown DigitScenes split"):
        DigitScenes("val")
    with pytest.raises(GlassViTError, match="at least 24 px"):
        DigitScenes(size=16)
    with pytest.raises(IndexError):
        DigitScenes(num_scenes=3)[3]
