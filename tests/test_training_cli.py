"""`glassvit train`: every option documented, config files, run directories, resume, and one clear error per bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from glassvit import zoo
from glassvit.cli import main
from glassvit.commands.train import OPTIONS
from helpers import TINY_VIT

TINY = ["--model", "vit-ti16", "--img-size", "32",
        "--backbone-kwargs", json.dumps({k: v for k, v in TINY_VIT.items() if k != "img_size"})]


def image_folder(root, classes=("circle", "square"), per_class=4):
    """Tiny PNGs: a bright block whose position depends on the class."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.full((32, 32, 3), 10 + i, np.uint8)
            a[4 + 12 * c:16 + 12 * c, 4:16] = 220
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def train(*args):
    return main(["train", *TINY, "--no-progress", "--batch-size", "4", *map(str, args)])


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in [*OPTIONS, "config"]:
        assert "--" + name.replace("_", "-") in text
    assert "torchrun --nproc_per_node" in text


def test_train_folder_into_a_loadable_run(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    assert train("--data", data, "--out", tmp_path / "run", "--epochs", 2, "--val", data, "--test", data) == 0
    out = capsys.readouterr().out
    assert "trained 2 epochs" in out and "test: " in out
    run = tmp_path / "run"
    model = zoo.load(run)
    assert model.num_classes == 2 and model.config.label_names == ["circle", "square"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert set(json.loads((run / "test_metrics.json").read_text())) >= {"accuracy", "loss"}
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["epochs"] == 2 and saved["img_size"] == 32
    # --resume alone picks up the saved options; the finished run is returned as it is
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_config_file_and_command_line_precedence(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"epochs": 3, "lr": 0.01, "val_fraction": 0.25, "data": str(data)}))
    assert train("--config", config, "--epochs", 1, "--out", tmp_path / "run") == 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["epochs"] == 1 and saved["lr"] == 0.01 and saved["val_fraction"] == 0.25
    config.write_text(json.dumps({"epoch": 3}))
    assert train("--config", config, "--data", data, "--out", tmp_path / "run2") == 2
    assert "unknown option in" in capsys.readouterr().err


def write_manifest(root, rows):
    image_folder(root / "imgs", classes=("a",), per_class=1)
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root / "m.jsonl"


@pytest.mark.parametrize("setup, extra, message", [
    (lambda p: p / "nowhere", [], "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", [], "has no class subfolders"),
    (lambda p: image_folder(p / "d"), ["--num-classes", "3"], "--num-classes 3 but the data .* has 2 classes"),
    (lambda p: write_manifest(p, [{"image": "imgs/a/0.png", "label": 0, "concepts": [1, 0]},
                                  {"image": "imgs/a/0.png", "label": 0, "concepts": [1]}]), [],
     "m.jsonl:2: 1 concepts, but earlier rows have 2"),
    (lambda p: write_manifest(p, [{"image": "imgs/a/0.png", "label": 0, "concepts": [1, 0]}] * 4),
     ["--model", "ct-ti16", "--val-fraction", "0"], r"batch\['concepts'\] must have shape \(4, 13\) for this head"),
    (lambda p: image_folder(p / "d"), ["--model", "vit-tiny"], "unknown zoo model 'vit-tiny'"),
    (lambda p: image_folder(p / "d"), ["--batch-size", "0"], "batch_size 0 must be a positive multiple"),
    (lambda p: image_folder(p / "d"), ["--val", "digitscenes:single"], "held out from its training split"),
])
def test_bad_input_one_clear_message(tmp_path, capsys, setup, extra, message):
    assert train("--data", setup(tmp_path), "--out", tmp_path / "run", "--epochs", 1, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("glassvit train: error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_unreadable_image_fails_with_its_path_or_is_skipped(tmp_path, capsys):
    data = image_folder(tmp_path / "d")
    (data / "circle" / "bad.png").write_bytes(b"\x89PNG broken")
    assert train("--data", data, "--out", tmp_path / "run", "--epochs", 1, "--val-fraction", 0) == 2
    assert f"cannot read image {data / 'circle' / 'bad.png'}" in capsys.readouterr().err
    assert train("--data", data, "--out", tmp_path / "run2", "--epochs", 1, "--skip-bad-images") == 0
    assert "skipped 1 unreadable images" in capsys.readouterr().out
