"""Activation patching of chosen neurons between a normal and an anomalous run."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from lake_interp.interp.targets import Neurons, check_neurons
from lake_interp.lake.detector import LakeResult
from lake_interp.lake.inputs import iter_batches, to_batch


@dataclass
class PatchingResult:
    """Image scores [N] and fraction of the anomaly score removed (normal -> anomalous) or restored
    (anomalous -> normal), per neuron, per hook (all its neurons) and for all neurons together."""

    normal_scores: torch.Tensor  # [N] clean normal run
    anomalous_scores: torch.Tensor  # [N] clean anomalous run
    patched_scores: dict[str, torch.Tensor]  # label -> [N] anomalous run with normal values patched in
    removed: dict[str, float]  # label -> sum(anomalous - patched) / sum(anomalous - normal)
    restored: dict[str, float]  # label -> sum(patched normal run - normal) / sum(anomalous - normal)
    removed_maps: dict[str, torch.Tensor]  # label -> [N, H, W] anomalous map - patched map
    n_pairs: int  # pairs in those sums: those whose anomalous image scores above its normal one

    def rows(self) -> list[dict]:
        return [{"patched": k, "removed": self.removed[k], "restored": self.restored[k]} for k in self.removed]


def _patch_hooks(grouped: dict[str, torch.Tensor], source_cache: dict[str, torch.Tensor]):
    def make(name, idx):
        def fn(act, hook):
            act = act.clone()
            act[..., idx] = source_cache[name][..., idx].to(act)
            return act

        return fn

    return [(hook, make(hook, idx)) for hook, idx in grouped.items()]


def _score_patched(lake, target: torch.Tensor, grouped, source_cache):
    """Score `target` with the neurons' values taken from `source_cache` (same images, same order),
    one forward pass per batch of LakeConfig.batch_size so that each batch meets its own source rows."""
    parts, start = [], 0
    for batch in iter_batches(target, lake.config.batch_size):
        rows = slice(start, start + len(batch))
        with lake.model.hooks(fwd_hooks=_patch_hooks(grouped, {h: c[rows] for h, c in source_cache.items()})):
            parts.append(lake.score(batch))
        start += len(batch)
    return LakeResult.concat(parts)


def patch_neurons(lake, normal: Any, anomalous: Any, neurons: Neurons, per_neuron: bool = True) -> PatchingResult:
    """Patch the neurons' activations (every token) from the normal run into the anomalous run
    (how much anomaly score is removed) and from the anomalous run into the normal one (how
    much is restored). normal and anomalous: images, paired one to one (or one normal image for
    all). Labels: "all", each hook name, and with per_neuron each "hook[index]". The fractions are
    ratios of sums over the pairs whose anomalous image scores above its normal one (1: the whole
    gap removed / restored), so that a pair with a tiny gap cannot dominate them."""
    model = lake.model
    grouped = check_neurons(model, neurons)
    a = to_batch(anomalous, model)
    n = to_batch(normal, model)
    if len(n) == 1 and len(a) > 1:
        n = n.expand(len(a), -1, -1, -1)
    if len(n) != len(a):
        raise ValueError(f"{len(n)} normal images for {len(a)} anomalous ones: pair them one to one or give one")
    with torch.no_grad():
        _, cache_n = model.run_with_cache(n, names_filter=list(grouped))
        _, cache_a = model.run_with_cache(a, names_filter=list(grouped))
    clean_a, clean_n = lake.score(a), lake.score(n)
    gap = clean_a.image_scores - clean_n.image_scores
    valid = gap > 0  # a pair without a gap to remove or restore carries no fraction
    if not valid.any():
        warnings.warn("patch_neurons: no anomalous image scores above its normal one; fractions are NaN", stacklevel=2)
    total = gap[valid].sum()

    def fraction(delta: torch.Tensor) -> float:  # ratio of sums: stable when one gap is tiny
        return float(delta[valid].sum() / total) if valid.any() else float("nan")

    subsets = {"all": grouped}
    subsets.update({h: {h: idx} for h, idx in grouped.items()})
    if per_neuron:
        subsets.update({f"{h}[{int(i)}]": {h: i.view(1)} for h, idx in grouped.items() for i in idx})
    patched, removed, restored, maps = {}, {}, {}, {}
    for label, subset in subsets.items():
        into_a = _score_patched(lake, a, subset, cache_n)
        into_n = _score_patched(lake, n, subset, cache_a)
        patched[label] = into_a.image_scores
        removed[label] = fraction(clean_a.image_scores - into_a.image_scores)
        restored[label] = fraction(into_n.image_scores - clean_n.image_scores)
        maps[label] = clean_a.maps - into_a.maps
    return PatchingResult(clean_n.image_scores, clean_a.image_scores, patched, removed, restored, maps, int(valid.sum()))
