"""A pre-LN residual block, as open_clip's `ResidualAttentionBlock` (optional LayerScale)."""

from typing import Optional

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.attention import Attention
from lake_interp.model.components.layer_norm import LayerNorm
from lake_interp.model.components.mlp import MLP
from lake_interp.model.config import BlockConfig


class LayerScale(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class TransformerBlock(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.d_model) if cfg.layer_scale else nn.Identity()
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]: what attention adds to the stream
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.ln2 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.mlp = MLP(cfg)
        self.ls2 = LayerScale(cfg.d_model) if cfg.layer_scale else nn.Identity()
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]: what the MLP adds to the stream
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, **attn_kwargs) -> torch.Tensor:
        """attn_kwargs go to the attention (rotary towers: `rope`)."""
        resid_pre = self.hook_resid_pre(x)
        attn_out = self.hook_attn_out(self.ls1(self.attn(self.ln1(resid_pre), attn_mask, **attn_kwargs)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.ls2(self.mlp(self.ln2(resid_mid))))
        return self.hook_resid_post(resid_mid + mlp_out)
