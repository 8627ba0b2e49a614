"""The fit loop: run directory, exact resume after SIGINT, accumulation, freezing, schedule, hooks, metrics, errors."""

import json
import os
import signal

import pytest
import torch
from torch.utils.data import Dataset

from glassvit import GlassViTError, zoo
from glassvit.heads.linear import LinearHead
from glassvit.serialization import read_weights
from glassvit.training import TrainingInterrupted, evaluate, fit
from glassvit.training.metrics import MetricTotals, concept_hits
from glassvit.training.optim import build_scheduler, param_groups
from helpers import tiny_model

QUIET = dict(progress=False)


class Quadrants(Dataset):
    """Learnable toy data: the label (0..3) is the quadrant holding a bright square; concepts = one-hot quadrant.

    noise > 0 adds Gaussian noise from the global torch RNG on every access (as augmentation does), so exact resume
    must restore that RNG. `sig` (SIGINT) is sent to this process on access number `interrupt_at`.
    """

    def __init__(self, n: int, noise: float = 0.0, interrupt_at: int | None = None, num_classes: int | None = None,
                 sig: int = signal.SIGINT):
        g = torch.Generator().manual_seed(n)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.base = 0.1 * torch.randn(n, 3, 32, 32, generator=g)
        for i, q in enumerate(self.labels.tolist()):
            r, c = divmod(q, 2)
            self.base[i, :, 16 * r + 4:16 * r + 12, 16 * c + 4:16 * c + 12] += 1.0
        self.noise, self.interrupt_at, self.sig, self.calls = noise, interrupt_at, sig, 0
        if num_classes is not None:
            self.num_classes = num_classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.interrupt_at:
            os.kill(os.getpid(), self.sig)
        image = self.base[i] + self.noise * torch.randn(3, 32, 32) if self.noise else self.base[i]
        return {"image": image, "label": self.labels[i], "concepts": torch.eye(4)[self.labels[i]]}


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_writes_a_loadable_run_and_keeps_the_best_weights(tmp_path):
    model = tiny_model("vit-ti16", num_classes=4)
    val = Quadrants(16)
    result = fit(model, Quadrants(48), val, epochs=3, batch_size=8, lr=3e-3, out_dir=tmp_path, **QUIET)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for key in ("train_loss", "train_classification", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert key in result.history[-1]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    best = max(h["val_accuracy"] for h in result.history)
    assert result.best_metric == best and result.history[result.best_epoch - 1]["val_accuracy"] == best
    assert evaluate(result.model, val)["accuracy"] == pytest.approx(best)  # the kept weights are the best epoch's
    loaded = zoo.load(tmp_path).eval()
    x = val.base[:4]
    torch.testing.assert_close(loaded(x), result.model(x), rtol=0, atol=0)
    names = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert all(n.endswith((".safetensors", ".json")) for n in names) and "state.json" in names
    with pytest.raises(GlassViTError, match="already holds a training run"):
        fit(model, Quadrants(48), val, epochs=3, batch_size=8, out_dir=tmp_path, **QUIET)


RESUME = dict(epochs=3, batch_size=8, accumulate=2, lr=2e-3, backbone_lr=1e-3, warmup_epochs=1, grad_clip=1.0,
              freeze_backbone_epochs=1, val_fraction=0.25, **QUIET)
DROPOUT = dict(head_kwargs=dict(drop_rate=0.3))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, fit(tiny_model("vit-ti16", num_classes=4, **DROPOUT), Quadrants(64, noise=0.2), out_dir=out, **RESUME)


# 48 training + 16 validation accesses per epoch, 6 batches of 8, a step every 2 batches; the step in progress is
# finished before stopping: inside frozen epoch 1; after the last step of epoch 2 (before its validation); in epoch 3
@pytest.mark.parametrize("interrupt_at, sig", [(20, signal.SIGINT), (64 + 48, signal.SIGTERM), (128 + 9, signal.SIGINT)])
def test_resume_after_a_signal_ends_with_the_same_weights(tmp_path, uninterrupted, interrupt_at, sig):
    """Uninterrupted vs interrupted (SIGINT/SIGTERM) + resumed, with dropout, noise augmentation, accumulation, warm-up,
    clipping and a frozen first epoch: the final weights, the history and the saved model are identical."""
    full_dir, full = uninterrupted
    with pytest.raises(TrainingInterrupted, match="checkpoint saved"):
        fit(tiny_model("vit-ti16", num_classes=4, **DROPOUT), Quadrants(64, noise=0.2, interrupt_at=interrupt_at, sig=sig),
            out_dir=tmp_path, **RESUME)
    assert len(json.loads((tmp_path / "checkpoint" / "state.json").read_text())["history"]) < 3
    resumed = fit(tiny_model("vit-ti16", num_classes=4, seed=1, **DROPOUT), Quadrants(64, noise=0.2),
                  out_dir=tmp_path, resume=True, **RESUME)
    assert states_equal(resumed.model.state_dict(), full.model.state_dict())
    drop_time = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert drop_time(resumed.history) == drop_time(full.history)
    assert states_equal(read_weights(full_dir / "model.safetensors"), read_weights(tmp_path / "model.safetensors"))


def test_resume_refuses_other_settings(tmp_path):
    fit(tiny_model("vit-ti16", num_classes=4), Quadrants(16), epochs=1, batch_size=8, out_dir=tmp_path, **QUIET)
    with pytest.raises(GlassViTError, match=r"different settings \(lr: 0.001 -> 0.01"):
        fit(tiny_model("vit-ti16", num_classes=4), Quadrants(16), epochs=1, batch_size=8, lr=1e-2,
            out_dir=tmp_path, resume=True, **QUIET)


def test_accumulation_equals_the_large_batch(monkeypatch):
    """2 micro-batches of 8 per step give the gradient of one batch of 16 (same order, equal sizes)."""
    grads = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    small = fit(tiny_model("vit-ti16", num_classes=4), Quadrants(32), epochs=2, batch_size=8, accumulate=2,
                val_fraction=0, **QUIET)
    large = fit(tiny_model("vit-ti16", num_classes=4), Quadrants(32), epochs=2, batch_size=16, val_fraction=0, **QUIET)
    assert len(grads) == 8 and small.history[-1]["step"] == large.history[-1]["step"] == 4
    for a, b in zip(grads[:4], grads[4:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    a, b = small.model.state_dict(), large.model.state_dict()
    for k in a:  # Adam divides by sqrt(v): near-zero gradients amplify float noise to ~1e-5
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)


def test_frozen_backbone_epochs_train_only_the_head():
    model = tiny_model("vit-ti16", num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, Quadrants(16), epochs=1, batch_size=8, freeze_backbone_epochs=1, val_fraction=0, **QUIET)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_parameter_groups_and_schedule():
    model = tiny_model("vit-ti16", num_classes=4)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=0.05)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"]["lr"] == 1e-5 and groups["head"]["lr"] == 1e-3
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.05
    ids = lambda name: {id(p) for p in groups[name]["params"]}  # noqa: E731
    named = dict(model.named_parameters())
    for name in ("backbone.model.pos_embed", "backbone.model.cls_token", "backbone.model.norm.weight", "head.fc.bias"):
        assert id(named[name]) in ids("backbone_no_decay") | ids("head_no_decay")
    assert sum(len(g["params"]) for g in groups.values()) == len(named)
    optimizer = torch.optim.AdamW(list(groups.values()))
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=2, min_lr=0.0)
    lrs = []
    for step in range(11):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[2]["lr"])  # the head group
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[10] == pytest.approx(0.0)


class HookedHead(LinearHead):
    """A linear head that counts the trainer's hook calls and returns concept scores in aux."""

    steps = 0
    trained_on = None

    def forward(self, tokens):
        output = super().forward(tokens)
        output.aux["concepts"] = output.logits.softmax(-1)
        return output

    def after_optimizer_step(self, output, batch):
        assert not torch.is_grad_enabled() and "label" in batch
        HookedHead.steps += 1

    def after_training(self, model, loader):
        HookedHead.trained_on = sum(b["image"].shape[0] for b in loader)


def test_head_hooks_and_concept_accuracy():
    model = tiny_model("vit-ti16", num_classes=4)
    model.head = HookedHead(model.backbone.info, 4)
    result = fit(model, Quadrants(40), Quadrants(8), epochs=2, batch_size=8, accumulate=2,
                 select_metric="concept_accuracy", **QUIET)
    assert HookedHead.steps == 2 * 3 and HookedHead.trained_on == 40  # ceil(5 batches / 2) steps per epoch
    for prefix in ("train_", "val_"):
        assert 0 <= result.history[-1][prefix + "concept_accuracy"] <= 1
    # the concept scores are the class probabilities and the concepts the one-hot class: the two accuracies agree
    assert result.history[-1]["val_concept_accuracy"] == pytest.approx(result.history[-1]["val_accuracy"])


def test_metrics():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4]])
    concepts = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [float("nan")] * 3, [0.0, float("nan"), 1.0]])
    assert tuple(map(float, concept_hits(scores, concepts))) == (2.0, 3.0)  # the NaN row is unannotated
    totals = MetricTotals(multi_label=True)
    from glassvit.types import HeadOutput

    output = HeadOutput(torch.tensor([[2.0, -1.0, 3.0], [-2.0, 1.0, -1.0]]), tokens=None)
    totals.update({"loss": torch.tensor(1.5)}, output, {"label": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])})
    assert totals.result() == {"loss": 1.5, "accuracy": pytest.approx(5 / 6), "exact_match": 0.5}


def test_torchvision_style_pairs_train():
    pairs = [(item["image"], int(item["label"])) for item in (Quadrants(16)[i] for i in range(16))]
    result = fit(tiny_model("vit-ti16", num_classes=4), pairs, epochs=1, batch_size=8, val_fraction=0, **QUIET)
    assert result.history[0]["step"] == 2


class RecordingHead(LinearHead):
    images: list = []

    def after_training(self, model, loader):
        RecordingHead.images = [b["image"] for b in loader]


def test_after_training_reads_the_training_images_without_augmentation(tmp_path):
    from glassvit.training.datasets import Manifest
    from test_training_data import FLIP, square

    for i in range(4):
        square(tmp_path / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"image": f"{i}.png", "label": i}) for i in range(4)))
    model = tiny_model("vit-ti16", num_classes=4)
    model.head = RecordingHead(model.backbone.info, 4)
    data = Manifest(tmp_path / "m.jsonl", data_config=model.data_config, train=True, augment=FLIP)
    fit(model, data, epochs=1, batch_size=2, val_fraction=0.5, **QUIET)
    seen = torch.cat(RecordingHead.images)
    plain = data.for_eval()[0]["image"]  # all four images are the same picture
    assert len(seen) == 2 and all(torch.equal(image, plain) for image in seen)
    assert not torch.equal(data[0]["image"], plain)  # the training view is augmented (flipped)


def test_amp_on_cpu_trains():
    result = fit(tiny_model("vit-ti16", num_classes=4), Quadrants(16), epochs=1, batch_size=8, amp=True,
                 val_fraction=0, **QUIET)
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


class Bad(Quadrants):
    def __init__(self, change):
        super().__init__(8)
        self.change = change

    def __getitem__(self, i):
        item = super().__getitem__(i)
        self.change(item)
        return item


@pytest.mark.parametrize("data, match", [
    (Quadrants(8, num_classes=10), r"the training data has 10 classes but the model has 4; .*num_classes=10"),
    (Bad(lambda it: it.update(label=torch.tensor(7))), r"labels must lie in \[0, 4\)"),
    (Bad(lambda it: it.update(spatial_concepts=torch.zeros(16, 4))), r"\(B,64,K\) on the model's 8x8 token grid"),
    (Bad(lambda it: it.update(image=torch.zeros(3, 48, 48))), "expects .*32.* inputs, got"),
    (Bad(lambda it: it.pop("label")), "must yield dicts with 'image' and 'label'"),
    (Bad(lambda it: it["image"].fill_(float("nan"))), "the loss became nan"),
])
def test_bad_data_fails_clearly(data, match):
    with pytest.raises(GlassViTError, match=match):
        fit(tiny_model("vit-ti16", num_classes=4), data, epochs=1, batch_size=4, val_fraction=0, **QUIET)


def test_bad_settings_fail_clearly(tmp_path):
    model = tiny_model("vit-ti16", num_classes=4)
    with pytest.raises(GlassViTError, match="select_metric 'f1' is not measured"):
        fit(model, Quadrants(16), epochs=1, batch_size=8, select_metric="f1", **QUIET)
    with pytest.raises(GlassViTError, match="val_fraction=0.9 leaves"):
        fit(model, Quadrants(1), epochs=1, val_fraction=0.9, **QUIET)
    with pytest.raises(GlassViTError, match="warmup_epochs"):
        fit(model, Quadrants(8), epochs=1, warmup_epochs=2, **QUIET)


def test_blocks_a_head_runs_keep_the_backbone_rate_and_freeze_with_it():
    model = tiny_model("ex-vit-s16", num_classes=4)
    taken = {id(p) for m in model.backbone.handed_over for p in m.parameters()}
    assert taken and all(not n.startswith("backbone.") for n, p in model.named_parameters() if id(p) in taken)
    groups = param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=0.05)
    backbone = {id(p) for g in groups if g["name"].startswith("backbone") for p in g["params"]}
    assert taken <= backbone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    labels = Quadrants(8)
    multi_hot = [{**labels[i], "label": torch.eye(4)[labels.labels[i]]} for i in range(8)]
    fit(model, multi_hot, epochs=1, batch_size=4, freeze_backbone_epochs=1, val_fraction=0, **QUIET)
    named = dict(model.named_parameters())
    frozen = [n for n in named if id(named[n]) in taken | {id(p) for p in model.backbone.parameters()}]
    assert all(torch.equal(before[n], named[n].detach()) for n in frozen)
    assert not all(torch.equal(before[n], p.detach()) for n, p in named.items())


def test_fit_learns_on_digitscenes():
    """Real data: DigitScenes scenes of handwritten 0s and 1s (a tiny ViT from scratch, 8 epochs of ~11 steps) reach
    >= 75% accuracy on the test split's 0/1 scenes, which share no handwritten sample with training (measured: 87%)."""
    from torchvision.transforms import Normalize

    from glassvit.data import DigitScenes

    model = tiny_model("vit-ti16", num_classes=10)
    norm = Normalize(model.data_config["mean"], model.data_config["std"])

    def zeros_and_ones(split, n):
        scenes = DigitScenes(split, "single", size=32, num_scenes=n, transform=norm)
        return [item for item in (scenes[i] for i in range(n)) if int(item["label"]) in (0, 1)]

    result = fit(model, zeros_and_ones("train", 1000), epochs=8, batch_size=16, lr=2e-3, warmup_epochs=0.5,
                 val_fraction=0.2, **QUIET)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert evaluate(result.model, zeros_and_ones("test", 400))["accuracy"] >= 0.75
