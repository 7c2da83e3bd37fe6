"""The text tower: open_clip's `TextTransformer` (as laid out in `CLIP` or `CustomTextCLIP`)."""

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.block import TransformerBlock
from lake_interp.model.components.layer_norm import LayerNorm
from lake_interp.model.components.weights import TowerWeights
from lake_interp.model.config import TextConfig


class TextTower(TowerWeights, nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.block.d_model
        self.token_embedding = nn.Embedding(cfg.vocab_size, d)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, d))
        self.hook_embed = HookPoint()  # [batch, pos, d_model]: tokens + positions
        self.blocks = nn.ModuleList(TransformerBlock(cfg.block) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(d, cfg.block.ln_eps)  # [batch, pos, d_model]
        self.hook_pooled = HookPoint()  # [batch, d_model]: the pooled token, after ln_final
        if cfg.projection == "param":
            self.text_projection = nn.Parameter(torch.zeros(d, cfg.output_dim))
        elif cfg.projection in ("linear", "linear_bias"):
            self.text_projection = nn.Linear(d, cfg.output_dim, bias=cfg.projection == "linear_bias")
        else:
            self.text_projection = None
        self.hook_text_embed = HookPoint()  # [batch, output_dim]
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask if cfg.causal_mask else None, persistent=False)

    @property
    def W_E(self) -> torch.Tensor:
        """[d_vocab, d_model]: the token embedding."""
        return self.token_embedding.weight

    @property
    def W_pos(self) -> torch.Tensor:
        """[n_ctx, d_model]"""
        return self.positional_embedding

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [batch, context_length] int -> [batch, output_dim]."""
        # the blocks' dtype, as open_clip's get_cast_dtype (embeddings may be kept fp32 in mixed precision)
        dtype = self.blocks[0].mlp.c_fc.weight.dtype if len(self.blocks) else self.positional_embedding.dtype
        x = self.token_embedding(tokens).to(dtype) + self.positional_embedding.to(dtype)
        x = self.hook_embed(x)
        for block in self.blocks:
            x = block(x, self.attn_mask)
        pooled = self.hook_pooled(self._pool(self.ln_final(x), tokens))
        return self.hook_text_embed(self._project(pooled))

    def _pool(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch = torch.arange(x.shape[0], device=x.device)
        pool = self.cfg.pool_type
        if pool == "first":
            return x[:, 0]
        if pool == "last":
            return x[:, -1]
        if pool == "argmax":  # the end-of-text token has the largest id
            return x[batch, tokens.argmax(dim=-1)]
        return x[batch, (tokens == self.cfg.eos_id).int().argmax(dim=-1)]  # "eos"

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return pooled
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection
