"""The evaluation runner and the `glassvit eval` / `glassvit explain` commands."""

import json
import math

import pytest
import torch
from torch.utils.data import Dataset

from glassvit import GlassViTError, zoo
from glassvit.cli import main
from glassvit.data import DigitScenes
from glassvit.evaluation import metrics as M
from glassvit.evaluation.runner import EvalSettings, evaluate_model, ground_truth
from helpers import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("vit-ti16", num_classes=10).eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def scenes():
    return DigitScenes("test", "single", size=32, num_scenes=6)


def test_runner_matches_the_metrics_on_one_batch(model, scenes):
    result = evaluate_model(model, scenes, explainers=["native", "gradcam"], batch_size=6, progress=False,
                            settings=EvalSettings(step=0.25))
    batch = torch.utils.data.default_collate([scenes[i] for i in range(6)])
    x, y = batch["image"], batch["label"]
    assert result.accuracy["accuracy"] == pytest.approx(float((model(x).argmax(-1) == y).float().mean()))
    e = model.explain(x, target=y, method="gradcam")
    mask = batch["masks"][torch.arange(6), y]  # the labelled digit's mask
    expected = {
        "pointing": M.pointing_game(e.saliency, mask),
        "relevance_mass": M.relevance_mass(e.saliency, mask),
        "iou": M.iou(e.saliency, mask),
        "energy_pointing": M.energy_pointing_game(e.saliency, batch["boxes"][torch.arange(6), y]),
        "deletion": M.deletion_auc(model, x, e.saliency, y, step=0.25),
        "insertion": M.insertion_auc(model, x, e.saliency, y, step=0.25),
        "sparseness": M.sparseness(e.saliency),
    }
    for name, values in expected.items():
        assert result.explanations["gradcam"][name] == pytest.approx(float(values.nanmean()), abs=1e-5), name
    assert set(result.explanations) == {"native", "gradcam"}
    assert "randomization" not in result.explanations["native"]


def test_ground_truth_selection_and_missing_annotations():
    batch = {"image": torch.zeros(2, 3, 8, 8), "masks": torch.zeros(2, 3, 8, 8), "mask": torch.ones(2, 8, 8)}
    batch["masks"][1, 2, :2, :2] = 1
    mask, valid = ground_truth(batch, torch.tensor([0, 2]), 3, (8, 8), "mask")
    assert mask[1].sum() == 4 and mask[0].sum() == 0 and valid.all()
    mask, _ = ground_truth(batch, torch.tensor([0, 2]), 5, (8, 8), "mask")  # per-class masks do not fit 5 classes
    assert mask.all()
    box_batch = {"image": torch.zeros(2, 3, 8, 8), "box": torch.tensor([[0, 0, 3, 3], [float("nan")] * 4])}
    box, valid = ground_truth(box_batch, torch.tensor([0, 0]), 3, (16, 16), "box")  # boxes follow a resize
    assert box[0].tolist() == [0, 0, 6, 6] and valid.tolist() == [True, False]
    assert ground_truth({"image": torch.zeros(1, 3, 8, 8)}, torch.tensor([0]), 3, (8, 8), "mask") is None


class Unannotated(Dataset):
    """Two scenes, the second without a mask (NaN), as a manifest row without one gives."""

    def __init__(self):
        self.scenes = DigitScenes("test", "single", size=32, num_scenes=2)

    def __len__(self):
        return 2

    def __getitem__(self, i):
        item = self.scenes[i]
        mask = item["mask"].float() if i == 0 else torch.full((32, 32), float("nan"))
        return {"image": item["image"], "label": item["label"], "mask": mask}


def test_unannotated_images_are_skipped(model):
    result = evaluate_model(model, Unannotated(), explainers=["gradcam"], metrics=["pointing"], progress=False)
    first = Unannotated()[0]
    e = model.explain(first["image"][None], target=first["label"].view(1), method="gradcam")
    expected = M.pointing_game(e.saliency, first["mask"][None] > 0.5)
    assert result.explanations["gradcam"]["pointing"] == float(expected)
    with pytest.raises(GlassViTError, match="needs a 'box'"):
        evaluate_model(model, Unannotated(), explainers=["gradcam"], metrics=["energy_pointing"], progress=False)


def test_randomization_in_the_runner(model, scenes):
    result = evaluate_model(model, scenes, explainers=["gradcam"], metrics=["randomization"], progress=False,
                            settings=EvalSettings(sanity_images=2))
    groups = result.randomization["gradcam"]
    assert list(groups) == ["head", "block1", "block0", "embedding"]
    assert result.explanations["gradcam"]["randomization"] == pytest.approx(groups["embedding"])


def test_multi_label_map_and_targets():
    torch.manual_seed(0)
    model = tiny_model("vit-ti16", num_classes=10, multi_label=True).eval()
    data = DigitScenes("test", "multi", size=32, num_scenes=4)
    result = evaluate_model(model, data, explainers=["gradcam"], metrics=["map", "pointing"], progress=False)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    logits = model(batch["image"])
    assert result.accuracy["map"] == pytest.approx(float(M.mean_average_precision(logits, batch["label"])), abs=1e-6)
    assert 0 <= result.explanations["gradcam"]["pointing"] <= 1


def test_unknown_names(model, scenes):
    with pytest.raises(GlassViTError, match="rollout"):
        evaluate_model(model, scenes, explainers=["rolout"], progress=False)
    with pytest.raises(GlassViTError, match="pointing"):
        evaluate_model(model, scenes, metrics=["pointin"], progress=False)


def test_eval_command_writes_json_and_markdown(saved, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(saved), "--data", "digitscenes:single", "--num-scenes", "4", "--batch-size", "2",
            "--explainers", "native,rollout,ig", "--ig-steps", "2", "--step", "0.5", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["num_images"] == 4 and report["data"] == "digitscenes:single"
    assert set(report["explanations"]) == {"native", "rollout", "ig"}
    for row in report["explanations"].values():
        assert {"deletion", "insertion", "pointing", "iou", "energy_pointing"} <= set(row)
        assert all(v is None or math.isfinite(v) for v in row.values())
    table = (out / "eval.md").read_text()
    assert "| rollout |" in table and "deletion AUC ↓" in table and "pointing game ↑" in table
    assert "| ig |" in capsys.readouterr().out


def test_eval_command_errors(saved, tmp_path, capsys):
    assert main(["eval", "--model", str(saved), "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(saved), "--data", "digitscenes:single", "--num-scenes", "2",
                 "--metrics", "accuracy,deletoin", "--out", str(tmp_path)]) == 2
    assert "did you mean: deletion" in capsys.readouterr().err


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    from torchvision.transforms.functional import to_pil_image

    folder = tmp_path_factory.mktemp("images")
    scenes = DigitScenes("test", "single", size=32, num_scenes=2)
    paths = []
    for i in range(2):
        paths.append(folder / f"scene{i}.png")
        to_pil_image(scenes[i]["image"]).save(paths[-1])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return paths, folder / "broken.jpg"


def test_explain_command_writes_figures(saved, image_files, tmp_path, capsys):
    paths, _ = image_files
    out = tmp_path / "figs"
    assert main(["explain", "--model", str(saved), *map(str, paths), "--methods", "native,gradcam",
                 "--target", "3", "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["scene0_saliency.png", "scene1_saliency.png"]
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in written)
    printed = capsys.readouterr().out
    assert printed.count("(explaining 3)") == 2 and "no figures of its own" in printed


def test_explain_command_errors(saved, image_files, tmp_path, capsys):
    paths, broken = image_files
    assert main(["explain", "--model", str(saved), str(broken), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read image {broken}" in err and "Traceback" not in err
    assert main(["explain", "--model", str(saved), str(paths[0]), "--target", "12", "--out", str(tmp_path)]) == 2
    assert "outside [0, 10)" in capsys.readouterr().err
    assert main(["explain", "--model", str(saved), str(paths[0]), "--methods", "gradkam", "--out",
                 str(tmp_path)]) == 2
    assert "gradcam" in capsys.readouterr().err


def test_report_families_cover_every_head_and_explainer():
    from glassvit.evaluation.report import report_families

    families = report_families()
    combos = {(zoo.get_spec(n).head, zoo.get_spec(n).explainer) for n in families}
    assert len(combos) == len(families)
    vit_combos = {(s.head, s.explainer) for s in zoo.REGISTRY.values() if s.backbone.startswith("vit_")}
    assert combos == vit_combos and ("linear", "native") in combos


def test_report_trains_and_tabulates(tmp_path):
    from glassvit.evaluation.report import ReportSettings, run_report

    tiny = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    settings = ReportSettings(train_scenes=32, test_scenes=4, pretrain_epochs=1, epochs=1, batch_size=16, figures=1,
                              ig_steps=2, step=0.5, explainers=("native", "gradcam"), backbone_kwargs=tiny,
                              use_bundled=False)
    summary = run_report(tmp_path, settings, families=["vit-ti16", "rcut-s16"], progress=False)
    table = (tmp_path / "report.md").read_text()
    for row in ("vit-ti16 (linear) / native", "rcut-s16 (linear + rcut) / native",
                "rcut-s16 (linear + rcut) / gradcam"):
        assert f"| {row} |" in table
    assert "deletion AUC ↓" in table and "pointing game ↑" in table and "concept acc." not in table
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["models"]) == {"vit-ti16", "rcut-s16"}
    assert summary["table"] in table
    # R-Cut explains the linear classifier: one trained model, two explainers
    assert report["models"]["rcut-s16"]["accuracy"] == report["models"]["vit-ti16"]["accuracy"]
    assert zoo.load(tmp_path / "backbone").config.head == "linear"  # the shared backbone, a zoo.load directory
    assert (tmp_path / "models" / "rcut-s16" / "config.json").exists()
    assert (tmp_path / "figures" / "vit-ti16_scene0.png").exists()

    # a second report starts every family from that backbone and reports concept accuracy for the concept head
    settings.backbone_from = str(tmp_path / "backbone")
    run_report(tmp_path / "again", settings, families=["ct-ti16"], progress=False)
    assert not (tmp_path / "again" / "backbone").exists()
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["models"]["ct-ti16"]["accuracy"]["concept_accuracy"] is not None
    assert "| ct-ti16 (concept) / native |" in (tmp_path / "again" / "report.md").read_text()
