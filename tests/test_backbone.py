"""The timm adapter: prefix tokens, grids, attention and hidden states, without changing timm's outputs."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from glassvit import GlassViTError, TokenRequest
from glassvit.models import Backbone
from helpers import TINY_SWIN, TINY_VIT

x = torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize(
    "name, kwargs, prefix, has_cls",
    [
        ("vit_base_patch16_224", TINY_VIT, 1, True),
        ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=4), 2, True),
        ("vit_base_patch16_reg4_gap_256", TINY_VIT, 4, False),
        ("vit_small_patch16_224", dict(TINY_VIT, reg_tokens=2), 3, True),
        ("deit3_small_patch16_224", TINY_VIT, 1, True),
    ],
)
def test_prefix_tokens_removed(name, kwargs, prefix, has_cls):
    torch.manual_seed(0)
    bb = Backbone(name, **kwargs).eval()
    tokens = bb(x)
    feats = bb.model.forward_features(x)
    assert tokens.num_prefix_tokens == prefix == bb.info.num_prefix_tokens
    assert tokens.grid == (8, 8) and tokens.patches.shape == (2, 64, feats.shape[-1])
    torch.testing.assert_close(tokens.patches, feats[:, prefix:])
    assert (tokens.cls is not None) == has_cls == bb.info.has_cls
    if has_cls:
        torch.testing.assert_close(tokens.cls, feats[:, 0])


def test_swin_tokens_on_grid():
    bb = Backbone("swin_base_patch4_window7_224", **TINY_SWIN).eval()
    tokens = bb(x)
    assert tokens.cls is None and tokens.num_prefix_tokens == 0
    h, w = tokens.grid
    assert tokens.patches.shape == (2, h * w, 48) and (h, w) == (8, 8)
    with pytest.raises(GlassViTError, match="not available"):
        bb(x, TokenRequest(attention=(-1,)))


def test_attention_and_hidden_match_timm():
    torch.manual_seed(0)
    bb = Backbone("vit_base_patch16_224", **TINY_VIT).eval()
    plain = bb(x)
    rich = bb(x, TokenRequest(attention=(0, -1), hidden=(0,)))
    torch.testing.assert_close(rich.patches, plain.patches, rtol=1e-5, atol=1e-5)
    assert set(rich.attentions) == {0, 1} and set(rich.hidden) == {0}
    a = rich.attentions[1]
    assert a.shape == (2, 3, 65, 65)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, 65))
    # the recorded attention is the block's own: recompute block 1 by hand from the hidden state of block 0
    blk = bb.model.blocks[1]
    h = blk.norm1(rich.hidden[0])
    q, k, _ = blk.attn.qkv(h).reshape(2, 65, 3, 3, 16).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(a, ((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1), rtol=1e-5, atol=1e-6)
    # fused attention is restored after the pass
    assert all(b.attn.fused_attn == timm.layers.use_fused_attn() for b in bb.model.blocks)
    assert bb(x).attentions == {}


def test_gradients_flow_through_recorded_attention():
    bb = Backbone("vit_base_patch16_224", **TINY_VIT)
    t = bb(x, TokenRequest(attention=(-1,)))
    (g,) = torch.autograd.grad(t.patches.sum(), t.attentions[1])
    assert g.shape == t.attentions[1].shape and g.abs().sum() > 0


def test_dynamic_image_size():
    bb = Backbone("vit_base_patch16_224", **TINY_VIT, dynamic_img_size=True).eval()
    assert bb(torch.randn(1, 3, 48, 64)).grid == (12, 16)
    with pytest.raises(GlassViTError, match="multiple of the patch size"):
        bb(torch.randn(1, 3, 30, 32))


def test_bad_block_index():
    bb = Backbone("vit_base_patch16_224", **TINY_VIT)
    with pytest.raises(GlassViTError, match="out of range"):
        bb(x, TokenRequest(hidden=(5,)))


def test_data_config_carries_pretrained_cfg():
    bb = Backbone("vit_base_patch16_224", **TINY_VIT)
    dc = bb.data_config
    assert dc["input_size"] == (3, 32, 32)
    assert tuple(dc["mean"]) == (0.5, 0.5, 0.5) and tuple(dc["std"]) == (0.5, 0.5, 0.5)
    assert tuple(Backbone("deit3_small_patch16_224", **TINY_VIT).data_config["mean"]) == (0.485, 0.456, 0.406)


def test_pretrained_from_local_file(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("vit_base_patch16_224", num_classes=1000, **TINY_VIT)
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    bb = Backbone("vit_base_patch16_224", pretrained_file=str(path), **TINY_VIT)
    for k, v in bb.model.state_dict().items():
        torch.testing.assert_close(v, source.state_dict()[k])


def test_unknown_backbone_and_unreachable_weights(tmp_path):
    with pytest.raises(GlassViTError, match="unknown timm backbone 'vit_bsae_patch16_224'.*vit_base_patch16_224"):
        Backbone("vit_bsae_patch16_224")
    with pytest.raises(GlassViTError, match="missing.safetensors does not exist"):
        Backbone("vit_base_patch16_224", pretrained_file=str(tmp_path / "missing.safetensors"), **TINY_VIT)


def test_backbone_from_a_saved_glassvit_model(tmp_path):
    from helpers import tiny_model

    source = tiny_model("vit-b16", num_classes=3, seed=5).eval()
    source.save_pretrained(tmp_path / "source")
    bb = Backbone("vit_base_patch16_224", pretrained_file=str(tmp_path / "source"), **TINY_VIT).eval()
    torch.testing.assert_close(bb(x).patches, source.backbone(x).patches)
    with pytest.raises(GlassViTError, match="do not match"):
        Backbone("vit_base_patch16_224", pretrained_file=str(tmp_path / "source"), **dict(TINY_VIT, depth=3))
