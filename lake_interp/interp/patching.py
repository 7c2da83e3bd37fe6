"""Activation patching of chosen neurons between a normal and an anomalous run."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from lake_interp.interp.readout import ReadoutSpec
from lake_interp.interp.targets import Neurons, check_neurons
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
    meta: dict = field(default_factory=dict)  # patched units, readout and its hooks (see interp.readout)

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


def _score_patched(reader, target: torch.Tensor, grouped, source_cache, batch_size: int):
    """Score `target` with the neurons' values taken from `source_cache` (same images, same order),
    one forward pass per batch so that each batch meets its own source rows."""
    from lake_interp.evaluation import concat_results

    parts, start = [], 0
    for batch in iter_batches(target, batch_size):
        rows = slice(start, start + len(batch))
        with reader.model.hooks(fwd_hooks=_patch_hooks(grouped, {h: c[rows] for h, c in source_cache.items()})):
            parts.append(reader.score(batch))
        start += len(batch)
    return concat_results(parts)


def patch_neurons(lake, normal: Any, anomalous: Any, neurons: Neurons, per_neuron: bool = True,
                  support: Any = None, readout: ReadoutSpec = "downstream") -> PatchingResult:
    """Patch the neurons' activations (every token) from the normal run into the anomalous run
    (how much anomaly score is removed) and from the anomalous run into the normal one (how
    much is restored). normal and anomalous: images, paired one to one (or one normal image for
    all). Labels: "all", each hook name, and with per_neuron each "hook[index]". The fractions are
    ratios of sums over the pairs whose anomalous image scores above its normal one (1: the whole
    gap removed / restored), so that a pair with a tiny gap cannot dominate them.

    readout: what reads the scores (`lake_interp.interp.readout`): "downstream" (default: nearest
    neighbour on all channels of the final block's residual stream, fitted on `support`, the
    normal images of the clean model), "all_channels", or a fitted detector (None: `lake` itself),
    refused when its selected channels are exactly the patched ones (it would read back the values
    it was given)."""
    from lake_interp.interp.readout import make_readout

    model = lake.model
    grouped = check_neurons(model, neurons)
    units = [(h, int(i)) for h, idx in grouped.items() for i in idx.tolist()]
    if isinstance(readout, str) and support is None:
        raise ValueError(f"patch_neurons(readout={readout!r}) needs support= (normal images to fit the readout on "
                         "the clean model), or readout=a fitted detector that does not read only the patched units")
    reader = make_readout(lake, units, support, readout)
    batch_size = getattr(getattr(reader.detector, "config", None), "batch_size", 16)
    a = to_batch(anomalous, model)
    n = to_batch(normal, model)
    if len(n) == 1 and len(a) > 1:
        n = n.expand(len(a), -1, -1, -1)
    if len(n) != len(a):
        raise ValueError(f"{len(n)} normal images for {len(a)} anomalous ones: pair them one to one or give one")
    with torch.no_grad():
        _, cache_n = model.run_with_cache(n, names_filter=list(grouped))
        _, cache_a = model.run_with_cache(a, names_filter=list(grouped))
    from lake_interp.evaluation import score_batches

    clean_a, clean_n = score_batches(reader.detector, a, batch_size), score_batches(reader.detector, n, batch_size)
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
        into_a = _score_patched(reader.detector, a, subset, cache_n, batch_size)
        into_n = _score_patched(reader.detector, n, subset, cache_a, batch_size)
        patched[label] = into_a.image_scores
        removed[label] = fraction(clean_a.image_scores - into_a.image_scores)
        restored[label] = fraction(into_n.image_scores - clean_n.image_scores)
        maps[label] = clean_a.maps - into_a.maps
    meta = {"patched": [list(p) for p in units], **reader.record()}
    return PatchingResult(clean_n.image_scores, clean_a.image_scores, patched, removed, restored, maps,
                          int(valid.sum()), meta)
