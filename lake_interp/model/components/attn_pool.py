"""timm's attention pool with a latent query (`AttentionPoolLatent`: SigLIP's MAP head, PE-Core's pool).

One learned latent query attends over the tokens; the attended values go through `proj`, then a
residual MLP: out = y + mlp(norm(y)), y = proj(attention(latent, tokens)). Hook points:

    attn_pool.hook_pattern  [batch, head, latent, pos]  the latent query's attention over the tokens
    attn_pool.hook_out      [batch, d_model]            the pool's output (after its MLP)

Its inner LayerNorm and MLP are plain modules (no hook points of their own).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.hooks import has_hooks
from lake_interp.model.components.mlp import make_activation


class AttentionPool(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, act: str = "gelu", ln_eps: float = 1e-6):
        super().__init__()
        self.n_heads = n_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, d_model))  # [1, latent, d_model]
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)  # rows [W_K; W_V]
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=ln_eps)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), make_activation(act), nn.Linear(d_mlp, d_model))
        self.hook_pattern = HookPoint()  # [batch, head, latent, pos]
        self.hook_out = HookPoint()  # [batch, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, pos, d_model] -> [batch, d_model]."""
        q = rearrange(self.q(self.latent.to(x.dtype)), "one l (h e) -> one h l e", h=self.n_heads)
        q = q.expand(x.shape[0], -1, -1, -1)
        k, v = rearrange(self.kv(x), "b p (two h e) -> two b h p e", two=2, h=self.n_heads)
        if has_hooks(self.hook_pattern):
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            z = self.hook_pattern(scores.softmax(dim=-1)) @ v
        else:  # the same function, fused, when nobody looks at the pattern
            z = F.scaled_dot_product_attention(q, k, v)
        y = self._out(rearrange(z, "b h l e -> b l (h e)"))
        return self.hook_out(y[:, 0])

    def each_token(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> [..., d_model]: the pool's output for every token as if the latent query
        attended to that token alone (attention 1 on it: the attended value is its own value). Fires
        no hooks."""
        d = x.shape[-1]
        v = F.linear(x, self.kv.weight[d:], self.kv.bias[d:])
        return self._out(v)

    def _out(self, z: torch.Tensor) -> torch.Tensor:
        y = self.proj(z)
        return y + self.mlp(self.norm(y))
