"""The contract of DESIGN.md, checked for every registered zoo model (a head is covered the moment it registers)."""

import pytest
import torch

from glassvit import GlassViTError, zoo
from glassvit.types import Explanation
from helpers import TINY_IMG, tiny_model

MODELS = zoo.list_models()


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return tiny_model(request.param, num_classes=5).eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes(model, batch):
    x = torch.randn(batch, 3, TINY_IMG, TINY_IMG)
    logits = model(x)
    assert logits.shape == (batch, 5)
    assert torch.isfinite(logits).all()
    detailed = model.forward_detailed(x)
    torch.testing.assert_close(detailed.logits, logits)


@pytest.mark.parametrize("batch", [1, 3])
def test_explain_contract(model, batch):
    x = torch.randn(batch, 3, TINY_IMG, TINY_IMG)
    e = model.explain(x)
    assert isinstance(e, Explanation)
    assert e.logits.shape == (batch, 5)
    torch.testing.assert_close(e.target, e.logits.argmax(-1))
    assert e.saliency.shape == (batch, TINY_IMG, TINY_IMG)
    assert torch.isfinite(e.saliency).all() and (e.saliency >= 0).all()
    if e.components is not None:
        assert e.components.shape[:2] == (batch, len(e.component_names))
    if e.contributions is not None:
        assert e.contributions.shape[0] == batch


def test_explain_given_target(model):
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    e = model.explain(x, target=torch.tensor([4, 1]))
    assert e.target.tolist() == [4, 1]
    assert model.explain(x, target=2).target.tolist() == [2, 2]
    with pytest.raises(GlassViTError, match="target classes"):
        model.explain(x, target=7)


def test_loss_is_differentiable(model):
    model.train()
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    out = model.forward_detailed(x)
    labels = torch.tensor([0, 3])
    batch = {"image": x, "label": torch.stack([torch.eye(5)[i] for i in labels]) if model.head.multi_label else labels}
    terms = model.loss(out, batch)
    assert "loss" in terms and terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    model.zero_grad()
    model.eval()


def test_save_load_round_trip(model, tmp_path):
    x = torch.randn(3, 3, TINY_IMG, TINY_IMG)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = zoo.load(tmp_path).eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.explain(x).saliency, model.explain(x).saliency, rtol=0, atol=0)


def test_bad_inputs(model):
    with pytest.raises(GlassViTError, match="input channels"):
        model(torch.randn(1, 1, TINY_IMG, TINY_IMG))
    with pytest.raises(GlassViTError, match="expects|multiple of the patch size"):
        model(torch.randn(1, 3, TINY_IMG + 3, TINY_IMG + 3))
    with pytest.raises(GlassViTError, match=r"\(B,3,H,W\)"):
        model(torch.randn(3, TINY_IMG, TINY_IMG))
