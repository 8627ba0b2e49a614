"""save_pretrained / zoo.load(dir): identical outputs, and corrupt or foreign files fail cleanly, loading nothing."""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from glassvit import GlassViTError, zoo
from glassvit.serialization import FORMAT_VERSION
from helpers import tiny_model


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("vit-b16", num_classes=4, label_names=list("abcd")).eval()
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_config_is_timm_style_and_versioned(saved):
    model, path = saved
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["format_version"] == FORMAT_VERSION and cfg["library_name"] == "glassvit"
    assert cfg["architecture"] == "vit_base_patch16_224" and cfg["num_classes"] == 4
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32] and cfg["label_names"] == list("abcd")
    assert cfg["glassvit"]["head"] == "linear"
    assert not list(path.glob(".*")), "no temporary files left behind"
    assert zoo.load(path).config.label_names == list("abcd")


def test_saved_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        tiny_model("vit-b16", num_classes=4).save_pretrained(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644, "README.md": 0o644}


def test_unknown_format_version_refused(saved):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GlassViTError, match="format_version 2.*upgrade glassvit"):
        zoo.load(path)


def test_malformed_and_foreign_configs_refused(saved):
    _, path = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(GlassViTError, match="not valid JSON"):
        zoo.load(path)
    (path / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "num_classes": 4}))
    with pytest.raises(GlassViTError, match="not a glassvit config"):
        zoo.load(path)


def test_truncated_weights_refused(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GlassViTError, match="not a readable safetensors file"):
        zoo.load(path)


def test_missing_weights_refused(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(GlassViTError, match="model.safetensors is missing"):
        zoo.load(path)


def test_mismatched_weights_refused(saved):
    _, path = saved
    state = load_file(str(path / "model.safetensors"))
    state["head.fc.weight"] = torch.zeros(7, 48)
    del state["head.fc.bias"]
    state["extra"] = torch.zeros(1)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(GlassViTError, match=r"1 missing \(head.fc.bias\); 1 unexpected \(extra\); 1 wrong shape"):
        zoo.load(path)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(GlassViTError, match="config.json is missing"):
        zoo.load(tmp_path)


def test_existing_card_kept_unless_given(saved):
    model, path = saved
    (path / "README.md").write_text("my own card")
    model.save_pretrained(path)
    assert (path / "README.md").read_text() == "my own card"
    model.save_pretrained(path, card="replaced")
    assert (path / "README.md").read_text() == "replaced"
