"""A tiny HookedCLIP with a planted residual channel that fires on one colour."""

import torch

MAGENTA = (255, 0, 255)


@torch.no_grad()
def plant_color_channel(model, channel: int, gain: float = 8.0, brightness: float = 1.0):
    """Make residual channel `channel` of every vision block equal, per patch, to
    gain * mean(R + B - 2G) + brightness * mean((R + G + B) / 3) of the raw pixels in [0, 1]
    (minus a constant): it fires on magenta and, through the brightness term, varies on normal
    images so that a variance criterion can see it. No block writes to the channel, so
    `visual.blocks.{l}.hook_resid_post[..., channel]` is exactly that response."""
    v = model.visual
    p = model.cfg.vision.patch_size
    std = torch.tensor(model.image_std)
    coefs = gain * torch.tensor([1.0, -2.0, 1.0]) + brightness * torch.ones(3) / 3
    # normalised input x_n = (x - mean) / std, so x = x_n * std + mean: weight coef * std / p^2
    v.conv1.weight[channel] = (coefs * std).view(3, 1, 1).expand(3, p, p) / p**2
    v.positional_embedding[:, channel] = 0.0
    v.class_embedding[channel] = 0.0
    for block in v.blocks:
        block.attn.out_proj.weight[channel] = 0.0
        block.attn.out_proj.bias[channel] = 0.0
        block.mlp.c_proj.weight[channel] = 0.0
        block.mlp.c_proj.bias[channel] = 0.0
    return model
