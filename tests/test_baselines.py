"""Post-hoc baselines: one Explanation type, shapes, class-specificity, and cases with a known answer."""

import subprocess
import sys

import pytest
import torch

from glassvit import GlassViTError, zoo
from glassvit.evaluation import baselines
from glassvit.explainers import available_explainers
from glassvit.types import TokenRequest
from helpers import TINY_IMG, TINY_SWIN, tiny_model

METHODS = ["attention", "rollout", "chefer", "gradcam", "ig"]
CLASS_SPECIFIC = ["chefer", "gradcam", "ig"]
FAST = {"ig": {"steps": 4}}  # keyword arguments that keep the suite quick


@pytest.fixture(scope="module")
def model():
    return tiny_model("vit-ti16", num_classes=5).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(1))


def test_registered_lazily_without_imports():
    code = ("import sys, torch; sys.path.insert(0, 'tests'); from helpers import tiny_model; "
            "m = tiny_model('vit-ti16').eval(); assert 'glassvit.evaluation' not in sys.modules; "
            "print(m.explain(torch.randn(1, 3, 32, 32), method='rollout').method)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "rollout"
    assert set(METHODS) <= set(available_explainers())


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_contract(model, images, method):
    e = model.explain(images, method=method, **FAST.get(method, {}))
    assert e.method == method
    assert e.saliency.shape == (3, TINY_IMG, TINY_IMG)
    assert torch.isfinite(e.saliency).all() and (e.saliency >= 0).all() and e.saliency.sum() > 0
    assert not e.saliency.requires_grad
    torch.testing.assert_close(e.logits, model(images))
    torch.testing.assert_close(e.target, e.logits.argmax(-1))
    given = model.explain(images, target=torch.tensor([0, 4, 2]), method=method, **FAST.get(method, {}))
    assert given.target.tolist() == [0, 4, 2]
    assert not any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_class_specificity(model, images, method):
    a = model.explain(images, target=0, method=method, **FAST.get(method, {})).saliency
    b = model.explain(images, target=3, method=method, **FAST.get(method, {})).saliency
    if method in CLASS_SPECIFIC:
        assert not torch.allclose(a, b)
    else:
        torch.testing.assert_close(a, b)


def test_raw_attention_is_last_block_cls_row(model, images):
    tokens = model.backbone(images, TokenRequest(attention=(-1,)))
    cls_row = tokens.attentions[1].mean(1)[:, 0, 1:]  # (B,N): CLS -> patches, mean over heads
    e = model.explain(images, method="attention")
    torch.testing.assert_close(e.details["grid_saliency"].flatten(1), cls_row)


def test_rollout_matrix_known_cases():
    eye = torch.eye(4).expand(1, 2, 4, 4)
    torch.testing.assert_close(baselines.rollout_matrix([eye, eye]), torch.eye(4)[None])
    uniform = torch.full((1, 2, 4, 4), 0.25)
    one = baselines.rollout_matrix([uniform])
    torch.testing.assert_close(one, 0.5 * torch.full((1, 4, 4), 0.25) + 0.5 * torch.eye(4))
    torch.testing.assert_close(baselines.rollout_matrix([uniform, uniform]), one @ one)
    torch.testing.assert_close(one.sum(-1), torch.ones(1, 4))


def test_gradcam_equals_cam_for_a_linear_head_on_final_tokens(images):
    """One block and a mean-pooled linear head: Grad-CAM's weights are W_t / N, so it is exactly CAM (the head's own
    explanation)."""
    model = tiny_model("vit-ti16", backbone_kwargs=dict(depth=1), pool="avg").eval()
    cam = model.explain(images, method="gradcam")
    native = model.explain(images)
    torch.testing.assert_close(cam.saliency, native.saliency)


def test_integrated_gradients_completeness(model, images):
    e = model.explain(images[:2], method="ig", steps=16, target=1)
    gap = model(images[:2])[:, 1] - model(torch.zeros_like(images[:2]))[:, 1]
    torch.testing.assert_close(e.details["attribution"].sum((1, 2, 3)), gap, rtol=0.02, atol=0.02)
    one_point_per_pass = model.explain(images[:2], method="ig", steps=16, target=1, max_batch=2)
    torch.testing.assert_close(one_point_per_pass.details["attribution"], e.details["attribution"])
    mean_base = model.explain(images[:2], method="ig", steps=4, baseline="mean", reduce="abs")
    assert (mean_base.saliency >= 0).all()
    with pytest.raises(GlassViTError, match="reduce"):
        model.explain(images, method="ig", reduce="square")


def test_frozen_model_still_explained(images):
    model = tiny_model("vit-ti16").eval().requires_grad_(False)
    for method in ("chefer", "gradcam"):
        assert model.explain(images, method=method).saliency.sum() > 0


def test_hierarchical_backbone(images):
    torch.manual_seed(0)
    model = zoo.load("vit-ti16", num_classes=5, backbone="swin_tiny_patch4_window7_224",
                     backbone_kwargs=dict(TINY_SWIN)).eval()
    for method in ("gradcam", "ig"):
        e = model.explain(images, method=method, **({"steps": 4} if method == "ig" else {}))
        assert e.saliency.shape == (3, TINY_IMG, TINY_IMG) and (e.saliency >= 0).all()
    with pytest.raises(GlassViTError, match="not available"):
        model.explain(images, method="rollout")


def test_unknown_method_lists_builtins(model, images):
    with pytest.raises(GlassViTError, match="rollout"):
        model.explain(images, method="rolout")
    with pytest.raises(GlassViTError, match="head_fusion"):
        model.explain(images, method="rollout", head_fusion="median")


def _one_per_head_and_backbone_kind() -> list[str]:
    chosen: dict[tuple[str, bool], str] = {}
    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        chosen.setdefault((spec.head, "swin" in spec.backbone), name)
    return sorted(chosen.values())


@pytest.mark.parametrize("name", _one_per_head_and_backbone_kind())
def test_every_head(name, images):
    """Every head (one zoo model each, ViT and Swin backbones): heads that run the backbone's last blocks themselves
    (eX-ViT) or read other tokens still give gradient-based maps."""
    model = tiny_model(name).eval()
    windowed = "swin" in model.config.backbone
    for method in ("gradcam", "chefer"):
        if windowed and method == "chefer":
            with pytest.raises(GlassViTError, match="not available"):
                model.explain(images, method=method)
            continue
        e = model.explain(images, method=method)
        assert e.saliency.shape == (3, TINY_IMG, TINY_IMG) and (e.saliency >= 0).all() and e.saliency.sum() > 0
