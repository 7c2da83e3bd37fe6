"""Per-neuron activation statistics on normal vs anomalous patches, streamed over a labelled dataset.

Patch labels come from the ground-truth masks, resized (nearest) to the model input with the same
squash as `to_batch`: a patch is *anomalous* when its mask covers >= `min_fraction` of its pixels
(default 0.5), *normal* when it covers none (every patch of a normal image is normal), and a
*boundary* patch otherwise; boundary patches, and all patches of anomalous images without a mask,
are left out of both classes (counted in `n_boundary`, `n_skipped_images`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import reduce

from lake_interp.interp.stream import neuron_list, stream_activations
from lake_interp.interp.targets import Neurons
from lake_interp.lake.inputs import resize_mask
from lake_interp.metrics import auroc as auroc_metric
from lake_interp.model.hook_sites import parse_hook_name


@dataclass
class NeuronStats:
    """N neurons; moments and counts are exact, the samples are a uniform random subset (reservoir)
    of at most `max_samples` patches per class (all of them when fewer), and AUROC is computed on them."""

    neurons: list[tuple[str, int]]  # N (hook, channel), grouped by hook
    auroc: torch.Tensor  # [N] P(activation on an anomalous patch > on a normal one); 0.5 = no separation
    cohens_d: torch.Tensor  # [N] (anomalous mean - normal mean) / pooled std
    normal_mean: torch.Tensor  # [N]
    normal_std: torch.Tensor  # [N]
    anomalous_mean: torch.Tensor  # [N]
    anomalous_std: torch.Tensor  # [N]
    normal_samples: torch.Tensor  # [Mn, N] activations of sampled normal patches
    anomalous_samples: torch.Tensor  # [Ma, N]
    n_normal: int  # patches counted in each class
    n_anomalous: int
    n_boundary: int
    n_skipped_images: int
    min_fraction: float
    hook_counts: dict[str, int]  # where the neurons sit: per hook point,
    layer_counts: dict[int, int]  # per block index,
    site_counts: dict[str, int]  # per site (e.g. "hook_resid_post", "mlp.hook_post")

    def ranking(self) -> list[int]:
        """Neuron positions by decreasing AUROC."""
        return torch.argsort(self.auroc, descending=True, stable=True).tolist()


class _Class:
    """Streamed moments (Chan et al. merge, float64) and a bottom-k-random-key reservoir of rows."""

    def __init__(self, n_neurons: int, max_samples: int, generator: torch.Generator):
        self.n, self.mean, self.m2 = 0, torch.zeros(n_neurons, dtype=torch.float64), torch.zeros(n_neurons, dtype=torch.float64)
        self.keys, self.rows = torch.empty(0), torch.empty(0, n_neurons)
        self.cap, self.gen = max_samples, generator

    def add(self, x: torch.Tensor) -> None:  # x: [m, N]
        m = x.shape[0]
        if m == 0:
            return
        xd = x.double()
        mean_b = xd.mean(0)
        delta, total = mean_b - self.mean, self.n + m
        self.m2 += ((xd - mean_b) ** 2).sum(0) + delta**2 * self.n * m / total
        self.mean += delta * m / total
        self.n = total
        keys = torch.cat([self.keys, torch.rand(m, generator=self.gen)])
        rows = torch.cat([self.rows, x])
        keep = keys.topk(min(self.cap, keys.numel()), largest=False).indices
        self.keys, self.rows = keys[keep], rows[keep]

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / max(self.n, 1)).sqrt()


def patch_labels(item: Any, size: int, patch_size: int, min_fraction: float) -> torch.Tensor:
    """[P] per patch of a Sample: 1 anomalous, 0 normal, -1 boundary, -2 unknown (anomalous image without mask)."""
    if not hasattr(item, "label") or not hasattr(item, "mask"):
        raise ValueError(f"neuron_stats needs Samples with label and mask, got {type(item).__name__}")
    g = size // patch_size
    if item.mask is None:
        return torch.full((g * g,), 0 if item.label == 0 else -2)
    mask = resize_mask(item.mask, size)
    frac = torch.from_numpy(reduce(mask.astype(np.float32), "(gh p1) (gw p2) -> (gh gw)", "mean", p1=patch_size, p2=patch_size))
    return torch.where(frac >= min_fraction, 1, torch.where(frac == 0, 0, -1))


def depth_counts(pairs: list[tuple[str, int]]) -> tuple[dict[str, int], dict[int, int], dict[str, int]]:
    """Neuron counts per hook point, per block index and per site."""
    hooks = Counter(h for h, _ in pairs)
    layers, sites = Counter(), Counter()
    for h, c in hooks.items():
        parsed = parse_hook_name(h)
        if parsed.block is not None:
            layers[parsed.block] += c
            sites[parsed.site] += c
    return dict(hooks), dict(sorted(layers.items())), dict(sites)


def neuron_stats(model, dataset: Any, neurons: Neurons, batch_size: int = 16, min_fraction: float = 0.5,
                 max_samples: int = 20_000, seed: int = 0) -> NeuronStats:
    """Stream a dataset of Samples (label and mask) once and compare each neuron's activations on
    anomalous vs normal patches (see the module docstring for the patch labels)."""
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    grouped, pairs = neuron_list(model, neurons)
    gen = torch.Generator().manual_seed(seed)
    normal, anomalous = _Class(len(pairs), max_samples, gen), _Class(len(pairs), max_samples, gen)
    n_boundary = n_skipped = 0
    for chunk in stream_activations(model, dataset, grouped, batch_size):
        if chunk.items is None:
            raise ValueError("neuron_stats needs Samples with label and mask, not a tensor batch")
        labels = torch.stack([patch_labels(s, model.image_size, model.cfg.vision.patch_size, min_fraction) for s in chunk.items])
        n_skipped += int((labels == -2).all(1).sum())
        n_boundary += int((labels == -1).sum())
        acts, labels = chunk.acts.flatten(0, 1), labels.flatten()  # [B * P, N], [B * P]
        normal.add(acts[labels == 0])
        anomalous.add(acts[labels == 1])
    if normal.n == 0 or anomalous.n == 0:
        raise ValueError(f"neuron_stats needs normal and anomalous patches; got {normal.n} normal, {anomalous.n} anomalous "
                         f"(anomalous images need masks; min_fraction={min_fraction})")
    y = np.r_[np.ones(len(anomalous.rows)), np.zeros(len(normal.rows))]
    scores = torch.cat([anomalous.rows, normal.rows]).numpy()
    aurocs = torch.tensor([auroc_metric(scores[:, j], y) for j in range(len(pairs))])
    pooled = ((anomalous.m2 + normal.m2) / max(anomalous.n + normal.n - 2, 1)).sqrt()
    d = ((anomalous.mean - normal.mean) / pooled.clamp_min(1e-12)).float()
    return NeuronStats(pairs, aurocs, d, normal.mean.float(), normal.std.float(), anomalous.mean.float(),
                       anomalous.std.float(), normal.rows, anomalous.rows, normal.n, anomalous.n, n_boundary, n_skipped,
                       min_fraction, *depth_counts(pairs))
