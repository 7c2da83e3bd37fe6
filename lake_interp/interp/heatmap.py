"""Neuron heatmaps: where on one image each neuron fires, next to LAKE's anomaly map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from einops import rearrange

from lake_interp.interp.stream import neuron_list, stream_activations, to_pixels
from lake_interp.interp.targets import Neurons
from lake_interp.lake.fusion import upsample


@dataclass
class Heatmaps:
    """Activations of N neurons over the patch grid of one image (S = model input side, g = grid side)."""

    neurons: list[tuple[str, int]]  # N (hook, channel), grouped by hook
    image: np.ndarray  # [S, S, 3] uint8: the image as the model sees it (squash-resized, no crop)
    grid: torch.Tensor  # [N, g, g] activation of each patch
    maps: torch.Tensor  # [N, S, S] the grid upsampled bilinearly to the input size
    anomaly_map: Optional[torch.Tensor] = None  # [S, S] the lake's fused map, when a lake was given
    image_score: Optional[float] = None  # the lake's image score


def neuron_heatmap(model, image: Any, neurons: Neurons, lake=None) -> Heatmaps:
    """Heatmaps of `neurons` (NeuronSet or (hook, channel) pairs) on one image (PIL image, path,
    Sample or [3, S, S] tensor). With a fitted `lake` (built on this model), its anomaly map too."""
    if lake is not None and lake.model is not model:
        raise ValueError("neuron_heatmap: the lake was fitted on another model than the one given; pass lake.model")
    grouped, pairs = neuron_list(model, neurons)
    chunk = next(stream_activations(model, image, grouped, batch_size=2), None)
    if chunk is None or chunk.acts.shape[0] != 1:
        raise ValueError("neuron_heatmap takes exactly one image; use top_activating_patches or neuron_stats for many")
    grid = rearrange(chunk.acts[0], "(gh gw) n -> n gh gw", gh=model.grid_size)
    out = Heatmaps(pairs, to_pixels(chunk.batch, model)[0].numpy(), grid, upsample(grid, model.image_size))
    if lake is not None:
        scored = lake.score(chunk.batch)
        out.anomaly_map, out.image_score = scored.maps[0], float(scored.image_scores[0])
    return out
