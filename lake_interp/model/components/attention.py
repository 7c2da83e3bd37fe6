"""Multi-head self-attention with the weights of `nn.MultiheadAttention` (fused in_proj).

timm's `Attention` has the same layout (`qkv` rows [W_Q; W_K; W_V], `proj`); its options here:
no qkv bias (`BlockConfig.qkv_bias=False`) and QK-norm (`BlockConfig.qk_norm`: LayerNorm over d_head
of queries and keys, `q_norm` / `k_norm`). With QK-norm, `hook_q` / `hook_k` hold the normalised
queries and keys: what the scores read (pattern = softmax(hook_q . hook_k / sqrt(d_head)))."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.hooks import has_hooks
from lake_interp.model.config import BlockConfig


class Attention(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))  # rows: [W_Q; W_K; W_V]
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d)) if cfg.qkv_bias else None
        # QK-norm (timm qk_norm): plain LayerNorms over d_head (no hook points of their own)
        self.q_norm = nn.LayerNorm(cfg.d_head, eps=cfg.ln_eps) if cfg.qk_norm else None
        self.k_norm = nn.LayerNorm(cfg.d_head, eps=cfg.ln_eps) if cfg.qk_norm else None
        self.out_proj = nn.Linear(d, d)
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], mask added
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos], softmax of scores
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]: pattern-weighted values
        nn.init.xavier_uniform_(self.in_proj_weight)

    # ----------------------------------------------------------------- TransformerLens weight views
    # Views of the fused open_clip weights (they share storage: edits write through), in the shapes of
    # TransformerLens: q = x @ W_Q[h] + b_Q[h]; attn output = sum_h z[h] @ W_O[h] + b_O (LayerScale
    # of the block, if any, multiplies after).
    def _in(self, i: int) -> torch.Tensor:
        d = self.in_proj_weight.shape[1]
        return rearrange(self.in_proj_weight[i * d : (i + 1) * d], "(h e) m -> h m e", h=self.n_heads)

    def _in_bias(self, i: int) -> torch.Tensor:
        d = self.in_proj_weight.shape[1]
        if self.in_proj_bias is None:  # no qkv bias: zeros (a copy, not a view)
            return self.in_proj_weight.new_zeros(self.n_heads, d // self.n_heads)
        return rearrange(self.in_proj_bias[i * d : (i + 1) * d], "(h e) -> h e", h=self.n_heads)

    W_Q = property(lambda self: self._in(0), doc="[n_heads, d_model, d_head]")
    W_K = property(lambda self: self._in(1), doc="[n_heads, d_model, d_head]")
    W_V = property(lambda self: self._in(2), doc="[n_heads, d_model, d_head]")
    b_Q = property(lambda self: self._in_bias(0), doc="[n_heads, d_head]")
    b_K = property(lambda self: self._in_bias(1), doc="[n_heads, d_head]")
    b_V = property(lambda self: self._in_bias(2), doc="[n_heads, d_head]")
    W_O = property(lambda self: rearrange(self.out_proj.weight, "m (h e) -> h e m", h=self.n_heads),
                   doc="[n_heads, d_head, d_model]")
    b_O = property(lambda self: self.out_proj.bias, doc="[d_model]")

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [batch, pos, d_model]; attn_mask: additive [pos, pos] or None. Returns [batch, pos, d_model]."""
        q, k, v = self.qkv(x)
        return self.out_proj(rearrange(self.attend(q, k, v, attn_mask), "b p h d -> b p (h d)"))

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [batch, pos, d_model] -> q, k, v [batch, pos, head, d_head] (QK-norm applied; fires hook_q/k/v)."""
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = rearrange(qkv, "b p (three h d) -> three b p h d", three=3, h=self.n_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return self.hook_q(q), self.hook_k(k), self.hook_v(v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """q, k, v: [batch, pos, head, d_head] as the scores read them -> z [batch, pos, head, d_head]
        (fires hook_attn_scores, hook_pattern, hook_z; rotary towers call it after the rotation)."""
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        if has_hooks(self.hook_attn_scores) or has_hooks(self.hook_pattern):
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
            if attn_mask is not None:
                scores = scores + attn_mask
            pattern = self.hook_pattern(self.hook_attn_scores(scores).softmax(dim=-1))
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        else:  # same function, fused kernel, when nobody looks at the pattern
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask
            ).transpose(1, 2)
        return self.hook_z(z)
