"""The vision tower: open_clip's `VisionTransformer` (no attentional pooling)."""

from typing import Optional

import torch
from einops import rearrange
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.block import TransformerBlock
from lake_interp.model.components.layer_norm import LayerNorm
from lake_interp.model.components.weights import TowerWeights
from lake_interp.model.config import VisionConfig


def check_image_batch(images: torch.Tensor, size: int) -> None:
    """ValueError unless images is [batch, 3, size, size] (every vision tower's input)."""
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"images of shape {tuple(images.shape)}; this model takes [batch, 3, {size}, {size}] "
                         f"(use model.preprocess, or pass PIL images / paths to the lake_interp tools)")


class VisionTower(TowerWeights, nn.Module):
    """Token order: position 0 is the class token, then the patches in row-major order."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.block.d_model
        n_pos = cfg.grid_size**2 + 1
        self.conv1 = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.positional_embedding = nn.Parameter(torch.zeros(n_pos, d))
        self.hook_embed = HookPoint()  # [batch, pos, d_model]: tokens + positions, before ln_pre
        self.ln_pre = LayerNorm(d, cfg.block.ln_eps) if cfg.ln_pre else nn.Identity()
        self.blocks = nn.ModuleList(TransformerBlock(cfg.block) for _ in range(cfg.n_layers))
        # ln_post: [batch, pos, d_model], or [batch, d_model] with final_ln_after_pool
        self.ln_post = LayerNorm(d, cfg.block.ln_eps)
        self.hook_pooled = HookPoint()  # [batch, d_model]: pooled, after ln_post
        self.proj = nn.Parameter(torch.zeros(d, cfg.output_dim))
        self.hook_image_embed = HookPoint()  # [batch, output_dim]

    @property
    def W_E(self) -> torch.Tensor:
        """[3 * patch_size ** 2, d_model]: the patch embedding as a matrix (input order: channel, row,
        column of the patch's pixels, as `conv1.weight` flattened)."""
        return rearrange(self.conv1.weight, "d c ph pw -> (c ph pw) d")

    @property
    def W_pos(self) -> torch.Tensor:
        """[n_ctx, d_model]: position 0 the class token's, then the patches row-major."""
        return self.positional_embedding

    @property
    def W_proj(self) -> torch.Tensor:
        """[d_model, embed_dim]: into the joint space (after ln_post)."""
        return self.proj

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [batch, 3, image_size, image_size] -> [batch, output_dim]."""
        x = self.residual(images)
        if self.cfg.final_ln_after_pool:
            pooled = self.ln_post(self._pool(x))
        else:
            pooled = self._pool(self.ln_post(x))
        return self.hook_image_embed(self.hook_pooled(pooled) @ self.proj)

    def residual(self, images: torch.Tensor, stop_at_layer: Optional[int] = None) -> torch.Tensor:
        """The residual stream after the last block: [batch, 1 + grid**2, d_model]. `stop_at_layer`
        (TransformerLens's): run only blocks[:stop_at_layer] (and fire only their hooks)."""
        check_image_batch(images, self.cfg.image_size)
        x = self.conv1(images.to(self.conv1.weight.dtype))
        x = rearrange(x, "b d gh gw -> b (gh gw) d")
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(self.hook_embed(x))
        for block in self.blocks[:stop_at_layer]:
            x = block(x)
        return x

    def project_tokens(self, resid: torch.Tensor) -> torch.Tensor:
        """Every token into the joint image-text space: ln_post then proj, per token.

        resid: [..., d_model] (any block's residual) -> [..., output_dim]. Fires no hooks.
        """
        return self.ln_post.normalize_unhooked(resid) @ self.proj

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.cfg.pool_type == "tok" else x[:, self.cfg.n_prefix:].mean(dim=1)
