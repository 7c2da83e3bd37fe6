"""Map post-processing: upsampling, Gaussian smoothing, fusion of the branches, image scores."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """[B, g, g] -> [B, size, size], bilinear (align_corners=False)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """1-D normalised Gaussian of radius int(truncate * sigma + 0.5), as scipy.ndimage."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of [B, H, W] with mirror padding (scipy mode="mirror")."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel(sigma).to(maps.device)
    r = k.numel() // 2
    x = maps[:, None].float()
    for weight, pad in ((k.view(1, 1, 1, -1), (r, r, 0, 0)), (k.view(1, 1, -1, 1), (0, 0, r, r))):
        if max(pad) >= min(x.shape[-2:]):  # padding larger than the map: fall back to replicate
            x = F.conv2d(F.pad(x, pad, mode="replicate"), weight)
        else:
            x = F.conv2d(F.pad(x, pad, mode="reflect"), weight)
    return x[:, 0]


def fuse(visual: torch.Tensor, semantic: torch.Tensor, text_weight: float) -> torch.Tensor:
    """(1 - text_weight) * visual + text_weight * semantic."""
    return (1.0 - text_weight) * visual + text_weight * semantic


def image_scores(maps: torch.Tensor, how: str = "max", top_fraction: float = 0.01) -> torch.Tensor:
    """[B, H, W] -> [B]: the map's max, or the mean of its top `top_fraction` pixels."""
    flat = maps.flatten(1)
    if how == "max":
        return flat.amax(dim=1)
    n = max(1, math.ceil(top_fraction * flat.shape[1]))
    return flat.topk(n, dim=1).values.mean(dim=1)
