"""`torchrun --nproc_per_node 2 -m glassvit train` (DDP, Gloo on CPU) against one process with the same global batch."""

import json
import os
import subprocess
import sys

import torch

from glassvit import zoo
from glassvit.cli import main
from glassvit.serialization import read_weights
from test_training_cli import TINY, image_folder

# Gradients are averaged across processes by an all-reduce instead of one batch mean: the same math, summed in
# another order, so weights and logits agree to float32 rounding (measured: < 1e-6 after 6 AdamW steps). The one
# exception is the attention key bias: its exact gradient is zero (softmax ignores a constant added to every key
# logit), so its float noise is scaled up by Adam's normalisation to ~1e-4 and it is left out of the comparison;
# it does not change the output.
TOLERANCE = 1e-5


def comparable(name, w):
    """The weights whose gradient is not identically zero: qkv biases without their key third."""
    if name.endswith("attn.qkv.bias"):
        q, _, v = w.chunk(3)
        return torch.cat([q, v])
    return w


def test_two_processes_match_one_process(tmp_path):
    data = image_folder(tmp_path / "data", classes=("a", "b", "c", "d"), per_class=8)
    common = [*TINY, "--data", str(data), "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.25",
              "--lr", "3e-3", "--augment", '{"no_aug": true}', "--no-progress"]
    assert main(["train", *common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "glassvit", "train", *common, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 2 epochs") == 1  # only rank 0 reports
    one, two = read_weights(tmp_path / "one" / "model.safetensors"), read_weights(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    diff = max(float((comparable(k, one[k]) - comparable(k, two[k])).abs().max()) for k in one)
    assert diff <= TOLERANCE, diff
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(zoo.load(tmp_path / "two").eval()(x), zoo.load(tmp_path / "one").eval()(x),
                               rtol=0, atol=TOLERANCE)
    history = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
               for d in ("one", "two")]
    for a, b in zip(*history):
        assert a["step"] == b["step"] == 3 * a["epoch"] and a["val_accuracy"] == b["val_accuracy"]
        torch.testing.assert_close(a["train_loss"], b["train_loss"], rtol=1e-5, atol=1e-6)
