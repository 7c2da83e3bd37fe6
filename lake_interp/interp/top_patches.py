"""Top-activating patches of neurons over a dataset, streamed in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from lake_interp.interp.stream import neuron_list, stream_activations, to_pixels
from lake_interp.interp.targets import Neurons


@dataclass
class TopPatches:
    """For each of N neurons, its k = min(n, patches seen) highest-activating patches, best first.

    image_index: position of the image in the stream (0-based, the order `images` was iterated in);
    (row, col): the patch in the grid, pixels [row * p, (row + 1) * p) x [col * p, (col + 1) * p) of the
    image squash-resized to the model input (p = patch_size); crops: those pixels with `margin` pixels
    of context on each side (zero padded at the border), so the patch is crops[..., m:m+p, m:m+p, :].
    """

    neurons: list[tuple[str, int]]  # N (hook, channel), grouped by hook
    values: torch.Tensor  # [N, k] float32 activations, descending
    image_index: torch.Tensor  # [N, k] long
    row: torch.Tensor  # [N, k] long
    col: torch.Tensor  # [N, k] long
    crops: torch.Tensor  # [N, k, p + 2m, p + 2m, 3] uint8
    patch_size: int
    margin: int
    n_images: int

    def subset(self, neurons: list[tuple[str, int]]) -> "TopPatches":
        """The same result restricted to some of its neurons (in the order given)."""
        pos = [self.neurons.index((h, int(c))) for h, c in neurons]
        return TopPatches(list(neurons), self.values[pos], self.image_index[pos], self.row[pos], self.col[pos],
                          self.crops[pos], self.patch_size, self.margin, self.n_images)

    def rows(self) -> list[dict]:
        """One record per (neuron, rank), e.g. for a pandas DataFrame."""
        return [
            {"hook": h, "channel": c, "rank": r, "image_index": int(self.image_index[i, r]),
             "row": int(self.row[i, r]), "col": int(self.col[i, r]), "activation": float(self.values[i, r])}
            for i, (h, c) in enumerate(self.neurons) for r in range(self.values.shape[1])
        ]


def patch_crops(pixels: torch.Tensor, patch_size: int, margin: int) -> torch.Tensor:
    """Every patch of [B, S, S, 3] uint8 with `margin` px of context: [B * g * g, p + 2m, p + 2m, 3], row-major."""
    padded = F.pad(pixels.permute(0, 3, 1, 2), (margin,) * 4).permute(0, 2, 3, 1)
    side = patch_size + 2 * margin
    windows = padded.unfold(1, side, patch_size).unfold(2, side, patch_size)  # [B, g, g, 3, side, side]
    return rearrange(windows, "b gh gw ch y x -> (b gh gw) y x ch")


def top_activating_patches(model, images: Any, neurons: Neurons, n: int = 9, batch_size: int = 16,
                           margin: int | None = None) -> TopPatches:
    """Stream `images` once (PIL images, paths, Samples, a dataset, a generator, or a [B, 3, S, S]
    tensor) and keep, per neuron, the top-n patches over all images (class token excluded).

    Memory is bounded by one batch plus a [N, n] buffer merged with each batch by torch.topk.
    margin: context pixels around each crop (default patch_size // 2).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grouped, pairs = neuron_list(model, neurons)
    p = model.cfg.vision.patch_size
    m = p // 2 if margin is None else margin
    g, N = model.grid_size, len(pairs)
    values = torch.empty(N, 0)
    ids = torch.empty(N, 0, dtype=torch.long)  # flat patch id: image_index * g*g + row * g + col
    crops = torch.empty(N, 0, p + 2 * m, p + 2 * m, 3, dtype=torch.uint8)
    n_images = 0
    for chunk in stream_activations(model, images, grouped, batch_size):
        B, P, _ = chunk.acts.shape
        new_ids = torch.arange(chunk.start * P, (chunk.start + B) * P).expand(N, -1)
        top = torch.cat([values, rearrange(chunk.acts, "b p n -> n (b p)")], 1).topk(min(n, values.shape[1] + B * P), dim=1)
        old = top.indices < values.shape[1]  # [N, k] kept from the buffer, else from this batch
        ids = torch.cat([ids, new_ids], 1).gather(1, top.indices)
        merged = torch.empty(N, top.indices.shape[1], *crops.shape[2:], dtype=torch.uint8)
        merged[old] = crops[old.nonzero()[:, 0], top.indices[old]]
        if (~old).any():
            merged[~old] = patch_crops(to_pixels(chunk.batch, model), p, m)[ids[~old] - chunk.start * P]
        values, crops = top.values, merged
        n_images += B
    if n_images == 0:
        raise ValueError("top_activating_patches got no images")
    image_index, patch = ids // (g * g), ids % (g * g)
    return TopPatches(pairs, values, image_index, patch // g, patch % g, crops, p, m, n_images)
