"""Neuron targets: a NeuronSet or a list of (hook name, channel) pairs, grouped per hook point."""

from __future__ import annotations

from typing import Iterable, Union

import torch

from lake_interp.lake.neurons import NeuronSet
from lake_interp.model.hook_sites import check_channels

Neurons = Union[NeuronSet, Iterable[tuple[str, int]]]


def as_pairs(neurons: Neurons) -> list[tuple[str, int]]:
    """Every (hook name, channel) pair, in order; a channel must be an integer (3.0 is, 3.7 is not)."""
    pairs = []
    for h, i in neurons:
        if isinstance(i, bool) or int(i) != i:
            raise ValueError(f"channel {i!r} of {h} is not an integer index")
        pairs.append((str(h), int(i)))
    return pairs


def group_by_hook(neurons: Neurons) -> dict[str, torch.Tensor]:
    """hook name -> LongTensor of channels (in first-seen order, duplicates dropped)."""
    out: dict[str, list[int]] = {}
    for hook, index in as_pairs(neurons):
        if index not in out.setdefault(hook, []):
            out[hook].append(index)
    return {h: torch.tensor(v, dtype=torch.long) for h, v in out.items()}


def check_neurons(model, neurons: Neurons) -> dict[str, torch.Tensor]:
    """group_by_hook, with a clear error for unknown hook names or channels beyond the width
    (the registry's checks, `lake_interp.model.hook_sites.check_channels`)."""
    grouped = group_by_hook(neurons)
    if not grouped:
        raise ValueError("no neurons given")
    for hook, idx in grouped.items():
        check_channels(model, hook, idx.tolist())
    return grouped
