"""The zoo: names, overrides, clear errors, offline pretrained weights, fine-tuning a saved model on new classes."""

import os
import subprocess
import sys

import pytest
import torch

from glassvit import GlassViTError, zoo
from helpers import TINY_VIT, tiny_model


def test_list_models():
    assert {"vit-ti16", "vit-s16", "vit-b16", "vit-l16"} <= set(zoo.list_models())
    assert zoo.list_models("vit-?16") == ["vit-b16", "vit-l16", "vit-s16"]
    assert zoo.list_models("nothing*") == []


def test_unknown_name_lists_close_matches():
    with pytest.raises(GlassViTError, match="unknown zoo model 'vit-b61'.*vit-b16"):
        zoo.load("vit-b61")


def test_unknown_override_lists_close_matches():
    with pytest.raises(GlassViTError, match="unknown override.*'pol'.*pool"):
        zoo.load("vit-b16", pol="avg")


def test_overrides_reach_backbone_and_head():
    model = tiny_model("vit-b16", num_classes=3, pool="avg", img_size=32)
    assert model.head.pool == "avg" and model.config.head_kwargs["pool"] == "avg"
    assert model.backbone.info.grid == (8, 8) and model.num_classes == 3
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_registry_specs_are_not_mutated_by_overrides():
    tiny_model("vit-s16", num_classes=3, pool="avg")
    assert zoo.get_spec("vit-s16").head_kwargs == {}


def test_load_dir_with_new_classes_keeps_backbone(tmp_path):
    model = tiny_model("vit-b16", num_classes=5).eval()
    model.save_pretrained(tmp_path)
    tuned = zoo.load(tmp_path, num_classes=2).eval()
    assert tuned.num_classes == 2 and tuned.head.fc.out_features == 2
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(tuned.backbone(x).patches, model.backbone(x).patches)
    assert zoo.load(f"local-dir:{tmp_path}").num_classes == 5


def test_label_names_must_match_classes():
    with pytest.raises(GlassViTError, match="2 label names for 5 classes"):
        tiny_model("vit-b16", num_classes=5, label_names=["a", "b"])


def test_pretrained_offline_says_how_to_fix(tmp_path):
    code = (
        "import warnings\nfrom glassvit import zoo, GlassViTError\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    try:\n"
        f"        zoo.load('vit-ti16', pretrained=True, backbone_kwargs={TINY_VIT!r})\n"
        "    except GlassViTError as e:\n"
        "        print('ERROR', e)\n"
        "    print('WARN', [str(x.message) for x in w])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "ERROR could not load pretrained weights for 'vit_tiny_patch16_224'" in out
    assert "pretrained_file=PATH" in out and "HF_HUB_OFFLINE" in out
    assert "head is untrained" in out


BUNDLED = {  # name: (DigitScenes task, lowest acceptable accuracy on 200 test scenes; measured on 1,000 in metrics.json)
    "vit-digits": ("single", 0.85),  # 0.941
    "rcut-digits": ("single", 0.85),  # the same weights
    "vit-net-digits": ("single", 0.85),  # 0.937
    "ct-digits": ("evenodd", 0.88),  # 0.959
    "ex-vit-digits": ("multi", 0.85),  # per-label accuracy 0.920; all-negative guessing scores 0.75
}


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_models_load_offline_and_are_trained(name, monkeypatch):
    from glassvit.training import evaluate
    from glassvit.training.datasets import open_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task, lowest = BUNDLED[name]
    model = zoo.load(name, pretrained=True)
    assert model.config.label_names is not None and zoo.get_spec(name).weights.startswith("bundled:")
    data = open_data(f"digitscenes:{task}", model, split="test", num_scenes=200)
    assert evaluate(model, data, batch_size=100)["accuracy"] >= lowest
