"""LayerNorm with TransformerLens hook points, computed in fp32 (float64 inputs: float64) and cast back.

Hook semantics as in TransformerLens: `hook_scale` is sqrt(var + eps) and `hook_normalized` the
centred input divided by it, BEFORE the weight and bias; `hook_out` is the output of the layer
(after weight and bias: what the next sublayer reads).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.components.hooks import has_hooks


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.normalized_shape = (d_model,)  # a constant, not read off the input (ONNX export traces it)
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # [..., 1]: sqrt(var + eps) of each vector
        self.hook_normalized = HookPoint()  # [..., d_model]: (x - mean) / scale, before weight and bias
        self.hook_out = HookPoint()  # [..., d_model]: output, after weight and bias

    @property
    def w(self) -> torch.Tensor:
        """TransformerLens name of the weight."""
        return self.weight

    @property
    def b(self) -> torch.Tensor:
        """TransformerLens name of the bias."""
        return self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalize(x, hooked=True)

    def normalize_unhooked(self, x: torch.Tensor) -> torch.Tensor:
        """The same function without firing hooks (for dense token projections)."""
        return self._normalize(x, hooked=False)

    def _normalize(self, x: torch.Tensor, hooked: bool) -> torch.Tensor:
        dtype = x.dtype
        compute = torch.promote_types(dtype, torch.float32)  # fp32 for fp16/bf16, float64 stays float64
        inner = hooked and (has_hooks(self.hook_scale) or has_hooks(self.hook_normalized))
        if not inner:  # same function, one fused kernel, when scale and normalized are not looked at
            out = F.layer_norm(x.to(compute), self.normalized_shape, self.weight.to(compute), self.bias.to(compute), self.eps).to(dtype)
            return self.hook_out(out) if hooked else out
        x = x.to(compute)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        normalized = self.hook_normalized(x / scale)
        return self.hook_out((normalized * self.weight.to(compute) + self.bias.to(compute)).to(dtype))
