"""The MLP of a block: c_fc -> activation -> c_proj. `hook_post` holds "the MLP neurons"."""

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from lake_interp.model.config import BlockConfig


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), as OpenAI CLIP (open_clip `quick_gelu`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    if name == "silu":  # the gate of SwiGLU MLPs (timm Eva)
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; expected gelu, gelu_tanh, quick_gelu or silu")


class MLP(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]: before the activation
        self.act = make_activation(cfg.act)
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]: after the activation (the neurons)
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model)

    # TransformerLens weight views (shared storage): hidden = x @ W_in + b_in; out = post @ W_out + b_out
    W_in = property(lambda self: self.c_fc.weight.T, doc="[d_model, d_mlp]")
    b_in = property(lambda self: self.c_fc.bias, doc="[d_mlp]")
    W_out = property(lambda self: self.c_proj.weight.T, doc="[d_mlp, d_model]")
    b_out = property(lambda self: self.c_proj.bias, doc="[d_model]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.hook_post(self.act(self.hook_pre(self.c_fc(x)))))
