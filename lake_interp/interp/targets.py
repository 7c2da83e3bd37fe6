"""Neuron targets: a NeuronSet or a list of (hook name, channel) pairs, grouped per hook point."""

from __future__ import annotations

from typing import Iterable, Union

import torch

from lake_interp.lake.neurons import NeuronSet

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
    """group_by_hook, with a clear error for unknown hook names or channels beyond the width."""
    grouped = group_by_hook(neurons)
    if not grouped:
        raise ValueError("no neurons given")
    widths = hook_widths(model)
    for hook, idx in grouped.items():
        model.check_hook_names([hook])
        if hook not in widths:
            raise ValueError(f"hook {hook!r} has no neuron axis; use a [batch, pos, d] hook such as hook_resid_post or mlp.hook_post")
        if int(idx.min()) < 0 or int(idx.max()) >= widths[hook]:
            raise ValueError(f"channel {int(idx.max())} out of range for {hook} (width {widths[hook]})")
    return grouped


def hook_widths(model) -> dict[str, int]:
    """Width of the last axis of every [batch, pos, d] hook of the vision tower."""
    block = model.cfg.vision.block
    widths = {}
    for name in model.hook_dict:
        if not name.startswith("visual.blocks."):
            continue
        last = name.split(".", 3)[3]
        if last in ("mlp.hook_pre", "mlp.hook_post"):
            widths[name] = block.d_mlp
        elif last in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                      "ln1.hook_normalized", "ln2.hook_normalized"):
            widths[name] = block.d_model
    return widths
