"""Read a vision config and state dict off a timm tower: open_clip's `TimmModel` (trunk + head) or a
bare timm model. timm `VisionTransformer` -> family "timm_vit" (here); timm `Eva` -> family
"timm_eva" (`lake_interp.model.components.eva`, see components/towers.py for the interface).

Anything the hooked tower would not compute exactly is refused by name (NotImplementedError).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lake_interp.model.components.towers import eva_attr
from lake_interp.model.config import BlockConfig, VisionConfig
from lake_interp.model.convert import unsupported


def _timm():
    import timm  # noqa: F401  (open_clip's TimmModel needs it too)

    return timm


def split_timm_model(visual: nn.Module, name: str) -> tuple[nn.Module, Optional[nn.Linear]]:
    """(timm trunk, the linear map after its pooling or None) of open_clip's TimmModel or a timm model."""
    from open_clip.timm_model import TimmModel

    if isinstance(visual, TimmModel):
        trunk, extra = visual.trunk, dict(visual.head.named_children())
        if set(extra) - {"drop", "proj"}:
            raise unsupported(name, f"timm tower head {sorted(extra)}", "open_clip timm_proj='mlp' / timm_pool='abs_attn'")
        proj = extra.get("proj")
    else:
        trunk, proj = visual, None
    own = getattr(trunk, "head", None)
    if isinstance(own, nn.Linear):
        if proj is not None:
            raise unsupported(name, "timm tower with both a classifier head and open_clip's proj")
        proj = own
    elif own is not None and not isinstance(own, nn.Identity):
        raise unsupported(name, f"timm head {type(own).__name__}")
    return trunk, proj


def vision_config_from_timm(visual: nn.Module, name: str) -> VisionConfig:
    trunk, proj = split_timm_model(visual, name)
    timm = _timm()
    if isinstance(trunk, timm.models.eva.Eva):
        return eva_attr(name, "config_from_timm_eva")(trunk, proj, name)
    if type(trunk) is timm.models.vision_transformer.VisionTransformer:
        return config_from_timm_vit(trunk, proj, name)
    raise unsupported(name, f"timm vision tower {type(trunk).__name__}",
                      "only timm VisionTransformer (SigLIP, DINOv2, ...) and Eva (EVA02, PE-Core)")


def vision_state_dict_from_timm(visual: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The tower's parameter names (no `visual.` prefix) -> values (shared with the timm model)."""
    trunk, proj = split_timm_model(visual, name)
    timm = _timm()
    if isinstance(trunk, timm.models.eva.Eva):
        return eva_attr(name, "state_dict_from_timm_eva")(trunk, proj)
    return state_dict_from_timm_vit(trunk, proj)


# ------------------------------------------------------------------------------------ timm VisionTransformer
def _check_norm(norm: nn.Module, name: str, where: str, eps: float) -> None:
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine or norm.bias is None:
        raise unsupported(name, f"{where} norm layer {type(norm).__name__}", "LayerNorm with weight and bias only")
    if norm.eps != eps:
        raise unsupported(name, f"{where} LayerNorm eps {norm.eps} (the blocks' is {eps})")


def _is_identity(m: Optional[nn.Module]) -> bool:
    return m is None or isinstance(m, nn.Identity)


def attn_pool_shape(trunk: nn.Module, name: str, eps: float, act: str, what: str) -> tuple[int, int]:
    """(heads, d_mlp) of a timm trunk's `AttentionPoolLatent` (SigLIP's MAP head, PE-Core's pool) as the
    hooked `AttentionPool` mirrors it: one latent, no positions, no QK-norm, a biased q, an MLP with the
    blocks' activation; anything else refused by name. `what` names the tower family in messages."""
    from timm.layers import AttentionPoolLatent

    ap = trunk.attn_pool
    if type(ap) is not AttentionPoolLatent:
        raise unsupported(name, f"{what} attention pool {type(ap).__name__}")
    if (ap.pos_embed is not None or ap.latent_len != 1 or not isinstance(ap.q, nn.Linear) or ap.mlp is None
            or not _is_identity(ap.q_norm) or ap.pool != "token" or ap.q.bias is None
            or ap.latent.shape[-1] != trunk.embed_dim):
        raise unsupported(name, f"{what} attention pool with positions, several latents, qk_norm or no q/MLP")
    _check_norm(ap.norm, name, f"{what} attn_pool norm", eps)
    if timm_activation(ap.mlp.act, name) != act:
        raise unsupported(name, f"{what} attention pool activation {type(ap.mlp.act).__name__} with {act} blocks")
    return ap.num_heads, ap.mlp.fc1.out_features


def attn_pool_state(trunk: nn.Module) -> dict:
    """The trunk's attention pool parameters under the hooked `AttentionPool` names ({} without a pool)."""
    out = {}
    if trunk.attn_pool is not None:
        for key, value in trunk.attn_pool.state_dict().items():
            new = _rename(key, _POOL_RENAMES)
            if new is None:
                raise KeyError(f"timm attention pool parameter {key!r} has no counterpart")
            out[f"attn_pool.{new}"] = value
    return out


def timm_activation(act: nn.Module, name: str) -> str:
    import timm.layers.activations as ta

    if type(act) is nn.GELU or type(act) is ta.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}[getattr(act, "approximate", "none")]
    if type(act) is ta.GELUTanh:
        return "gelu_tanh"
    if type(act) is ta.QuickGELU:
        return "quick_gelu"
    if type(act) in (nn.SiLU, ta.SiLU if hasattr(ta, "SiLU") else nn.SiLU):
        return "silu"
    raise unsupported(name, f"timm activation {type(act).__name__}")


def _timm_block_config(trunk: nn.Module, name: str) -> BlockConfig:
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block, LayerScale

    blocks = list(trunk.blocks)
    if not blocks:
        raise unsupported(name, "timm tower without blocks")
    first = blocks[0]
    eps = first.norm1.eps
    for i, b in enumerate(blocks):
        where = f"block {i}"
        if type(b) is not Block:
            raise unsupported(name, f"timm {where} type {type(b).__name__}", "only timm's pre-norm Block")
        if type(b.attn) is not Attention or type(b.mlp) is not Mlp:
            raise unsupported(name, f"timm {where} attention/MLP {type(b.attn).__name__}/{type(b.mlp).__name__}")
        a = b.attn
        if not _is_identity(a.norm) or getattr(a, "gate", None) is not None or a.proj.bias is None:
            raise unsupported(name, f"timm {where} attention scale_norm / gate / no proj bias")
        if a.attn_dim != trunk.embed_dim:
            raise unsupported(name, f"timm {where} attention width {a.attn_dim} != {trunk.embed_dim}")
        if not _is_identity(b.mlp.norm) or b.mlp.fc1.bias is None or b.mlp.fc2.bias is None:
            raise unsupported(name, f"timm {where} MLP norm / no bias")
        for norm in (b.norm1, b.norm2):
            _check_norm(norm, name, where, eps)
        if _is_identity(a.q_norm) != _is_identity(first.attn.q_norm):
            raise unsupported(name, "timm qk_norm in some blocks only")
        if not _is_identity(a.q_norm):
            for norm in (a.q_norm, a.k_norm):
                _check_norm(norm, name, f"{where} qk", eps)
        if (a.qkv.bias is None) != (first.attn.qkv.bias is None):
            raise unsupported(name, "timm qkv_bias in some blocks only")
        for ls in (b.ls1, b.ls2):
            if not (isinstance(ls, LayerScale) or _is_identity(ls)) or getattr(ls, "inplace", False):
                raise unsupported(name, f"timm {where} layer scale {type(ls).__name__}")
        if isinstance(b.ls1, LayerScale) != isinstance(first.ls1, LayerScale):
            raise unsupported(name, "timm LayerScale in some blocks only")
        if timm_activation(b.mlp.act, name) != timm_activation(first.mlp.act, name):
            raise unsupported(name, "timm activations differ between blocks")
        if b.mlp.fc1.out_features != first.mlp.fc1.out_features:
            raise unsupported(name, "timm MLP widths differ between blocks")
    return BlockConfig(
        d_model=trunk.embed_dim,
        n_heads=first.attn.num_heads,
        d_mlp=first.mlp.fc1.out_features,
        act=timm_activation(first.mlp.act, name),
        ln_eps=eps,
        layer_scale=isinstance(first.ls1, LayerScale),
        qkv_bias=first.attn.qkv.bias is not None,
        qk_norm=not _is_identity(first.attn.q_norm),
    )


def config_from_timm_vit(trunk: nn.Module, proj: Optional[nn.Linear], name: str) -> VisionConfig:
    block = _timm_block_config(trunk, name)
    pe = trunk.patch_embed
    (h, w), (ph, pw) = pe.img_size, pe.patch_size
    if h != w or ph != pw:
        raise unsupported(name, f"non-square img_size {pe.img_size} / patch_size {pe.patch_size}")
    if not _is_identity(pe.norm) or not pe.flatten or type(pe.proj) is not nn.Conv2d:
        raise unsupported(name, "timm patch embedding with a norm, unflattened output or a non-conv projection")
    if pe.proj.stride != pe.proj.kernel_size or pe.proj.padding != (0, 0):
        raise unsupported(name, "timm patch embedding with overlapping patches")
    if trunk.pos_embed is None:
        raise unsupported(name, "timm tower without absolute positions (pos_embed=None)")
    if getattr(trunk, "is_causal", False) or getattr(trunk, "attn_mask", None) is not None:
        raise unsupported(name, "timm causal attention")
    eps = block.ln_eps
    norm_pre = trunk.norm_pre
    if not _is_identity(norm_pre):
        _check_norm(norm_pre, name, "norm_pre", eps)
    if not _is_identity(trunk.norm):
        _check_norm(trunk.norm, name, "norm", eps)
    if not _is_identity(trunk.fc_norm):
        _check_norm(trunk.fc_norm, name, "fc_norm", eps)
    n_prefix = trunk.num_prefix_tokens
    class_token = trunk.cls_token is not None
    n_reg = 0 if trunk.reg_token is None else trunk.reg_token.shape[1]
    if n_prefix != int(class_token) + n_reg:
        raise unsupported(name, f"timm prefix of {n_prefix} tokens ({int(class_token)} class, {n_reg} registers)")
    pool = trunk.global_pool
    heads = d_mlp = 0
    if trunk.attn_pool is not None:
        heads, d_mlp = attn_pool_shape(trunk, name, eps, block.act, "timm")
        if trunk.pool_include_prefix and n_prefix:
            raise unsupported(name, "timm attention pool over the prefix tokens (pool_include_prefix)")
        pool_type = "map"
    elif pool == "token":
        if not class_token:
            raise unsupported(name, "timm global_pool='token' without a class token")
        pool_type = "tok"
    elif pool == "avg":
        if trunk.pool_include_prefix and n_prefix:
            raise unsupported(name, "timm average pool over the prefix tokens (pool_include_prefix)")
        pool_type = "avg"
    else:
        raise unsupported(name, f"timm global_pool={pool!r}", "token, avg or map")
    n_pos = trunk.pos_embed.shape[1]
    grid = h // ph
    pos_embed_prefix = not trunk.no_embed_class
    if n_pos != grid**2 + (n_prefix if pos_embed_prefix else 0):
        raise unsupported(name, f"timm pos_embed of {n_pos} positions for a {grid}x{grid} grid")
    if proj is None:
        projection, output_dim = "none", trunk.embed_dim
    else:
        projection, output_dim = ("linear_bias" if proj.bias is not None else "linear"), proj.out_features
    return VisionConfig(
        block=block,
        n_layers=len(trunk.blocks),
        image_size=h,
        patch_size=ph,
        output_dim=output_dim,
        ln_pre=not _is_identity(norm_pre),
        pool_type=pool_type,
        n_prefix=n_prefix,
        family="timm_vit",
        class_token=class_token,
        patch_bias=pe.proj.bias is not None,
        pos_embed_prefix=pos_embed_prefix,
        ln_post=not _is_identity(trunk.norm),
        fc_norm=not _is_identity(trunk.fc_norm),
        projection=projection,
        attn_pool_heads=heads,
        attn_pool_d_mlp=d_mlp,
    )


_BLOCK_RENAMES = {"norm1.": "ln1.", "norm2.": "ln2.", "attn.qkv.weight": "attn.in_proj_weight",
                  "attn.qkv.bias": "attn.in_proj_bias", "attn.proj.": "attn.out_proj.", "mlp.fc1.": "mlp.c_fc.",
                  "mlp.fc2.": "mlp.c_proj.", "ls1.gamma": "ls1.gamma", "ls2.gamma": "ls2.gamma",
                  "attn.q_norm.": "attn.q_norm.", "attn.k_norm.": "attn.k_norm."}
_POOL_RENAMES = {"latent": "latent", "q.": "q.", "kv.": "kv.", "proj.": "proj.", "norm.": "norm.",
                 "mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.2."}


def _rename(key: str, table: dict[str, str]) -> Optional[str]:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def state_dict_from_timm_vit(trunk: nn.Module, proj: Optional[nn.Linear]) -> dict[str, torch.Tensor]:
    """timm VisionTransformer parameter names -> TimmViTTower's (values shared, not copied)."""
    out: dict[str, torch.Tensor] = {}
    pe = trunk.patch_embed.proj
    out["conv1.weight"] = pe.weight
    if pe.bias is not None:
        out["conv1.bias"] = pe.bias
    if trunk.cls_token is not None:
        out["class_embedding"] = trunk.cls_token.detach().reshape(-1)
    if trunk.reg_token is not None:
        out["register_tokens"] = trunk.reg_token.detach()[0]
    out["positional_embedding"] = trunk.pos_embed.detach()[0]
    for src, dst in ((trunk.norm_pre, "ln_pre"), (trunk.norm, "ln_post"), (trunk.fc_norm, "fc_norm")):
        if not _is_identity(src):
            out[f"{dst}.weight"], out[f"{dst}.bias"] = src.weight, src.bias
    for i, block in enumerate(trunk.blocks):
        for key, value in block.state_dict().items():
            new = _rename(key, _BLOCK_RENAMES)
            if new is None:
                raise KeyError(f"timm block parameter {key!r} has no counterpart")
            out[f"blocks.{i}.{new}"] = value
    out.update(attn_pool_state(trunk))
    if proj is not None:
        out["head.weight"] = proj.weight
        if proj.bias is not None:
            out["head.bias"] = proj.bias
    return out
