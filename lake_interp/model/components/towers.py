"""One factory for vision towers: `VisionConfig.family` -> the tower class (so that a config, e.g.
read back by `HookedCLIPConfig.from_dict` or a saved detector, rebuilds the same tower).

    "open_clip"  components.vision.VisionTower      open_clip's own VisionTransformer
    "timm_vit"   components.timm_vit.TimmViTTower   timm VisionTransformer (SigLIP, SigLIP2, DINOv2, ...)
    "timm_eva"   components.eva.EvaTower            timm Eva (EVA02, PE-Core), imported lazily

Interface of a family module (what `timm_eva` provides in `lake_interp.model.components.eva`; the
converter, `lake_interp.model.convert_timm`, calls it when `isinstance(trunk, timm.models.eva.Eva)`):

- `config_from_timm_eva(trunk, head: nn.Linear | None, name: str) -> VisionConfig` with
  `family="timm_eva"`; `head` is the linear map after the trunk's pooling (timm's `trunk.head`, or
  open_clip's `TimmModel.head.proj`), None where there is none. Unsupported options raise
  `convert.unsupported(name, option)` (NotImplementedError naming the model). Fields it may rely on:
  everything of `VisionConfig` / `BlockConfig` (n_prefix, class_token, patch_bias, pos_embed_prefix,
  ln_pre, ln_post, fc_norm, pool_type incl. "map" with attn_pool_heads / attn_pool_d_mlp, projection
  "none" / "linear" / "linear_bias", output_dim; block qkv_bias, qk_norm, layer_scale, act incl.
  "silu") and `VisionConfig.options` (a JSON dict of its own: rotary settings, SwiGLU, sub-LNs ...).
- `state_dict_from_timm_eva(trunk, head) -> dict[str, Tensor]`: the tower's parameter names (no
  `visual.` prefix), values shared with the timm model, loaded into `EvaTower(cfg)` with strict=True.
- `EvaTower(cfg: VisionConfig)`: an nn.Module with the interface of `TimmViTTower` (it may subclass
  it and override `make_block`): attributes `cfg`, `conv1` (the patch embedding; its weight's dtype is
  the model's input dtype), `blocks`, `ln_post` (or None); methods `forward(images) -> [batch,
  output_dim]`, `residual(images) -> [batch, n_ctx, d_model]`, `project_tokens(resid)`; properties
  `W_E`, `W_pos`, `W_proj` (may raise NotImplementedError) and the `TowerWeights` views; hook points
  only with names registered in `lake_interp.model.hook_sites` (e.g. `attn.hook_rot_q`,
  `mlp.hook_pre_linear`, `mlp.ln.*`, `attn.ln.*`, `attn_pool.*`, `fc_norm.*`).
"""

from __future__ import annotations

import importlib

from torch import nn

from lake_interp.model.config import VisionConfig

EVA_MODULE = "lake_interp.model.components.eva"


def eva_module(what: str):
    """`lake_interp.model.components.eva`, or NotImplementedError naming `what` where it is missing."""
    try:
        return importlib.import_module(EVA_MODULE)
    except ImportError as e:
        if e.name != EVA_MODULE:
            raise
        raise NotImplementedError(f"{what}: timm Eva towers (EVA02, PE-Core) are not supported by this "
                                  f"version of lake_interp ({EVA_MODULE} is missing)") from e


def eva_attr(what: str, attr: str):
    module = eva_module(what)
    if not hasattr(module, attr):
        raise NotImplementedError(f"{what}: timm Eva towers are not supported yet ({EVA_MODULE}.{attr} is missing)")
    return getattr(module, attr)


def make_vision_tower(cfg: VisionConfig) -> nn.Module:
    if cfg.family == "open_clip":
        from lake_interp.model.components.vision import VisionTower

        return VisionTower(cfg)
    if cfg.family == "timm_vit":
        from lake_interp.model.components.timm_vit import TimmViTTower

        return TimmViTTower(cfg)
    if cfg.family == "timm_eva":
        return eva_attr("vision family 'timm_eva'", "EvaTower")(cfg)
    raise ValueError(f"unknown vision family {cfg.family!r}; expected 'open_clip', 'timm_vit' or 'timm_eva'")
