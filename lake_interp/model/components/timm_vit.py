"""The vision tower of a timm `VisionTransformer` (SigLIP, SigLIP2, DINOv2, ...), as open_clip's
`TimmModel` wraps it (`trunk` + its head / projection) or bare (a timm model: `HookedViT`).

Token order: the prefix first (`cfg.n_prefix` tokens: the class token at position 0 where the model
has one (`cfg.class_token`), then the register tokens), then the patches in row-major order.
SigLIP has no prefix (n_prefix 0); DINOv2 the class token (1) and, the `_reg4_` models, 4 registers (5).

Forward, as timm: patch embedding (`conv1`, with bias), prefix tokens and positions (positions
cover the prefix unless timm's `no_embed_class`) -> `hook_embed` -> `ln_pre` (timm `norm_pre`, where
present) -> blocks (open_clip's pre-LN block layout: ln1 / attn / ls1, ln2 / mlp / ls2) -> `ln_post`
(timm `norm`) -> pooling ("tok": the class token; "avg": the patches' mean; "map": `attn_pool`) ->
`fc_norm` (where present) -> `hook_pooled` -> `head` (timm head or open_clip's proj, where present)
-> `hook_image_embed`.

Hook names are those of open_clip's tower (`VisionTower`), plus `attn_pool.*` and `fc_norm.*`
(lake_interp.model.hook_sites).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.attn_pool import AttentionPool
from lake_interp.model.components.block import TransformerBlock
from lake_interp.model.components.layer_norm import LayerNorm
from lake_interp.model.components.weights import TowerWeights
from lake_interp.model.components.vision import check_image_batch
from lake_interp.model.config import VisionConfig


class TimmViTTower(TowerWeights, nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        d, eps = cfg.block.d_model, cfg.block.ln_eps
        self.conv1 = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=cfg.patch_bias)
        self.class_embedding = nn.Parameter(torch.zeros(d)) if cfg.class_token else None
        self.register_tokens = nn.Parameter(torch.zeros(cfg.n_registers, d)) if cfg.n_registers else None
        n_pos = cfg.grid_size**2 + (cfg.n_prefix if cfg.pos_embed_prefix else 0)
        self.positional_embedding = nn.Parameter(torch.zeros(n_pos, d))
        self.hook_embed = HookPoint()  # [batch, pos, d_model]: prefix + patch tokens + positions, before ln_pre
        self.ln_pre = LayerNorm(d, eps) if cfg.ln_pre else nn.Identity()
        self.blocks = nn.ModuleList(self.make_block(i) for i in range(cfg.n_layers))
        self.ln_post = LayerNorm(d, eps) if cfg.ln_post else None  # [batch, pos, d_model]
        self.attn_pool = (AttentionPool(d, cfg.attn_pool_heads, cfg.attn_pool_d_mlp, cfg.block.act, eps)
                          if cfg.pool_type == "map" else None)
        self.fc_norm = LayerNorm(d, eps) if cfg.fc_norm else None  # [batch, d_model]
        self.hook_pooled = HookPoint()  # [batch, d_model]
        self.head = (nn.Linear(d, cfg.output_dim, bias=cfg.projection == "linear_bias")
                     if cfg.projection in ("linear", "linear_bias") else None)
        self.hook_image_embed = HookPoint()  # [batch, output_dim]

    def make_block(self, index: int) -> nn.Module:
        """Block `index` (a subclass may build another block type with the same hook names)."""
        return TransformerBlock(self.cfg.block)

    # ----------------------------------------------------------------- TransformerLens weight views
    @property
    def W_E(self) -> torch.Tensor:
        """[3 * patch_size ** 2, d_model]: the patch embedding as a matrix (bias: `conv1.bias`)."""
        return rearrange(self.conv1.weight, "d c ph pw -> (c ph pw) d")

    @property
    def W_pos(self) -> torch.Tensor:
        """[n_pos, d_model]: the prefix tokens' positions first where the model has them
        (`cfg.pos_embed_prefix`), then the patches row-major."""
        return self.positional_embedding

    @property
    def W_proj(self) -> torch.Tensor:
        """[d_model, output_dim]: the linear map from ln_post's output to the embedding, where pooling
        is linear ("tok" / "avg" without fc_norm); a bias of the head is left out (a constant)."""
        if self.cfg.pool_type == "map" or self.fc_norm is not None or self.ln_post is None:
            raise NotImplementedError(
                f"{self.cfg.original_architecture} tower with pool_type={self.cfg.pool_type!r}, "
                f"fc_norm={self.cfg.fc_norm}, ln_post={self.cfg.ln_post}: the embedding is not a linear map of "
                "ln_post's output (no projection matrix); use project_tokens for a per-token map")
        if self.head is None:
            return torch.eye(self.cfg.block.d_model, device=self.conv1.weight.device, dtype=self.conv1.weight.dtype)
        return self.head.weight.T

    # ----------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [batch, 3, image_size, image_size] -> [batch, output_dim]."""
        x = self.residual(images)
        if self.ln_post is not None:
            x = self.ln_post(x)
        pooled = self._pool(x)
        if self.fc_norm is not None:
            pooled = self.fc_norm(pooled)
        pooled = self.hook_pooled(pooled)
        return self.hook_image_embed(pooled if self.head is None else self.head(pooled))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[batch, 3, S, S] -> [batch, n_ctx, d_model]: prefix + patch tokens with positions (before hook_embed)."""
        check_image_batch(images, self.cfg.image_size)
        x = self.conv1(images.to(self.conv1.weight.dtype))
        x = rearrange(x, "b d gh gw -> b (gh gw) d")
        prefix = []
        if self.class_embedding is not None:
            prefix.append(self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1))
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.to(x.dtype).expand(x.shape[0], -1, -1))
        if self.positional_embedding is None:  # no absolute positions (timm Eva use_abs_pos_emb=False: DINOv3)
            return torch.cat([*prefix, x], dim=1)
        pos = self.positional_embedding.to(x.dtype)
        if self.cfg.pos_embed_prefix:
            return torch.cat([*prefix, x], dim=1) + pos
        return torch.cat([*prefix, x + pos], dim=1)

    def residual(self, images: torch.Tensor) -> torch.Tensor:
        """The residual stream after the last block: [batch, n_prefix + grid**2, d_model]."""
        x = self.ln_pre(self.hook_embed(self.embed(images)))
        for block in self.blocks:
            x = block(x)
        return x

    def project_tokens(self, resid: torch.Tensor) -> torch.Tensor:
        """Every token through the tower's head as if pooling had picked it alone: ln_post, then (MAP
        head) the attention pool with all its attention on that token, fc_norm, head.

        resid: [..., d_model] (any block's residual) -> [..., output_dim]. Fires no hooks."""
        x = resid if self.ln_post is None else self.ln_post.normalize_unhooked(resid)
        if self.attn_pool is not None:
            x = self.attn_pool.each_token(x)
        if self.fc_norm is not None:
            x = self.fc_norm.normalize_unhooked(x)
        return x if self.head is None else self.head(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool_type == "tok":
            return x[:, 0]
        patches = x[:, self.cfg.n_prefix:]
        return patches.mean(dim=1) if self.cfg.pool_type == "avg" else self.attn_pool(patches)

