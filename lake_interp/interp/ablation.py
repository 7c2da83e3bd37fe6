"""Ablate neurons through hooks (zero, mean or resample over a reference set) and measure the effect."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from lake_interp.interp.stream import stream_activations
from lake_interp.interp.targets import Neurons, check_neurons
from lake_interp.lake.inputs import resize_mask

MODES = ("zero", "mean", "resample")


def reference_values(model, reference: Any, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Values of the neurons on every patch of the reference images: hook -> [N * P, n neurons].

    reference: images (anything `to_batch` reads) or cached activations hook -> [N, P, d]."""
    if isinstance(reference, dict):
        return {h: reference[h][..., idx].flatten(0, 1) for h, idx in grouped.items()}
    acts = torch.cat([chunk.acts for chunk in stream_activations(model, reference, grouped)]).flatten(0, 1)
    return dict(zip(grouped, acts.split([len(idx) for idx in grouped.values()], dim=-1)))


def ablation_hooks(model, neurons: Neurons, mode: str = "zero", reference: Any = None, seed: int = 0):
    """(hook name, function) pairs that ablate the neurons; see `ablate`."""
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; expected one of {MODES}")
    grouped = check_neurons(model, neurons)
    if mode != "zero" and reference is None:
        raise ValueError(f"mode={mode!r} needs reference images (e.g. the support set) or their activations")
    refs = reference_values(model, reference, grouped) if mode != "zero" else {}
    generator = torch.Generator().manual_seed(seed)
    hooks = []
    for hook, idx in grouped.items():
        if mode == "zero":
            fn = _replace_with(idx, lambda act, i=idx: torch.zeros_like(act[..., i]))
        elif mode == "mean":
            mean = refs[hook].float().mean(dim=0)  # [n]: mean over the reference patches
            fn = _replace_with(idx, lambda act, m=mean: m.to(act).expand(*act.shape[:-1], -1))
        else:
            pool = refs[hook]  # [N * P, n]: each token takes the values of a random reference patch

            def sample(act, pool=pool):
                pick = torch.randint(len(pool), act.shape[:-1], generator=generator)
                return pool[pick].to(act)

            fn = _replace_with(idx, sample)
        hooks.append((hook, fn))
    return hooks


def _replace_with(idx: torch.Tensor, values):
    def fn(act: torch.Tensor, hook) -> torch.Tensor:
        act = act.clone()
        act[..., idx.to(act.device)] = values(act)
        return act

    return fn


@contextlib.contextmanager
def ablate(model, neurons: Neurons, mode: str = "zero", reference: Any = None, seed: int = 0) -> Iterator[None]:
    """Inside the block, the model runs with the neurons ablated, at every position (class token too).

    neurons: a NeuronSet or (hook name, channel) pairs. mode: "zero"; "mean": the mean of each
    neuron over the patch tokens of `reference` (images or cached activations hook -> [N, P, d]);
    "resample": each token takes the neuron values of a random reference patch (seeded).
    """
    with model.hooks(fwd_hooks=ablation_hooks(model, neurons, mode, reference, seed)):
        yield


def random_like(model, neurons: Neurons, seed: int) -> list[tuple[str, int]]:
    """As many random channels per hook as `neurons` has there, avoiding those channels."""
    from lake_interp.model.hook_sites import channel_width

    grouped = check_neurons(model, neurons)
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for hook, idx in grouped.items():
        width = channel_width(model, hook)
        free = torch.tensor([c for c in range(width) if c not in set(idx.tolist())])
        if len(free) < len(idx):
            raise ValueError(f"{hook}: cannot draw {len(idx)} random channels outside the {len(idx)} given (width {width})")
        pairs += [(hook, int(c)) for c in free[torch.randperm(len(free), generator=g)[: len(idx)]]]
    return pairs


@dataclass
class AblationEffect:
    """Detector metrics and maps with nothing ablated, with `neurons` ablated, and with random controls."""

    clean: dict  # metric -> value
    ablated: dict
    random: list[dict]  # one dict per control seed
    clean_scores: np.ndarray  # [N]
    ablated_scores: np.ndarray  # [N]
    random_scores: list[np.ndarray]
    map_change: float  # mean |ablated map - clean map|
    random_map_change: list[float]
    meta: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        rows = [{"condition": "clean", **self.clean}, {"condition": "ablated", **self.ablated}]
        rows += [{"condition": f"random seed {i}", **r} for i, r in enumerate(self.random)]
        return rows


def _evaluate(detector, images, support, labels, masks) -> tuple[dict, Any]:
    """Score with the detector refitted on the support under whatever hooks are active (a Lake keeps
    its neurons: `lake_interp.evaluation.refit`), in batches; metrics from the evaluation layer."""
    from lake_interp.evaluation import metrics, refit, score_batches

    result = score_batches(refit(detector, support), images, getattr(getattr(detector, "config", None), "batch_size", 16))
    values = metrics(result, labels, masks) if labels is not None else {}
    anomalous = labels == 1 if labels is not None else np.ones(len(result.image_scores), bool)
    values["mean_score_anomalous"] = float(result.image_scores.numpy()[anomalous].mean())
    return values, result


def ablation_effect(detector, neurons: Neurons, support: Any, images: Any, labels=None, masks=None,
                    mode: str = "zero", n_random: int = 3, seed: int = 0, model=None,
                    class_name: str = "object", progress: bool = True) -> AblationEffect:
    """How a detector changes when `neurons` are ablated, against as many random neurons per hook.
    progress: a tqdm bar over the runs (clean, selected ablated, each random draw).

    detector: any detector of the protocol (a fitted Lake, WinCLIP, PatchCore, ...), or a method
    name of the table (`lake_interp.detectors.methods.METHODS`; then `model` and `class_name`
    build it, fitted on `support`). The detector is refitted on `support` under the same
    ablation (so the ablation acts on the model, not only on the test images; a Lake keeps its
    neuron selection). labels [N] and masks (each [H, W] at any size, resized to the model input;
    None entries for normal images, or None for all) give image and pixel metrics. The detector
    itself is not changed.
    """
    if isinstance(detector, str):
        from lake_interp.detectors.methods import get_method

        if model is None:
            raise ValueError(f"ablation_effect({detector!r}, ...): a method name needs model=HookedCLIP")
        m = get_method(detector)
        support = list(support)
        detector = m.fit(m.build(model, class_name=class_name, seed=seed, shots=len(support)), support)
    model = detector.model
    labels = None if labels is None else np.asarray(labels)
    if masks is not None:
        masks = np.stack([resize_mask(m, model.image_size) for m in masks])
    reference = support if mode != "zero" else None
    from tqdm.auto import tqdm

    bar = tqdm(total=2 + n_random, desc="ablation_effect", unit="run", disable=not progress)
    clean, clean_r = _evaluate(detector, images, support, labels, masks)
    bar.update(1)
    with ablate(model, neurons, mode, reference, seed):
        ablated, ablated_r = _evaluate(detector, images, support, labels, masks)
    bar.update(1)
    randoms, random_rs = [], []
    for s in range(n_random):
        with ablate(model, random_like(model, neurons, seed + 1 + s), mode, reference, seed):
            m, r = _evaluate(detector, images, support, labels, masks)
        randoms.append(m)
        random_rs.append(r)
        bar.update(1)
    bar.close()
    change = lambda r: float((r.maps - clean_r.maps).abs().mean())  # noqa: E731
    return AblationEffect(
        clean=clean, ablated=ablated, random=randoms,
        clean_scores=clean_r.image_scores.numpy(), ablated_scores=ablated_r.image_scores.numpy(),
        random_scores=[r.image_scores.numpy() for r in random_rs],
        map_change=change(ablated_r), random_map_change=[change(r) for r in random_rs],
        meta={"mode": mode, "n_neurons": len(list(neurons)), "n_random": n_random, "seed": seed},
    )


def single_neuron_sweep(lake, neurons: Neurons, support: Any, images: Any, labels=None, mode: str = "zero",
                        progress: bool = True) -> list[dict]:
    """Ablate each neuron alone; rank by the drop of the mean image score of anomalous images.
    progress: a tqdm bar over the neurons.

    Returns rows {hook, index, score_drop, clean, ablated}, largest drop first.
    """
    labels = None if labels is None else np.asarray(labels)
    reference = support if mode != "zero" else None
    clean, _ = _evaluate(lake, images, support, labels, None)
    rows = []
    from tqdm.auto import tqdm

    for hook, index in tqdm(check_pairs(lake.model, neurons), desc="single_neuron_sweep", unit="neuron",
                            disable=not progress):
        with ablate(lake.model, [(hook, index)], mode, reference):
            m, _ = _evaluate(lake, images, support, labels, None)
        base, abl = clean["mean_score_anomalous"], m["mean_score_anomalous"]
        rows.append({"hook": hook, "index": index, "score_drop": base - abl, "clean": base, "ablated": abl})
    return sorted(rows, key=lambda r: -r["score_drop"])


def check_pairs(model, neurons: Neurons) -> list[tuple[str, int]]:
    return [(h, int(i)) for h, idx in check_neurons(model, neurons).items() for i in idx.tolist()]
