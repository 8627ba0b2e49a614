"""The `glassvit` command: list, info, quickstart; user errors are one line, no traceback."""

import subprocess
import sys

from glassvit.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "glassvit", *args], capture_output=True, text=True, timeout=300)


def test_list_shows_baselines(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("vit-ti16", "vit-s16", "vit-b16", "vit-l16"):
        assert name in out
    assert main(["list", "vit-l*"]) == 0
    assert capsys.readouterr().out.strip().startswith("vit-l16")


def test_info(capsys):
    assert main(["info", "vit-ti16"]) == 0
    out = capsys.readouterr().out
    assert "vit_tiny_patch16_224" in out and "3x224x224" in out and "Dosovitskiy" in out
    assert "5,717,416" in out  # ViT-Ti/16 with a 1000-class head, as timm counts it


def test_user_error_is_one_line_without_traceback():
    result = run("info", "vit-b61")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("glassvit info: error: unknown zoo model 'vit-b61'; did you mean: vit-b16")


def test_quickstart_fine_tunes_evaluates_and_points_to_its_figures(tmp_path):
    result = run("quickstart", "--out", str(tmp_path), "--epochs", "1", "--train-scenes", "200", "--test-scenes",
                 "16", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report.md").read_text()
    for name in ("vit-digits", "vit-net-digits", "ct-digits"):
        assert name in report
        assert (tmp_path / "models" / name / "model.safetensors").exists()
    assert "the backbone of `vit-digits`" in report  # started from the bundled weights, not trained here
    assert (tmp_path / "figures" / "vit-net-digits_scene0_0_path.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "ct-digits_scene0_0_concepts.png").stat().st_size > 1000
    assert f"Open, in this order:\n  {tmp_path / 'report.md'}" in result.stdout
