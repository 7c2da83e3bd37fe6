"""Vision token layout helpers."""

import math

import torch
from einops import rearrange


def patch_tokens(tokens: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """[batch, n_prefix + P, ...] vision tokens -> [batch, P, ...]: the patches, prefix tokens (class,
    registers) dropped. The one place tools skip the prefix (`HookedCLIP.patch_tokens` passes the model's)."""
    return tokens[:, n_prefix:]


def patch_grid(tokens: torch.Tensor, n_prefix: int | None = None) -> torch.Tensor:
    """Patch tokens as a grid: [batch, n_prefix + g*g, d] or [batch, g*g, d] -> [batch, g, g, d],
    row-major as the vision tower orders them. Without `n_prefix`, g*g tokens are all patches and
    1 + g*g tokens start with a class token."""
    if n_prefix is not None:
        tokens = patch_tokens(tokens, n_prefix)
    n = tokens.shape[1]
    g = math.isqrt(n)
    if g * g != n:  # a class token leads
        tokens, n = tokens[:, 1:], n - 1
        g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{tokens.shape[1]} tokens are neither g*g patches nor 1 + g*g with a class token")
    return rearrange(tokens, "b (gh gw) d -> b gh gw d", gh=g, gw=g)
