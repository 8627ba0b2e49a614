"""timm backbone -> Tokens.

Any timm ViT-family model (ViT, DeiT/DeiT-III, register or distillation tokens) or Swin is wrapped unchanged: the
adapter calls timm's own `forward_features`, strips the prefix tokens (`num_prefix_tokens`), and reads attention
probabilities and hidden states through forward hooks. Attention is only computed explicitly in the blocks a head
asks for, by switching timm's fused attention off there for the duration of one forward pass; every other block,
and every forward that asks for nothing, runs timm's code path untouched.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
from einops import rearrange
from torch import Tensor, nn

from .. import serialization
from ..errors import GlassViTError, unknown
from ..types import BackboneInfo, TokenRequest, Tokens


def create_timm_model(name: str, *, pretrained: bool = False, pretrained_file: str | None = None, **kwargs) -> nn.Module:
    """timm.create_model without a classifier; clear errors for unknown names and unreachable weights."""
    if not timm.is_model(name):
        raise unknown("timm backbone", name, timm.list_models())
    if pretrained_file is not None and Path(pretrained_file).is_dir():
        model = create_timm_model(name, **kwargs)
        _load_glassvit_backbone(model, Path(pretrained_file))
        return model
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise GlassViTError(f"pretrained_file {pretrained_file} does not exist")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
    try:
        return timm.create_model(name, pretrained=pretrained or pretrained_file is not None, num_classes=0, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        if not (pretrained or pretrained_file):
            raise GlassViTError(f"cannot build timm backbone {name!r} with {kwargs}: {e}") from e
        raise GlassViTError(
            f"could not load pretrained weights for {name!r} ({type(e).__name__}: {str(e).split(chr(10))[0][:200]}). "
            "Offline? Point at a local file with pretrained_file=PATH (a .safetensors of the timm weights), or fill "
            "the Hugging Face cache (HF_HUB_CACHE) on a connected machine and set HF_HUB_OFFLINE=1."
        ) from e


def _load_glassvit_backbone(model: nn.Module, directory: Path) -> None:
    """Copy the backbone weights of a saved glassvit model (a `save_pretrained` or run directory) into `model`.

    This is how a new head starts from another model's fine-tuned backbone, e.g. the bundled DigitScenes one.
    """
    prefix = "backbone.model."
    state = serialization.read_weights(directory / serialization.WEIGHTS_NAME)
    backbone = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    serialization.load_state_strict(model, backbone, f"the backbone of {directory}")


class Backbone(nn.Module):
    """Wraps a timm model and returns `Tokens` (see glassvit.types).

    Args:
        name: a timm model name, e.g. "vit_base_patch16_224".
        pretrained: load timm's pretrained weights.
        pretrained_file: a local timm weights file, or a saved glassvit model directory whose backbone weights to
            start from (implies pretrained).
        **kwargs: timm model arguments (img_size, patch_size, embed_dim, depth, num_heads, ...).
    """

    def __init__(self, name: str, pretrained: bool = False, pretrained_file: str | None = None, **kwargs: Any):
        super().__init__()
        self.name = name
        self.model = create_timm_model(name, pretrained=pretrained, pretrained_file=pretrained_file, **kwargs)
        self.is_nhwc = not hasattr(self.model, "blocks")
        self.handed_over: list[nn.Module] = []  # blocks given to a head by split_off_blocks
        self.in_chans = self.model.patch_embed.proj.in_channels
        with torch.no_grad():
            self.info = self._probe()

    def _probe(self) -> BackboneInfo:
        img = self.model.patch_embed.img_size
        was_training = self.model.training
        self.model.eval()
        tokens = self(torch.zeros(1, self.in_chans, *img))
        self.model.train(was_training)
        blocks = self._blocks()
        return BackboneInfo(
            embed_dim=tokens.patches.shape[-1],
            grid=tokens.grid,
            num_prefix_tokens=tokens.num_prefix_tokens,
            has_cls=tokens.cls is not None,
            num_blocks=len(blocks) if blocks is not None else 0,
            num_heads=blocks[-1].attn.num_heads if blocks is not None else 0,
            image_size=tuple(img),
        )

    @property
    def data_config(self) -> dict[str, Any]:
        """timm's data config (mean, std, interpolation, crop) with input_size set to this backbone's input."""
        cfg = timm.data.resolve_model_data_config(self.model)
        cfg["input_size"] = (self.in_chans, *self.model.patch_embed.img_size)
        return cfg

    def _blocks(self) -> nn.Sequential | None:
        return None if self.is_nhwc else self.model.blocks

    def split_off_blocks(self, n: int) -> tuple[nn.Sequential, nn.Module]:
        """Hand the last `n` transformer blocks and the final norm over to a head that runs them itself.

        For heads that replace the last blocks with their own variant, initialised from these (pretrained) weights,
        without running any block twice. Afterwards the backbone stops after block L-n: `Tokens.cls`/`patches` and
        requested hidden states are that block's raw output (no final norm), and `info.num_blocks` is L-n. The
        returned modules leave the backbone's state_dict; the caller registers them. ViT-family backbones only.
        The backbone keeps an unregistered reference to them in `handed_over`, so that a trainer still treats their
        (pretrained) parameters as backbone parameters (learning rate, freezing).
        """
        blocks = self._blocks()
        if blocks is None:
            raise GlassViTError(f"{self.name!r} has no sequence of transformer blocks to split off (windowed, hierarchical backbone)")
        if not 1 <= n < len(blocks):
            raise GlassViTError(f"can split off 1 to {len(blocks) - 1} blocks of {self.name!r}, not {n}")
        keep = len(blocks) - n
        taken, self.model.blocks = blocks[keep:], blocks[:keep]
        norm, self.model.norm = self.model.norm, nn.Identity()
        self.handed_over = [taken, norm]  # a plain list: not registered, not in this module's state_dict
        self.info = replace(self.info, num_blocks=keep)
        return taken, norm

    def _resolve(self, indices: tuple[int, ...], what: str) -> list[int]:
        blocks = self._blocks()
        if not indices:
            return []
        if blocks is None:
            raise GlassViTError(f"{what} of single blocks is not available for {self.name!r} (windowed, hierarchical backbone)")
        n = len(blocks)
        out = []
        for i in indices:
            if not -n <= i < n:
                raise GlassViTError(f"block index {i} out of range for {self.name!r} with {n} blocks")
            out.append(i % n)
        return out

    def check_input(self, x: Tensor) -> None:
        """Raise one clear error for inputs the backbone cannot take (B,C,H,W with the right C and size)."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise GlassViTError(f"expected images as a (B,{self.in_chans},H,W) tensor, got {shape}")
        if x.shape[1] != self.in_chans:
            raise GlassViTError(f"expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        pe = self.model.patch_embed
        size = tuple(x.shape[-2:])
        if getattr(self.model, "dynamic_img_size", False):
            ph, pw = pe.patch_size
            if size[0] % ph or size[1] % pw:
                raise GlassViTError(f"input size {size} is not a multiple of the patch size {(ph, pw)}")
        elif size != tuple(pe.img_size):
            raise GlassViTError(
                f"{self.name!r} expects {tuple(pe.img_size)} inputs, got {size}; resize the images or build the "
                f"model with img_size={size[0]} (backbone_kwargs)"
            )

    def forward(self, x: Tensor, request: TokenRequest = TokenRequest()) -> Tokens:
        """images (B,C,H,W) -> Tokens."""
        self.check_input(x)
        attn_idx = self._resolve(request.attention, "attention")
        hidden_idx = self._resolve(request.hidden, "hidden states")
        with self._recording(attn_idx, hidden_idx) as store:
            feats = self.model.forward_features(x)
        if feats.ndim == 4:
            h, w = feats.shape[1:3]
            patches, cls, prefix = rearrange(feats, "b h w d -> b (h w) d"), None, 0
        else:
            prefix = self.model.num_prefix_tokens
            h, w = self._grid(x)
            patches = feats[:, prefix:]
            cls = feats[:, 0] if getattr(self.model, "cls_token", None) is not None else None
        return Tokens(
            cls=cls,
            patches=patches,
            grid=(h, w),
            image_size=tuple(x.shape[-2:]),
            num_prefix_tokens=prefix,
            attentions=store["attention"],
            hidden=store["hidden"],
        )

    def _grid(self, x: Tensor) -> tuple[int, int]:
        ph, pw = self.model.patch_embed.patch_size
        return x.shape[-2] // ph, x.shape[-1] // pw

    @contextmanager
    def _recording(self, attn_idx: list[int], hidden_idx: list[int]):
        store: dict[str, dict[int, Tensor]] = {"attention": {}, "hidden": {}}
        blocks = self._blocks()
        handles, fused = [], {}
        try:
            for i in attn_idx:
                attn = blocks[i].attn
                fused[i] = attn.fused_attn
                attn.fused_attn = False
                handles.append(attn.attn_drop.register_forward_hook(_saver(store["attention"], i, use_input=True)))
            for i in hidden_idx:
                handles.append(blocks[i].register_forward_hook(_saver(store["hidden"], i, use_input=False)))
            yield store
        finally:
            for h in handles:
                h.remove()
            for i, f in fused.items():
                blocks[i].attn.fused_attn = f


def _saver(store: dict[int, Tensor], index: int, use_input: bool):
    def hook(module, inputs, output):
        store[index] = inputs[0] if use_input else output

    return hook
