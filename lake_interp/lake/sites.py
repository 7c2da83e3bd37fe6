"""Hook point names from LakeConfig sites and layers (layers relative to depth or absolute)."""

from __future__ import annotations

from typing import Sequence

BLOCK_SITES = (
    "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
    "mlp.hook_pre", "mlp.hook_post", "ln1.hook_normalized", "ln2.hook_normalized",
)


def resolve_layer(layer: int | float, n_layers: int) -> int:
    """float f in (0, 1] -> block round(f * n_layers) - 1; int -> block index (negative from the end)."""
    if isinstance(layer, float):
        if not 0.0 < layer <= 1.0:
            raise ValueError(f"relative layer {layer} must be in (0, 1]")
        return max(0, round(layer * n_layers) - 1)
    index = layer + n_layers if layer < 0 else layer
    if not 0 <= index < n_layers:
        raise ValueError(f"layer {layer} out of range for a tower of {n_layers} blocks")
    return index


def hook_names(sites: Sequence[str], layers: Sequence[int | float], n_layers: int) -> list[str]:
    """Vision hook names, e.g. ("hook_resid_post",), (0.5, 1.0), 12 -> visual.blocks.{5,11}.hook_resid_post."""
    for site in sites:
        if site not in BLOCK_SITES:
            raise ValueError(f"unknown site {site!r}; expected one of {BLOCK_SITES}")
    blocks = sorted({resolve_layer(layer, n_layers) for layer in layers})
    return [f"visual.blocks.{b}.{site}" for b in blocks for site in sites]
