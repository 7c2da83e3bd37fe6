"""Hook point names from LakeConfig sites and layers (layers relative to depth or absolute).

The sites (block hooks with a channel axis) and the name format come from the registry,
`lake_interp.model.hook_sites`.
"""

from __future__ import annotations

from typing import Sequence

from lake_interp.model.hook_sites import NEURON_SITES, block_hook_names

BLOCK_SITES = NEURON_SITES  # the sites whose channels LAKE can select


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
    return block_hook_names(sites, blocks, "visual")
