"""LayerNorm with TransformerLens hook points, computed in fp32 and cast back."""

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.hooks import has_hooks


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # [..., 1]: sqrt(var + eps) of each vector
        self.hook_normalized = HookPoint()  # [..., d_model]: output, after weight and bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalize(x, hooked=True)

    def normalize_unhooked(self, x: torch.Tensor) -> torch.Tensor:
        """The same function without firing hooks (for dense token projections)."""
        return self._normalize(x, hooked=False)

    def _normalize(self, x: torch.Tensor, hooked: bool) -> torch.Tensor:
        dtype = x.dtype
        if not (hooked and has_hooks(self.hook_scale)):  # same function, one fused kernel, when the scale is not looked at
            out = F.layer_norm(x.float(), x.shape[-1:], self.weight.float(), self.bias.float(), self.eps).to(dtype)
            return self.hook_normalized(out) if hooked else out
        x = x.float()
        x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if hooked:
            scale = self.hook_scale(scale)
        out = (x / scale * self.weight.float() + self.bias.float()).to(dtype)
        return self.hook_normalized(out) if hooked else out
