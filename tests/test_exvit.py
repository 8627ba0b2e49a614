"""eX-ViT head: loss terms against hand-computed values, the attribute decomposition, E-MHA's carry-over of the
backbone's last block, pseudo masks, and learning to segment DigitScenes from image labels."""

import math

import pytest
import torch
import torch.nn.functional as F

from glassvit import GlassViTError, zoo
from glassvit.data import DigitScenes
from glassvit.evaluation.metrics import confusion_matrix, miou_from_confusion
from glassvit.heads import build_head
from glassvit.heads.exvit import (attribute_maps, diversity_loss, global_attribute_loss, label_maps,
                                  local_discriminability_loss)
from glassvit.types import BackboneInfo
from helpers import TINY_IMG, TINY_VIT, tiny_model


def softplus(v):
    return math.log1p(math.exp(v))


def test_global_loss_by_hand():
    logits, present = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    expected = (softplus(-0.0) + softplus(2.0)) / 2  # BCE(0, 1) and BCE(2, 0)
    assert global_attribute_loss(logits, present, multi_label=True).item() == pytest.approx(expected, rel=1e-6)
    expected_ce = -math.log(1 / (1 + math.exp(2.0)))  # softmax of class 0 against logits (0, 2)
    assert global_attribute_loss(logits, present, multi_label=False).item() == pytest.approx(expected_ce, rel=1e-6)


def test_local_loss_by_hand():
    # one image, two patches, two classes; class 0 present, class 1 absent
    evidence = torch.tensor([[[1.0, -1.0], [-2.0, 3.0]]])  # (B,N,C) m_c(i)
    present = torch.tensor([[1.0, 0.0]])
    positive = softplus(-1.0)  # BCE(max_i m_0(i) = 1, 1)
    negative = (softplus(-1.0) + softplus(3.0)) / 2  # mean_i BCE(m_1(i), 0)
    expected = (positive + negative) / 2  # mean over B*C = 2 entries
    assert local_discriminability_loss(evidence, present).item() == pytest.approx(expected, rel=1e-6)


def test_diversity_loss_by_hand():
    # maps a0 = (1,0), a1 = (1,1), a2 = (0,0): cos(a0,a1) = 1/sqrt(2), an empty map is orthogonal to all
    a = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]])  # (B,N,K)
    expected = 2 * (1 / math.sqrt(2)) / (3 * 2)
    assert diversity_loss(a).item() == pytest.approx(expected, rel=1e-6)
    assert diversity_loss(torch.eye(3)[None]).item() == pytest.approx(0.0)  # disjoint maps
    assert diversity_loss(torch.ones(2, 4, 1)).item() == 0.0
    # counted pairs only: image 0 counts (0,1) -> 1/sqrt(2); image 1 counts none and is left out of the mean
    pairs = torch.zeros(2, 3, 3, dtype=torch.bool)
    pairs[0, 0, 1] = pairs[0, 1, 0] = True
    assert diversity_loss(a.expand(2, -1, -1), pairs).item() == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def test_diversity_counts_pairs_of_one_present_class():
    model = tiny_model("ex-vit-s16", num_classes=2, num_attributes=4)  # attributes 0,2 -> class 0; 1,3 -> class 1
    pairs = model.head.diversity_pairs(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    expected = torch.zeros(2, 4, 4, dtype=torch.bool)
    expected[:, 0, 2] = expected[:, 2, 0] = True
    expected[1, 1, 3] = expected[1, 3, 1] = True
    expected[:, range(4), range(4)] = torch.tensor([[True, False, True, False], [True] * 4])
    assert torch.equal(pairs, expected)


def test_attribute_maps_are_a_kernel_of_the_cosine():
    patches, protos = torch.tensor([[[3.0, 0.0], [0.0, -2.0]]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    cos = torch.tensor([[[1 / math.sqrt(2), 0.0], [-1 / math.sqrt(2), -1.0]]])
    torch.testing.assert_close(attribute_maps(patches, protos, 2.0), torch.exp(2.0 * (cos - 1)))
    assert attribute_maps(protos[None], protos, 5.0).diagonal(dim1=1, dim2=2).allclose(torch.ones(1, 2))


def test_loss_terms_are_weighted_and_summed():
    model = tiny_model("ex-vit-s16", num_classes=4, global_weight=0.5, local_weight=2.0, diversity_weight=3.0)
    x, y = torch.randn(3, 3, TINY_IMG, TINY_IMG), torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]).float()
    out = model.forward_detailed(x)
    terms = model.loss(out, {"label": y})
    assert set(terms) == {"global", "local", "diversity", "loss"}
    torch.testing.assert_close(terms["loss"], 0.5 * terms["global"] + 2 * terms["local"] + 3 * terms["diversity"])
    torch.testing.assert_close(terms["global"], F.binary_cross_entropy_with_logits(out.logits, y))
    torch.testing.assert_close(terms["local"], local_discriminability_loss(model.head.patch_evidence(out), y))
    # single-label models take class indices
    single = tiny_model("ex-vit-s16", num_classes=4, multi_label=False)
    out = single.forward_detailed(x)
    terms = single.loss(out, {"label": torch.tensor([0, 3, 1])})
    torch.testing.assert_close(terms["global"], F.cross_entropy(out.logits, torch.tensor([0, 3, 1])))


@pytest.mark.parametrize("batch", [1, 3])
def test_logits_decompose_into_attribute_contributions(batch):
    model = tiny_model("ex-vit-s16", num_classes=4, locality=0.3).eval()
    with torch.no_grad():
        model.head.bias.normal_()
        x = torch.randn(batch, 3, TINY_IMG, TINY_IMG)
        out = model.forward_detailed(x)
        w = model.head.class_weights
        assert (w >= 0).all()
        # every class: y_c = b_c + sum_k W_ck s_k  and  y_c = b_c + mean over patches of the class map
        torch.testing.assert_close(out.logits, model.head.bias + (w * out.aux["scores"][:, None]).sum(-1))
        maps = model.head.class_maps(out)
        assert maps.shape == (batch, 4, 8, 8) and (maps >= 0).all()
        torch.testing.assert_close(out.logits, model.head.bias + maps.mean((-2, -1)))
        for target in range(4):
            e = model.explain(x, target=target)
            torch.testing.assert_close(e.contributions.sum(1) + e.details["bias"], e.logits[:, target])
            assert e.components.shape == (batch, model.head.num_attributes, 8, 8)
            assert len(e.component_names) == model.head.num_attributes
            torch.testing.assert_close(e.details["class_map"], maps[:, target])
            assert (e.saliency >= 0).all() and e.saliency.shape == (batch, TINY_IMG, TINY_IMG)
            assert e.details["pseudo_mask"].shape == (batch, TINY_IMG, TINY_IMG)
            torch.testing.assert_close(e.details["emha_attention"].sum(-1), torch.ones(batch, 64))


def test_emha_takes_over_the_last_block_without_running_it_twice():
    """At locality 0 the E-MHA block is the backbone's own last block: same tokens as the plain model, one call."""
    base = tiny_model("vit-s16", num_classes=4).eval()  # same seed: the same backbone weights
    model = tiny_model("ex-vit-s16", num_classes=4, locality=0.0).eval()
    assert model.backbone.info.num_blocks == 1 and len(model.backbone.model.blocks) == 1
    assert "head.blocks.1.attn.qkv.weight" in model.state_dict()
    assert not any(k.startswith("backbone.model.blocks.1.") for k in model.state_dict())
    calls = []
    blocks = [*model.backbone.model.blocks, *model.head.blocks]
    hooks = [b.register_forward_hook(lambda m, i, o: calls.append(m)) for b in blocks]
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        out = model.forward_detailed(x)
        reference = base.forward_detailed(x).tokens.patches
    for h in hooks:
        h.remove()
    assert len(calls) == 2 and {id(c) for c in calls} == {id(b) for b in blocks}
    torch.testing.assert_close(out.aux["attributes"], attribute_maps(reference, model.head.prototypes, 4.0))


def test_locality_bias_and_its_gradient():
    model = tiny_model("ex-vit-s16", num_classes=3, locality=0.5)
    bias = model.head.locality_bias((2, 3), prefix=1)
    assert bias.shape == (1, model.backbone.info.num_heads, 7, 7)
    assert (bias[:, :, 0] == 0).all() and (bias[:, :, :, 0] == 0).all()
    # patches (0,0) and (1,2): squared distance 1 + 4 = 5
    assert bias[0, 0, 1, 6].item() == pytest.approx(-2.5)
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    model.loss(model.forward_detailed(x), {"label": torch.tensor([[1.0, 0, 0], [0, 1, 1]])})["loss"].backward()
    for p in (model.head.locality, model.head.prototypes, model.head.evidence):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_label_maps_by_hand():
    maps = torch.zeros(1, 3, 1, 4)
    maps[0, 0, 0] = torch.tensor([4.0, 2.0, 0.0, 0.0])  # class 0: peak 4
    maps[0, 1, 0] = torch.tensor([0.0, 1.5, 0.2, 0.0])  # class 1: peak 1.5
    maps[0, 2, 0] = torch.tensor([9.0, 9.0, 9.0, 9.0])  # class 2: absent from the image
    present = torch.tensor([[True, True, False]])
    # normalised: class 0 (1, .5, 0, 0), class 1 (0, 1, .13, 0); threshold 0.3
    assert label_maps(maps, present, 0.3).tolist() == [[[1, 2, 0, 0]]]
    assert label_maps(maps, present, 0.0).tolist() == [[[1, 2, 2, 1]]]


def test_pseudo_masks_and_refinement():
    model = tiny_model("ex-vit-s16", num_classes=4, locality=0.3).eval()
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        out = model.forward_detailed(x)
        present = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]]).bool()
        masks = model.head.pseudo_masks(out, present)
        refined = model.head.pseudo_masks(out, present, refine_steps=2)
        everything = model.head.pseudo_masks(out, present, threshold=0.0)
    for m in (masks, refined):
        assert m.shape == (2, TINY_IMG, TINY_IMG) and m.dtype == torch.long
    assert set(masks[1].unique().tolist()) <= {0, 4}  # only the image's labels, as c + 1
    assert (everything > 0).all()  # a zero threshold leaves no background


def test_bad_configurations():
    with pytest.raises(GlassViTError, match="depth"):
        tiny_model("ex-vit-s16", depth=2)
    with pytest.raises(GlassViTError, match="num_attributes"):
        tiny_model("ex-vit-s16", num_attributes=0)
    with pytest.raises(GlassViTError, match="sharpness"):
        tiny_model("ex-vit-s16", sharpness=0.0)
    with pytest.raises(GlassViTError, match="loss weights"):
        tiny_model("ex-vit-s16", local_weight=-1.0)
    info = BackboneInfo(embed_dim=48, grid=(8, 8), num_prefix_tokens=1, has_cls=True, num_blocks=2, num_heads=3,
                        image_size=(32, 32))
    head = build_head("exvit", info, 3)
    tokens = tiny_model("vit-s16").backbone(torch.randn(1, 3, TINY_IMG, TINY_IMG))
    with pytest.raises(GlassViTError, match="zoo.load"):
        head(tokens)
    with pytest.raises(GlassViTError, match="Swin"):
        zoo.load("ex-vit-s16", num_classes=3, backbone="swin_tiny_patch4_window7_224",
                 backbone_kwargs=dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=(1, 1),
                                      num_heads=(1, 2)))


def _pseudo_mask_miou(model, images, labels, masks):
    with torch.no_grad():
        out = model.eval().forward_detailed(images)
        pred = model.head.pseudo_masks(out, labels.bool())
    any_digit = masks.any(1)
    gt = torch.where(any_digit, masks.float().argmax(1) + 1, torch.zeros_like(any_digit, dtype=torch.long))
    return float(miou_from_confusion(confusion_matrix(pred, gt, 11))[1])


def test_training_with_the_losses_improves_pseudo_masks():
    """A fresh eX-ViT head on the bundled DigitScenes backbone, trained briefly on multi-digit scenes from image labels
    only: pseudo-mask mIoU (background + 10 digits) against the true per-digit masks rises."""
    from glassvit.training import fit
    from glassvit.training.datasets import open_data

    torch.manual_seed(0)
    model = zoo.load("ex-vit-digits", pretrained_file=str(zoo.BUNDLED_DIR / "vit-digits"), locality=0.0,
                     local_weight=1.0, diversity_weight=0.1)  # the head's defaults: all three loss terms
    train = open_data("digitscenes:multi", model, split="train", num_scenes=256)
    test = open_data("digitscenes:multi", model, split="test", num_scenes=64)
    items = [test[i] for i in range(len(test))]
    images, labels, masks = (torch.stack([it[k] for it in items]) for k in ("image", "label", "masks"))
    before = _pseudo_mask_miou(model, images, labels, masks)
    fit(model, train, val_data=None, val_fraction=0, epochs=2, batch_size=32, lr=1e-3, backbone_lr=2e-4, seed=0,
        progress=False)
    after = _pseudo_mask_miou(model, images, labels, masks)
    assert after > before + 0.04, (before, after)  # measured: 0.072 -> 0.132
