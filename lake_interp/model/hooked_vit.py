"""HookedViT: a vision-only ViT (timm `VisionTransformer`, e.g. DINOv2) as a HookedCLIP without text tower.

The same hook names as HookedCLIP's vision tower, under `visual.` (`visual.hook_embed`,
`visual.blocks.{l}.mlp.hook_post`, `visual.ln_post.*`, `visual.hook_pooled`, ...; registry:
`lake_interp.model.hook_sites`); there are no `text.*` hooks, `encode_text` and image-text logits
raise ValueError, `tokenizer` is None. Every tool that reads patch tokens (LAKE's visual branch, the
interp tools) works on it; LAKE's semantic branch needs a text tower (use text_weight=0).

    model = HookedViT.from_pretrained("vit_small_patch14_reg4_dinov2", "/path/to/weights.safetensors")
    model = HookedViT.from_pretrained("vit_small_patch14_dinov2", "dinov2_vits14_pretrain.pth")  # torch-hub layout
    model = HookedViT.from_pretrained("vit_small_patch14_dinov2", None, img_size=224)  # random weights, warned
    model = HookedViT.from_timm(timm_model, "my_vit")

Token order: the prefix first (DINOv2: the class token, then the register tokens of `_reg4_`
models: n_prefix 1 or 5), then the patches row-major. `hook_pooled` is what the timm model's
`forward_head(pre_logits=True)` returns (DINOv2: the normed class token); `hook_image_embed` the
same after the timm classifier head, where the model has one (num_classes > 0).
"""

from __future__ import annotations

import warnings
from typing import Optional

from torch import nn

from lake_interp.model.config import HookedCLIPConfig
from lake_interp.model.convert import match_dtypes
from lake_interp.model.hooked_clip import HookedCLIP
from lake_interp.model.preprocess import SquashPreprocess

RANDOM_WEIGHTS_WARNING = (
    "HookedViT {name!r} has RANDOM WEIGHTS (pretrained=None): every score and map it produces "
    "is meaningless. Use it only for smoke tests."
)


class HookedViT(HookedCLIP):
    @classmethod
    def from_timm(cls, trunk: nn.Module, name: Optional[str] = None) -> "HookedViT":
        """The same weights as the timm model `trunk` (copied), hooked; `name` for messages and the config."""
        from lake_interp.model.convert_timm import vision_config_from_timm, vision_state_dict_from_timm

        label = name or f"timm {type(trunk).__name__} (no model name given: pass name=)"
        cfg = HookedCLIPConfig(vision=vision_config_from_timm(trunk, label), text=None, name=name)
        state = {f"visual.{k}": v for k, v in vision_state_dict_from_timm(trunk, label).items()}
        model = cls(cfg).to(device=next(trunk.parameters()).device)
        match_dtypes(model, state)
        model.load_state_dict(state, strict=True)
        data = getattr(trunk, "pretrained_cfg", None) or {}
        model.image_mean = tuple(data.get("mean", model.image_mean))
        model.image_std = tuple(data.get("std", model.image_std))
        model.preprocess = SquashPreprocess(model.image_size, model.image_mean, model.image_std)
        model.open_clip_preprocess = None  # not an open_clip model (timm's own transform: timm.data.create_transform)
        return model

    @classmethod
    def from_pretrained(cls, name: str, pretrained: Optional[str], img_size: Optional[int] = None,
                        device=None, precision: str = "fp32") -> "HookedViT":
        """A timm model name (`vit_small_patch14_dinov2`, `vit_small_patch14_reg4_dinov2`, ...) built
        with timm's `pretrained=False`, then `pretrained`: a local checkpoint file (safetensors, or a
        torch file read with weights_only=True; timm's layout or torch-hub DINOv2's, converted by timm's
        own checkpoint filter), or None / 'none' for random weights (explicit, loudly warned).
        `img_size`: build at another input size (DINOv2's default is 518); a checkpoint's positions
        are then resampled as timm resamples them (bicubic). `precision`: fp32, or fp16 / bf16 (the
        whole model cast: timm has no mixed precision)."""
        from lake_interp.model.loading import NONE_TAGS, load_timm

        pretrained = None if pretrained in NONE_TAGS else str(pretrained)
        trunk = load_timm(name, pretrained, img_size=img_size, device=device, precision=precision)
        model = cls.from_timm(trunk, name)
        model.pretrained = pretrained
        if pretrained is None:
            model.random_weights = True
            warnings.warn(RANDOM_WEIGHTS_WARNING.format(name=name), stacklevel=2)
        return model
