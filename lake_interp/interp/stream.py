"""Stream images through the model in batches and read the patch activations of chosen neurons.

The one loop shared by the neuron views (top patches, heatmaps, statistics): at most one batch of
images is held at a time, and each batch costs one forward pass that caches only the hooks the
neurons live on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from lake_interp.interp.targets import Neurons, check_neurons
from lake_interp.lake.inputs import iter_batches, to_batch
from lake_interp.model.hook_sites import hook_label


@dataclass
class Chunk:
    """One batch of the stream.

    start: dataset index of the first image; items: the raw items of the batch (None for a tensor
    input); batch: [B, 3, S, S] model input; acts: [B, P, N] float32 on the CPU, patch tokens only
    (token 1 + r * g + c is patch (r, c), so P = g * g), one column per neuron in `neuron_list` order.
    """

    start: int
    items: Optional[list]
    batch: torch.Tensor
    acts: torch.Tensor


def neuron_list(model, neurons: Neurons) -> tuple[dict[str, torch.Tensor], list[tuple[str, int]]]:
    """Validated neurons (ValueError for unknown hooks or channels out of range): hook -> channels,
    and the flat (hook, channel) list, grouped by hook, that every view indexes its results by."""
    grouped = check_neurons(model, neurons)
    return grouped, [(h, int(i)) for h, idx in grouped.items() for i in idx]


iter_chunks = iter_batches  # the package's one batch iterator (lake_interp.lake.inputs.iter_batches)


@torch.no_grad()
def stream_activations(model, images: Any, grouped: dict[str, torch.Tensor], batch_size: int = 16) -> Iterator[Chunk]:
    """Yield a Chunk per batch: the activations of the neurons `grouped` (hook -> channels, from
    `neuron_list`) on every patch of every image."""
    hooks = list(grouped)
    start = 0
    for chunk in iter_batches(images, batch_size):
        batch = to_batch(chunk, model)
        _, cache = model.run_with_cache(batch, names_filter=hooks)
        acts = torch.cat([model.patch_tokens(cache[h])[..., idx.to(batch.device)] for h, idx in grouped.items()], dim=-1)
        items = None if isinstance(chunk, torch.Tensor) else chunk
        yield Chunk(start, items, batch, acts.float().cpu())
        start += batch.shape[0]


def to_pixels(batch: torch.Tensor, model) -> torch.Tensor:
    """Model input [B, 3, S, S] back to displayable pixels [B, S, S, 3] uint8 (undo the normalisation)."""
    mean = torch.tensor(model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.image_std).view(1, 3, 1, 1)
    x = batch.detach().float().cpu() * std + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def neuron_label(hook: str, channel: int) -> str:
    """Short label: visual.blocks.3.hook_resid_post, 7 -> 'L3.hook_resid_post[7]'."""
    return f"{hook_label(hook)}[{channel}]"
