"""Vision token layout helpers."""

import math

import torch
from einops import rearrange


def patch_grid(tokens: torch.Tensor) -> torch.Tensor:
    """Patch tokens as a grid: [batch, 1 + g*g, d] (class token first) or [batch, g*g, d]
    -> [batch, g, g, d], row-major as the vision tower orders them."""
    n = tokens.shape[1]
    g = math.isqrt(n)
    if g * g != n:  # a class token leads
        tokens, n = tokens[:, 1:], n - 1
        g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{tokens.shape[1]} tokens are neither g*g patches nor 1 + g*g with a class token")
    return rearrange(tokens, "b (gh gw) d -> b gh gw d", gh=g, gw=g)
