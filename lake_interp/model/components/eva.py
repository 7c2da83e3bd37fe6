"""timm `Eva` vision towers (EVA02, PE-Core, ...) as open_clip's `TimmModel` wraps them, hooked.

Built by `components.towers.make_vision_tower` for `VisionConfig.family == "timm_eva"`; read off a
timm model by `config_from_timm_eva` / `state_dict_from_timm_eva` (called from `convert_timm.py`).
Anything of timm's `Eva` this module does not reproduce exactly raises `NotImplementedError` naming
the model and the option (post-norm blocks as EVA02-E-14's, mixed rotary tables, grouped-query
attention, dynamic image size with absolute positions, max pooling, ...). timm's DINOv3 (`*_dinov3`:
rotary positions only, `dynamic_img_size`) is mirrored at the size it was built for.

What differs from open_clip's `VisionTransformer` (`components/vision.py`), hook by hook:
- Tokens: `n_prefix` prefix tokens (the class token, if any, at position 0, then the register
  tokens), then the patches row-major. Learned absolute positions (`positional_embedding`, where the
  model has them: over the prefix too unless timm's `no_embed_class`), `hook_embed` after them.
- Rotary position embeddings (timm `use_rot_pos_emb`, RotaryEmbeddingCat or DINOv3's): queries and keys of the
  patch tokens are rotated (prefix tokens are not). As in TransformerLens, `attn.hook_q` / `hook_k`
  are BEFORE the rotation and `attn.hook_rot_q` / `hook_rot_k` AFTER it: what the scores read. With
  QK-norm, `hook_q` / `hook_k` are after the norm (this package's convention for every tower,
  `components/attention.py`; TransformerLens has them before its QK-norm). The rotation table is a buffer
  (`rope`, [grid**2, 2 * d_head]: sin then cos) read off the timm model, not a parameter. So
  `W_Q`/`W_K` (and `QK`) are the projections before the rotation, not the scores' bilinear form.
- Attention sub-LayerNorm (EVA02 `scale_attn_inner`, timm `attn.norm`): a LayerNorm over the
  concatenated heads (`attn.ln.hook_scale/hook_normalized/hook_out`) between `hook_z` and the output
  projection. The attention output is then not a sum of per-head terms, so `W_O` (and the per-head
  decompositions that use it) refuse with NotImplementedError on such towers.
- SwiGLU MLP (timm `SwiGLU` / `GluMlp`): `mlp.hook_pre` = the gate's pre-activation (fc1_g x),
  `mlp.hook_pre_linear` = the linear branch (fc1_x x), `mlp.hook_mid` = act(gate) * linear (the
  gated product). With EVA02's MLP sub-LayerNorm (`scale_mlp`, timm `mlp.norm`) `mlp.ln.*` hooks
  follow; `mlp.hook_post` is ALWAYS what the output projection reads (after the sub-LayerNorm where
  present, = the gated product without one), so that zeroing unit i at `mlp.hook_post` is exactly
  zeroing column i of fc2 (`W_out[i]`), and `hook_mlp_out = hook_post @ W_out + b_out` (times
  LayerScale) holds for the neuron decompositions, as TransformerLens's `hook_post` after its SoLU
  LayerNorm. Plain GELU MLPs (PE-Core) are the open_clip `MLP` component.
- LayerScale (`gamma_1` / `gamma_2`) as `ls1` / `ls2`; `hook_attn_out` / `hook_mlp_out` after it.
- Head: `ln_post` (timm `norm`, per token), then pooling (class token, patch mean, or PE-Core's
  attention pool `attn_pool`, which in timm's Eva reads every token, the prefix included), `fc_norm`
  where present, `hook_pooled`, the projection (timm's head Linear or open_clip's TimmModel head
  proj, with its bias), `hook_image_embed`.
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.attention import Attention
from lake_interp.model.components.block import TransformerBlock
from lake_interp.model.components.layer_norm import LayerNorm
from lake_interp.model.components.mlp import make_activation
from lake_interp.model.components.timm_vit import TimmViTTower
from lake_interp.model.config import BlockConfig, VisionConfig


def rotate(x: torch.Tensor, rope: torch.Tensor, n_prefix: int, half: bool) -> torch.Tensor:
    """Rotary embedding of the patch tokens of x [batch, pos, head, d_head]; the first n_prefix
    positions unrotated. rope: [pos - n_prefix, 2 * d_head], sin then cos (timm's `cat` layout).
    Pairs are (2i, 2i+1) (interleaved) or (i, i + d_head / 2) (half). Computed in rope's dtype
    (fp32) and cast back to x's, as timm's apply_rot_embed_cat."""
    sin, cos = rope.chunk(2, dim=-1)
    sin, cos = sin[:, None], cos[:, None]  # [pos, 1, d_head]: the same for every head
    patches = x[:, n_prefix:]
    if half:
        first, second = patches.chunk(2, dim=-1)
        turned = torch.cat([-second, first], dim=-1)
    else:
        turned = torch.stack([-patches[..., 1::2], patches[..., ::2]], dim=-1).reshape(patches.shape)
    rotated = (patches * cos + turned * sin).to(x.dtype)
    return torch.cat([x[:, :n_prefix], rotated], dim=1)


class EvaAttention(Attention):
    """`Attention` (fused [W_Q; W_K; W_V], QK-norm) with rotary queries/keys and an optional
    sub-LayerNorm before the output projection."""

    def __init__(self, cfg: BlockConfig, rotary: Optional[str], sub_ln: bool, n_prefix: int):
        super().__init__(cfg)
        self.rotary = rotary  # None, "interleaved" or "half"
        self.n_prefix = n_prefix  # tokens not rotated
        if rotary is not None:
            self.hook_rot_q = HookPoint()  # [batch, pos, head, d_head]: queries after the rotation
            self.hook_rot_k = HookPoint()  # [batch, pos, head, d_head]: keys after the rotation
        # [batch, pos, d_model]: LayerNorm of the concatenated heads (EVA02 scale_attn_inner)
        self.ln = LayerNorm(cfg.d_model, cfg.ln_eps) if sub_ln else None

    @property
    def W_O(self) -> torch.Tensor:
        """[n_heads, d_head, d_model]; refused where a sub-LayerNorm sits between the heads and it."""
        if self.ln is not None:
            raise NotImplementedError(
                "W_O of an attention with a sub-LayerNorm (timm Eva scale_attn_inner, e.g. EVA02): the heads' "
                "output is normalised jointly before the output projection, so it is not a sum of per-head terms")
        return super().W_O

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [batch, pos, d_model]; rope: [pos - n_prefix, 2 * d_head] (rotary towers)."""
        q, k, v = self.qkv(x)
        if self.rotary is not None:
            half = self.rotary == "half"
            q = self.hook_rot_q(rotate(q, rope, self.n_prefix, half).type_as(v))
            k = self.hook_rot_k(rotate(k, rope, self.n_prefix, half).type_as(v))
        z = rearrange(self.attend(q, k, v, attn_mask), "b p h d -> b p (h d)")
        if self.ln is not None:
            z = self.ln(z)
        return self.out_proj(z)


class SwiGLU(nn.Module):
    """act(gate(x)) * c_fc(x) [-> sub-LayerNorm] -> c_proj, as timm's SwiGLU / GluMlp (act: SiLU)."""

    def __init__(self, cfg: BlockConfig, sub_ln: bool):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_mlp)  # timm fc1_g (GluMlp: first half of fc1)
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp)  # timm fc1_x (GluMlp: second half of fc1)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]: the gate before the activation
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]: the linear branch
        self.act = make_activation(cfg.act)
        self.hook_mid = HookPoint()  # [batch, pos, d_mlp]: act(gate) * linear
        self.ln = LayerNorm(cfg.d_mlp, cfg.ln_eps) if sub_ln else None  # timm mlp.norm (EVA02 scale_mlp)
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]: what c_proj reads (the MLP neurons)
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model)

    # TransformerLens GatedMLP weight views (shared storage):
    # post = [ln](act(x @ W_gate + b_gate) * (x @ W_in + b_in)); out = post @ W_out + b_out
    W_gate = property(lambda self: self.gate.weight.T, doc="[d_model, d_mlp]")
    b_gate = property(lambda self: self.gate.bias, doc="[d_mlp]")
    W_in = property(lambda self: self.c_fc.weight.T, doc="[d_model, d_mlp]: the linear branch")
    b_in = property(lambda self: self.c_fc.bias, doc="[d_mlp]")
    W_out = property(lambda self: self.c_proj.weight.T, doc="[d_mlp, d_model]")
    b_out = property(lambda self: self.c_proj.bias, doc="[d_model]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.hook_mid(self.act(self.hook_pre(self.gate(x))) * self.hook_pre_linear(self.c_fc(x)))
        if self.ln is not None:
            gated = self.ln(gated)
        return self.c_proj(self.hook_post(gated))


class EvaBlock(TransformerBlock):
    """timm `EvaBlock` (pre-norm): the open_clip block with `EvaAttention`, a SwiGLU MLP where the
    model has one, LayerScale on attention only where timm's `attn_only_layer_scale`."""

    def __init__(self, cfg: BlockConfig, options: dict, n_prefix: int):
        super().__init__(cfg)
        self.attn = EvaAttention(cfg, options.get("rope"), options.get("attn_ln", False), n_prefix)
        if options.get("mlp") == "swiglu":
            self.mlp = SwiGLU(cfg, options.get("mlp_ln", False))
        if cfg.layer_scale and not options.get("mlp_layer_scale", True):
            self.ls2 = nn.Identity()


class EvaTower(TimmViTTower):
    """timm `Eva` as open_clip's TimmModel wraps it: `TimmViTTower` with `EvaBlock`s, the rotary
    table (`rope`, a buffer) handed to every block, and the attention pool (PE-Core) over all tokens,
    the prefix included, as timm's `Eva.pool`."""

    def __init__(self, cfg: VisionConfig):
        super().__init__(cfg)
        if not cfg.options.get("abs_pos", True):  # rotary positions only (DINOv3)
            self.register_parameter("positional_embedding", None)
        if cfg.options.get("rope") is not None:
            # [grid**2, 2 * d_head]: sin then cos per patch, read off timm's RotaryEmbeddingCat (persistent,
            # so that it loads with the weights)
            self.register_buffer("rope", torch.zeros(cfg.grid_size**2, 2 * cfg.block.d_head))
        else:
            self.rope = None

    def make_block(self, index: int) -> nn.Module:
        return EvaBlock(self.cfg.block, self.cfg.options, self.cfg.n_prefix)

    def residual(self, images: torch.Tensor, stop_at_layer: Optional[int] = None) -> torch.Tensor:
        """The residual stream after the last block (or blocks[:stop_at_layer]): [batch, n_ctx, d_model]."""
        x = self.ln_pre(self.hook_embed(self.embed(images)))
        for block in self.blocks[:stop_at_layer]:
            x = block(x, rope=self.rope)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool_type == "map":  # timm Eva: the attention pool reads every token, prefix included
            return self.attn_pool(x)
        return super()._pool(x)


# ------------------------------------------------------------------------------------------ conversion
def _unsupported(name: str, option: str, hint: str = "") -> NotImplementedError:
    from lake_interp.model.convert import unsupported

    return unsupported(name, f"timm Eva {option}", hint)


def _attention_options(trunk: nn.Module, name: str, eps: float) -> tuple[bool, bool, str | None, bool]:
    """(qkv_bias, qk_norm, rotary, sub_ln) shared by every block, or refused."""
    from timm.layers import AttentionRope
    from timm.models.eva import EvaAttention as TimmEvaAttention

    from lake_interp.model.convert_timm import _check_norm, _is_identity

    seen = set()
    for i, block in enumerate(trunk.blocks):
        a, where = block.attn, f"block {i} attention"
        if type(a) not in (TimmEvaAttention, AttentionRope):
            raise _unsupported(name, f"{where} type {type(a).__name__}")
        if getattr(a, "gate", None) is not None:
            raise _unsupported(name, f"{where} gated_attn")
        if getattr(a, "num_kv_groups", 1) != 1:
            raise _unsupported(name, f"{where} grouped-query attention (num_kv_heads)")
        if a.head_dim * a.num_heads != trunk.embed_dim:
            raise _unsupported(name, f"{where} attn_head_dim {a.head_dim} x {a.num_heads} heads != {trunk.embed_dim}")
        if a.proj.bias is None:
            raise _unsupported(name, f"{where} without an output projection bias")
        if a.num_prefix_tokens != trunk.num_prefix_tokens:
            raise _unsupported(name, f"{where} rotates from token {a.num_prefix_tokens}, the prefix is "
                                     f"{trunk.num_prefix_tokens} tokens")
        qk_norm = not _is_identity(a.q_norm)
        for norm, what in ((a.q_norm, "q_norm"), (a.k_norm, "k_norm"), (a.norm, "norm (scale_attn_inner)")):
            if not _is_identity(norm):
                _check_norm(norm, name, f"timm Eva {where} {what}", eps)
        has_bias = _qkv(a)[1] is not None  # a missing bias among q, k, v is zeros
        seen.add((has_bias, qk_norm, bool(getattr(a, "rotate_half", False)), not _is_identity(a.norm)))
    if len(seen) != 1:
        raise _unsupported(name, "attention options that differ between blocks")
    has_bias, qk_norm, half, sub_ln = seen.pop()
    rotary = None if trunk.rope is None else ("half" if half else "interleaved")
    return has_bias, qk_norm, rotary, sub_ln


def _mlp_options(trunk: nn.Module, name: str, eps: float) -> tuple[str, int, str, bool]:
    """(kind "swiglu" / "mlp", d_mlp, activation, sub_ln) shared by every block, or refused."""
    from timm.layers import GluMlp, Mlp
    from timm.layers import SwiGLU as TimmSwiGLU

    from lake_interp.model.convert_timm import _check_norm, _is_identity, attn_pool_shape, timm_activation

    seen = set()
    for i, block in enumerate(trunk.blocks):
        m, where = block.mlp, f"block {i} MLP"
        if type(m) is TimmSwiGLU:
            kind, d_mlp, biased = "swiglu", m.fc1_g.out_features, m.fc1_g.bias is not None and m.fc1_x.bias is not None
        elif type(m) is GluMlp:
            if m.chunk_dim != -1:
                raise _unsupported(name, f"{where} GluMlp chunk_dim={m.chunk_dim}")
            kind, d_mlp, biased = "swiglu", m.fc1.out_features // 2, m.fc1.bias is not None
        elif type(m) is Mlp:
            if not _is_identity(m.norm):
                raise _unsupported(name, f"{where} norm in a non-gated MLP (scale_mlp without swiglu_mlp)")
            kind, d_mlp, biased = "mlp", m.fc1.out_features, m.fc1.bias is not None
        else:
            raise _unsupported(name, f"{where} type {type(m).__name__}")
        if not biased or m.fc2.bias is None:
            raise _unsupported(name, f"{where} without biases")
        act = timm_activation(m.act, name)
        if kind == "swiglu" and act != "silu":
            raise _unsupported(name, f"{where} gated with {act} (SwiGLU with SiLU only)")
        if not _is_identity(m.norm):
            _check_norm(m.norm, name, f"timm Eva {where} norm (scale_mlp)", eps)
        seen.add((kind, d_mlp, act, not _is_identity(m.norm)))
    if len(seen) != 1:
        raise _unsupported(name, "MLPs that differ between blocks")
    return seen.pop()


def config_from_timm_eva(trunk: nn.Module, head: Optional[nn.Linear], name: str) -> VisionConfig:
    """The `VisionConfig` (family "timm_eva") of a timm `Eva`; `head` the linear map after its pooling
    (timm's head or open_clip's TimmModel proj), None for none. Refuses what EvaTower does not mirror."""
    from timm.layers import RotaryEmbeddingCat, RotaryEmbeddingDinoV3
    from timm.models.eva import EvaBlock as TimmEvaBlock

    from lake_interp.model.convert_timm import _check_norm, _is_identity, attn_pool_shape, timm_activation

    if type(trunk).__name__ != "Eva":
        raise _unsupported(name, f"subclass {type(trunk).__name__}")
    if not len(trunk.blocks):
        raise _unsupported(name, "without blocks")
    for i, block in enumerate(trunk.blocks):
        if type(block) is not TimmEvaBlock:
            raise _unsupported(name, f"block {i} type {type(block).__name__}",
                               "use_post_norm: only the pre-norm EvaBlock")
    first = trunk.blocks[0]
    eps = first.norm1.eps
    for i, block in enumerate(trunk.blocks):
        for norm in (block.norm1, block.norm2):
            _check_norm(norm, name, f"timm Eva block {i}", eps)
    pe = trunk.patch_embed
    if trunk.dynamic_img_size and (trunk.pos_embed is not None or getattr(pe, "output_fmt", None) != "NHWC"):
        # timm resamples absolute positions to each input size; without them (DINOv3) the tower is timm's
        # at the built size (other sizes are refused by the tower's input check)
        raise _unsupported(name, "dynamic_img_size with absolute positions")
    (h, w), (ph, pw) = pe.img_size, pe.patch_size
    if h != w or ph != pw:
        raise _unsupported(name, f"non-square img_size {pe.img_size} / patch_size {pe.patch_size}")
    if (not _is_identity(pe.norm) or (not pe.flatten and not trunk.dynamic_img_size) or type(pe.proj) is not nn.Conv2d
            or getattr(pe, "dynamic_img_pad", False)):
        raise _unsupported(name, "patch embedding with a norm, padding, unflattened output or a non-conv projection")
    if pe.proj.stride != pe.proj.kernel_size or pe.proj.padding != (0, 0):
        raise _unsupported(name, "patch embedding with overlapping patches")
    if trunk.pos_embed is None and trunk.rope is None:
        raise _unsupported(name, "without any positions (use_abs_pos_emb=False, no rotary embedding)")
    if trunk.rope is not None:
        if getattr(trunk, "rope_mixed", False) or type(trunk.rope) not in (RotaryEmbeddingCat, RotaryEmbeddingDinoV3):
            raise _unsupported(name, f"rotary embedding {type(trunk.rope).__name__}",
                               "only rope_type='cat' and 'dinov3'")
    has_bias, qk_norm, rotary, attn_ln = _attention_options(trunk, name, eps)
    mlp, d_mlp, act, mlp_ln = _mlp_options(trunk, name, eps)
    gammas = {(b.gamma_1 is not None, b.gamma_2 is not None) for b in trunk.blocks}
    if len(gammas) != 1:
        raise _unsupported(name, "LayerScale in some blocks only")
    ls_attn, ls_mlp = gammas.pop()
    if ls_mlp and not ls_attn:
        raise _unsupported(name, "LayerScale on the MLP only")
    for src, what in ((trunk.norm_pre, "norm_pre"), (trunk.norm, "norm"), (trunk.fc_norm, "fc_norm")):
        if not _is_identity(src):
            _check_norm(src, name, f"timm Eva {what}", eps)
    n_prefix = trunk.num_prefix_tokens
    class_token = trunk.cls_token is not None
    n_reg = 0 if trunk.reg_token is None else trunk.reg_token.shape[1]
    if n_prefix != int(class_token) + n_reg:
        raise _unsupported(name, f"prefix of {n_prefix} tokens ({int(class_token)} class, {n_reg} registers)")
    grid = h // ph
    pos_embed_prefix = not trunk.no_embed_class
    n_pos = grid**2 + (n_prefix if pos_embed_prefix else 0) if trunk.pos_embed is None else trunk.pos_embed.shape[1]
    if n_pos != grid**2 + (n_prefix if pos_embed_prefix else 0):
        raise _unsupported(name, f"pos_embed of {n_pos} positions for a {grid}x{grid} grid")
    heads = pool_d_mlp = 0
    if trunk.attn_pool is not None:
        heads, pool_d_mlp = attn_pool_shape(trunk, name, eps, act, "timm Eva")
        pool_type = "map"
    elif trunk.global_pool == "token":
        pool_type = "tok"
    elif trunk.global_pool == "avg":
        pool_type = "avg"
    else:
        raise _unsupported(name, f"global_pool={trunk.global_pool!r}", "token, avg or map")
    if head is None:
        projection, output_dim = "none", trunk.embed_dim
    else:
        projection, output_dim = ("linear_bias" if head.bias is not None else "linear"), head.out_features
    block = BlockConfig(d_model=trunk.embed_dim, n_heads=first.attn.num_heads, d_mlp=d_mlp, act=act, ln_eps=eps,
                        layer_scale=ls_attn, qkv_bias=has_bias, qk_norm=qk_norm)
    options = {"rope": rotary, "attn_ln": attn_ln, "mlp": mlp, "mlp_ln": mlp_ln, "mlp_layer_scale": ls_mlp,
               "abs_pos": trunk.pos_embed is not None}
    return VisionConfig(
        block=block, n_layers=len(trunk.blocks), image_size=h, patch_size=ph, output_dim=output_dim,
        ln_pre=not _is_identity(trunk.norm_pre), pool_type=pool_type, n_prefix=n_prefix, family="timm_eva",
        class_token=class_token, patch_bias=pe.proj.bias is not None, pos_embed_prefix=pos_embed_prefix,
        ln_post=not _is_identity(trunk.norm), fc_norm=not _is_identity(trunk.fc_norm), projection=projection,
        attn_pool_heads=heads, attn_pool_d_mlp=pool_d_mlp, options=options,
    )


def _qkv(attn: nn.Module) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """timm Eva attention -> (in_proj_weight [3d, d], in_proj_bias [3d] or None): rows [W_Q; W_K; W_V];
    EVA's key bias is a zero buffer (`k_bias`) or absent (k_proj without bias): zeros."""
    if attn.qkv is not None:
        weight = attn.qkv.weight.detach()
        if attn.qkv.bias is not None:
            return weight, attn.qkv.bias.detach()
        if getattr(attn, "q_bias", None) is not None:
            return weight, torch.cat([attn.q_bias.detach(), attn.k_bias.detach(), attn.v_bias.detach()])
        return weight, None
    projs = (attn.q_proj, attn.k_proj, attn.v_proj)
    weight = torch.cat([p.weight.detach() for p in projs])
    if all(p.bias is None for p in projs):
        return weight, None
    return weight, torch.cat([p.bias.detach() if p.bias is not None else torch.zeros_like(p.weight[:, 0]).detach()
                              for p in projs])


def _linear(out: dict, prefix: str, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    out[f"{prefix}.weight"] = weight
    if bias is not None:
        out[f"{prefix}.bias"] = bias


def state_dict_from_timm_eva(trunk: nn.Module, head: Optional[nn.Linear]) -> dict[str, torch.Tensor]:
    """timm Eva parameter names -> EvaTower's (no `visual.` prefix); the rope table as `rope`."""
    from timm.layers import GluMlp

    from lake_interp.model.convert_timm import _is_identity, attn_pool_state

    out: dict[str, torch.Tensor] = {}
    _linear(out, "conv1", trunk.patch_embed.proj.weight, trunk.patch_embed.proj.bias)
    if trunk.cls_token is not None:
        out["class_embedding"] = trunk.cls_token.detach().reshape(-1)
    if trunk.reg_token is not None:
        out["register_tokens"] = trunk.reg_token.detach()[0]
    if trunk.pos_embed is not None:
        out["positional_embedding"] = trunk.pos_embed.detach()[0]
    if trunk.rope is not None:
        was_training = trunk.rope.training
        trunk.rope.eval()  # no train-time coordinate augmentation
        # the table timm's Eva._pos_embed uses at the built size
        if trunk.dynamic_img_size or not hasattr(trunk.rope, "feat_shape"):
            table = trunk.rope.get_embed(shape=trunk.patch_embed.grid_size)
        else:
            table = trunk.rope.get_embed()
        out["rope"] = table.detach().float()
        trunk.rope.train(was_training)
    for src, dst in ((trunk.norm_pre, "ln_pre"), (trunk.norm, "ln_post"), (trunk.fc_norm, "fc_norm")):
        if not _is_identity(src):
            _linear(out, dst, src.weight, src.bias)
    for i, block in enumerate(trunk.blocks):
        p, a, m = f"blocks.{i}", block.attn, block.mlp
        _linear(out, f"{p}.ln1", block.norm1.weight, block.norm1.bias)
        _linear(out, f"{p}.ln2", block.norm2.weight, block.norm2.bias)
        out[f"{p}.attn.in_proj_weight"], bias = _qkv(a)
        if bias is not None:
            out[f"{p}.attn.in_proj_bias"] = bias
        for src, dst in ((a.q_norm, "q_norm"), (a.k_norm, "k_norm"), (a.norm, "ln")):
            if not _is_identity(src):
                _linear(out, f"{p}.attn.{dst}", src.weight, src.bias)
        _linear(out, f"{p}.attn.out_proj", a.proj.weight, a.proj.bias)
        if block.gamma_1 is not None:
            out[f"{p}.ls1.gamma"] = block.gamma_1
        if block.gamma_2 is not None:
            out[f"{p}.ls2.gamma"] = block.gamma_2
        if isinstance(m, GluMlp):  # packed fc1: act(first half) * second half (gate_last: the other way)
            first, second = m.fc1.weight.detach().chunk(2), m.fc1.bias.detach().chunk(2)
            g, x = (1, 0) if m.gate_last else (0, 1)
            _linear(out, f"{p}.mlp.gate", first[g], second[g])
            _linear(out, f"{p}.mlp.c_fc", first[x], second[x])
        elif hasattr(m, "fc1_g"):  # SwiGLU
            _linear(out, f"{p}.mlp.gate", m.fc1_g.weight, m.fc1_g.bias)
            _linear(out, f"{p}.mlp.c_fc", m.fc1_x.weight, m.fc1_x.bias)
        else:
            _linear(out, f"{p}.mlp.c_fc", m.fc1.weight, m.fc1.bias)
        if not _is_identity(m.norm):
            _linear(out, f"{p}.mlp.ln", m.norm.weight, m.norm.bias)
        _linear(out, f"{p}.mlp.c_proj", m.fc2.weight, m.fc2.bias)
    out.update(attn_pool_state(trunk))
    if head is not None:
        _linear(out, "head", head.weight, head.bias)
    return out


def check_timm_eva(model_cfg: dict, name: str) -> None:
    """Refuse, from an open_clip model config alone, an Eva tower `config_from_timm_eva` would refuse:
    the timm trunk is built on the meta device (no memory, no weights, no download), as open_clip's
    TimmModel builds it, and read. NotImplementedError naming the model and the option."""
    import timm

    vision = model_cfg.get("vision_cfg", {})
    proj = vision.get("timm_proj", "linear")
    n_classes = model_cfg.get("embed_dim", 0) if not proj else 0  # no extra proj: timm's head is it
    with torch.device("meta"):
        trunk = timm.create_model(vision["timm_model_name"], pretrained=False, num_classes=n_classes,
                                  global_pool=vision.get("timm_pool", "avg"))
    config_from_timm_eva(trunk, trunk.head if isinstance(trunk.head, nn.Linear) else None, name)
