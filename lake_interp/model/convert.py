"""Read a HookedCLIP config and state dict off an open_clip model; refuse what it cannot mirror.

Anything the hooked components do not reproduce exactly raises `NotImplementedError` naming the
model and the option, so that a converted model is never silently a different model.
"""

from __future__ import annotations

import re

import open_clip
import torch
from open_clip import transformer as oct
from open_clip.model import CLIP, CustomTextCLIP
from torch import nn

from lake_interp.model.config import BlockConfig, HookedCLIPConfig, TextConfig, VisionConfig


def unsupported(name: str, option: str, hint: str = "") -> NotImplementedError:
    msg = f"{name}: {option} is not supported by HookedCLIP"
    return NotImplementedError(msg + (f" ({hint})" if hint else ""))


def check_model_config(name: str) -> None:
    """Refuse, from open_clip's JSON config alone (before any download), towers HookedCLIP cannot mirror.
    Everything else is checked on the built model by `config_from_open_clip`."""
    cfg = open_clip.get_model_config(name) or {}
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    timm_name = vision.get("timm_model_name")
    refused = [
        ("multimodal_cfg" in cfg, "CoCa (multimodal_cfg)", "captioning decoder"),
        (bool(timm_name) and timm_family(timm_name) is None,
         f"vision tower {timm_name!r} (timm {timm_module(timm_name)})", "only timm VisionTransformer and Eva towers"),
        (bool(timm_name) and vision.get("timm_pool") in ("abs_attn", "rot_attn"), f"timm_pool={vision.get('timm_pool')!r}", ""),
        (bool(timm_name) and vision.get("timm_proj") == "mlp", "timm_proj='mlp'", ""),
        (not isinstance(vision.get("layers", 12), int), "ResNet vision tower", "vision_cfg.layers per stage"),
        (bool(vision.get("attentional_pool")), "attentional_pool", ""),
        (bool(text.get("hf_model_name")), f"text tower {text.get('hf_model_name')!r}", "hf_model_name"),
    ]
    for bad, option, hint in refused:
        if bad:
            raise unsupported(name, option, hint)
    if timm_name and timm_family(timm_name) == "timm_eva":
        from lake_interp.model.components.towers import eva_attr

        eva_attr(name, "check_timm_eva")(cfg, name)  # refused by name before anything is built or downloaded


def timm_module(timm_name: str) -> str:
    """The timm module that defines a timm model name ('vision_transformer', 'eva', ...)."""
    import timm

    if not timm_name or not timm.is_model(timm_name):
        return "unknown model"
    return timm.models.model_entrypoint(timm_name).__module__.rsplit(".", 1)[-1]


def timm_family(timm_name: str) -> str | None:
    """The vision family a timm model name builds ("timm_vit", "timm_eva"), None for other timm towers."""
    return {"vision_transformer": "timm_vit", "eva": "timm_eva"}.get(timm_module(timm_name))


def model_label(oc: nn.Module, name: str | None) -> str:
    """How messages name the model: its open_clip name, or its class where no name was given."""
    return name or f"open_clip {type(oc).__name__} (no model name given: pass name=)"


def config_from_open_clip(oc: nn.Module, name: str | None = None) -> HookedCLIPConfig:
    name = model_label(oc, name)
    if type(oc) not in (CLIP, CustomTextCLIP):
        raise unsupported(name, f"model class {type(oc).__name__}", "only CLIP and CustomTextCLIP")
    text_tower, text_pool, text_eos = _text_parts(oc, name)
    return HookedCLIPConfig(
        vision=_vision_config(oc.visual, name),
        text=_text_config(text_tower, text_pool, text_eos, name),
        logit_bias=getattr(oc, "logit_bias", None) is not None,
        name=name,
    )


def state_dict_from_open_clip(oc: nn.Module, name: str | None = None) -> dict[str, torch.Tensor]:
    """open_clip parameter names -> HookedCLIP parameter names (values shared, not copied)."""
    if _is_timm(oc.visual):
        from lake_interp.model.convert_timm import vision_state_dict_from_timm

        out = {f"visual.{k}": v for k, v in vision_state_dict_from_timm(oc.visual, model_label(oc, name)).items()}
    else:
        out = {f"visual.{_rename(k)}": v for k, v in oc.visual.state_dict().items()}
    text_tower, _, _ = _text_parts(oc, model_label(oc, name))
    if text_tower is not oc:
        text_items = text_tower.state_dict().items()
    else:  # CLIP keeps the text tower's modules at the top level
        text_items = ((k, v) for k, v in oc.state_dict().items() if not k.startswith(("visual.", "logit_")))
    out.update({f"text.{_rename(k)}": v for k, v in text_items})
    out["logit_scale"] = oc.logit_scale.detach().reshape(())
    if getattr(oc, "logit_bias", None) is not None:
        out["logit_bias"] = oc.logit_bias.detach().reshape(())
    return out


# Parameters whose dtype differs from open_clip's on purpose (values are the same in the forward):
# the text tower computes in the dtype of its positional embedding (components/text.py), where
# Parameters stored in another dtype than open_clip's (none: TextTower computes in its blocks' dtype
# as open_clip does, so the text positional embedding stays fp32 under precision='fp16'/'bf16').
COMPUTE_DTYPE_PARAMS: tuple[str, ...] = ()


def match_dtypes(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Give every parameter of `model` the dtype of its open_clip counterpart in `state_dict`, so that
    open_clip's mixed precision (precision='fp16'/'bf16': linear, conv, attention and projection
    weights low precision; LayerNorm, LayerScale, embeddings and logit scale fp32) is kept parameter
    by parameter, as are pure low-precision models (`.half()`)."""
    params = dict(model.named_parameters())
    for key, value in state_dict.items():
        if key in params and params[key].dtype != value.dtype:
            params[key].data = params[key].data.to(value.dtype)


_RENAMES = [
    (r"^transformer\.resblocks\.", "blocks."),
    (r"\.ln_1\.", ".ln1."),
    (r"\.ln_2\.", ".ln2."),
    (r"\.ls_1\.", ".ls1."),
    (r"\.ls_2\.", ".ls2."),
]


def _rename(key: str) -> str:
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _text_parts(oc: nn.Module, name: str):
    """(text tower or the CLIP itself, pool type, eos id)."""
    if isinstance(oc, CustomTextCLIP):
        text = oc.text
        if type(text) is not oct.TextTransformer:
            raise unsupported(name, f"text tower {type(text).__name__}", "Hugging Face text towers (hf_model_name)")
        if text.cls_emb is not None:
            raise unsupported(name, "text embed_cls (CoCa-style class token)")
        if text.use_pad_mask:
            raise unsupported(name, "text use_pad_mask")
        return text, text.pool_type, text.eos_id
    return oc, oc.text_pool_type, getattr(oc, "text_eos_id", 2)


def _block_config(transformer: nn.Module, name: str, tower: str) -> BlockConfig:
    blocks = list(transformer.resblocks)
    if not transformer.batch_first:
        raise unsupported(name, f"{tower} batch_first=False")
    first = blocks[0]
    if isinstance(first.ls_1, oct.LayerScale) and first.ls_1.gamma.dtype != first.attn.in_proj_weight.dtype:
        raise unsupported(
            name, f"{tower} LayerScale in {first.ls_1.gamma.dtype} with {first.attn.in_proj_weight.dtype} weights "
            "(open_clip's precision='fp16'/'bf16' keeps LayerScale fp32, and open_clip's own forward then fails "
            "with a dtype mismatch)", "use precision='pure_fp16' / 'pure_bf16', or fp32",
        )
    for block in blocks:
        if type(block) is not oct.ResidualAttentionBlock:
            raise unsupported(
                name, f"{tower} block type {type(block).__name__}",
                "block_type='custom': qk_norm, scaled_cosine_attn, scale_heads, scale_attn, scale_fc",
            )
        if hasattr(block, "ln_1_kv"):
            raise unsupported(name, f"{tower} cross attention")
        attn = block.attn
        if not attn._qkv_same_embed_dim or attn.in_proj_bias is None or attn.bias_k is not None:
            raise unsupported(name, f"{tower} attention without a fused biased in_proj")
        for ln in (block.ln_1, block.ln_2):
            if not isinstance(ln, nn.LayerNorm) or not ln.elementwise_affine or ln.bias is None:
                raise unsupported(name, f"{tower} norm layer {type(ln).__name__}")
    return BlockConfig(
        d_model=transformer.width,
        n_heads=first.attn.num_heads,
        d_mlp=first.mlp.c_fc.out_features,
        act=_activation(first.mlp.gelu, name, tower),
        ln_eps=first.ln_1.eps,
        layer_scale=isinstance(first.ls_1, oct.LayerScale),
    )


def _activation(act: nn.Module, name: str, tower: str) -> str:
    if isinstance(act, oct.QuickGELU):
        return "quick_gelu"
    if type(act) is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}[act.approximate]
    raise unsupported(name, f"{tower} activation {type(act).__name__}", "act_kwargs / act_layer")


def _is_timm(visual: nn.Module) -> bool:
    from open_clip.timm_model import TimmModel

    return isinstance(visual, TimmModel)


def _vision_config(visual: nn.Module, name: str) -> VisionConfig:
    if _is_timm(visual):
        from lake_interp.model.convert_timm import vision_config_from_timm

        return vision_config_from_timm(visual, name)
    if type(visual) is not oct.VisionTransformer:
        kind = type(visual).__name__
        hint = {"ModifiedResNet": "ResNet vision tower"}.get(kind, "")
        raise unsupported(name, f"vision tower {kind}", hint)
    if visual.attn_pool is not None:
        raise unsupported(name, "attentional_pool")
    if visual.pool_type not in ("tok", "avg"):
        raise unsupported(name, f"vision pool_type={visual.pool_type!r}")
    (h, w), (ph, pw) = visual.image_size, visual.patch_size
    if h != w or ph != pw:
        raise unsupported(name, f"non-square image_size {visual.image_size} / patch_size {visual.patch_size}")
    if visual.proj is None:
        raise unsupported(name, "vision tower without proj")
    return VisionConfig(
        block=_block_config(visual.transformer, name, "vision"),
        n_layers=len(visual.transformer.resblocks),
        image_size=h,
        patch_size=ph,
        output_dim=visual.proj.shape[1],
        ln_pre=not isinstance(visual.ln_pre, nn.Identity),
        pool_type=visual.pool_type,
        final_ln_after_pool=visual.final_ln_after_pool,
    )


def _text_config(text: nn.Module, pool_type: str, eos_id: int, name: str) -> TextConfig:
    if pool_type not in ("argmax", "last", "first", "eos"):
        raise unsupported(name, f"text pool_type={pool_type!r}")
    proj = text.text_projection
    if proj is None:
        projection, output_dim = "none", text.transformer.width
    elif isinstance(proj, nn.Linear):
        projection, output_dim = ("linear_bias" if proj.bias is not None else "linear"), proj.out_features
    else:
        projection, output_dim = "param", proj.shape[1]
    return TextConfig(
        block=_block_config(text.transformer, name, "text"),
        n_layers=len(text.transformer.resblocks),
        context_length=text.positional_embedding.shape[0],
        vocab_size=text.token_embedding.num_embeddings,
        output_dim=output_dim,
        causal_mask=text.attn_mask is not None,
        pool_type=pool_type,
        eos_id=eos_id,
        projection=projection,
    )
