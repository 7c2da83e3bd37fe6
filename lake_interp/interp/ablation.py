"""Ablate neurons through hooks (zero, mean or resample over a reference set) and measure the effect."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from lake_interp.interp.readout import ReadoutSpec
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
    """Metrics and maps of a readout detector with nothing ablated, with `neurons` ablated, and with
    random controls (as many random channels per hook), plus what was ablated and what read it.

    delta / random_delta: ablated minus clean, per metric; random_summary: per metric the mean and
    std (ddof=1 where there are two draws or more) of the random deltas and, with 5 draws or more,
    their empirical 95% interval (2.5th to 97.5th percentile)."""

    clean: dict  # metric -> value
    ablated: dict
    random: list[dict]  # one dict per control seed
    clean_scores: np.ndarray  # [N]
    ablated_scores: np.ndarray  # [N]
    random_scores: list[np.ndarray]
    map_change: float  # mean |ablated map - clean map|
    random_map_change: list[float]
    meta: dict = field(default_factory=dict)  # mode, reference, ablated units, readout and its hooks
    ablated_units: list = field(default_factory=list)  # (hook, channel) pairs
    random_units: list = field(default_factory=list)  # per draw, its (hook, channel) pairs
    delta: dict = field(default_factory=dict)
    random_delta: list = field(default_factory=list)
    random_summary: dict = field(default_factory=dict)
    reader: Any = field(default=None, repr=False)  # the Readout (interp.readout), fitted on the clean model

    @property
    def readout(self) -> str:
        return self.meta.get("readout", "")

    def table(self) -> list[dict]:
        rows = [{"condition": "clean", **self.clean}, {"condition": "ablated", **self.ablated}]
        rows += [{"condition": f"random seed {i}", **r} for i, r in enumerate(self.random)]
        return rows

    def deltas(self) -> list[dict]:
        """One row per metric: the selected set's delta, the random deltas' mean, std and interval."""
        return [{"metric": k, "selected": self.delta[k], **{f"random_{s}": v for s, v in self.random_summary[k].items()}}
                for k in self.delta]


def _summary(values: list[float]) -> dict:
    v = np.array(values, dtype=float)
    if len(v) == 0 or np.all(np.isnan(v)):
        return {"mean": float("nan"), "std": float("nan"), "low": float("nan"), "high": float("nan"), "n": len(v)}
    out = {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else float("nan"),
           "low": float("nan"), "high": float("nan"), "n": len(v)}
    if len(v) >= 5:
        out["low"], out["high"] = (float(x) for x in np.nanpercentile(v, [2.5, 97.5]))
    return out


def _evaluate(detector, images, support, labels, masks, refitted: bool = True) -> tuple[dict, Any]:
    """Score with the detector refitted on the support under whatever hooks are active (a Lake keeps
    its neurons: `lake_interp.evaluation.refit`), in batches; metrics from the evaluation layer.
    refitted=False: the detector as fitted (the clean run of a readout fitted on the clean model)."""
    from lake_interp.evaluation import metrics, refit, score_batches

    scorer = refit(detector, support) if refitted else detector
    result = score_batches(scorer, images, getattr(getattr(detector, "config", None), "batch_size", 16))
    values = metrics(result, labels, masks) if labels is not None else {}
    anomalous = labels == 1 if labels is not None else np.ones(len(result.image_scores), bool)
    values["mean_score_anomalous"] = float(result.image_scores.numpy()[anomalous].mean())
    return values, result


def _reference_label(mode: str, support) -> str:
    if mode == "zero":
        return "none (zero)"
    try:
        return f"the support ({len(support)} images): {'mean over its patches' if mode == 'mean' else 'random patches of it'}"
    except TypeError:
        return "the support"


def ablation_effect(detector, neurons: Neurons, support: Any, images: Any, labels=None, masks=None,
                    mode: str = "zero", n_random: int = 3, seed: int = 0, model=None,
                    class_name: str = "object", progress: bool = True,
                    readout: ReadoutSpec = "downstream") -> AblationEffect:
    """How a readout detector changes when `neurons` are ablated, against as many random neurons per hook.

    detector: any detector of the protocol (a fitted Lake, WinCLIP, PatchCore, ...), or a method
    name of the table (`lake_interp.detectors.methods.METHODS`; then `model` and `class_name`
    build it, fitted on `support`); it gives the model, class name and map settings.
    readout: what reads the effect (`lake_interp.interp.readout`): "downstream" (default:
    nearest neighbour on all channels of the final block's residual stream, fitted once on the
    clean model: how much anomaly information the units carry that the rest of the network uses),
    "all_channels" (all channels of the ablated units' hooks: K channels vs K random channels of the
    same hooks), or a fitted detector (None: `detector` itself), refused when its selected channels
    are exactly the ablated ones. Under each ablation the readout is refitted on `support` (its
    bank rebuilt; a Lake keeps its neurons), so the ablation acts on the model, not only on the test
    images. labels [N] and masks (each [H, W] at any size; None entries for normal images, or None
    for all) give image and pixel metrics. progress: a tqdm bar over the runs. The detector itself
    is not changed.
    """
    from lake_interp.interp.readout import make_readout

    if isinstance(detector, str):
        from lake_interp.detectors.methods import get_method

        if model is None:
            raise ValueError(f"ablation_effect({detector!r}, ...): a method name needs model=HookedCLIP")
        m = get_method(detector)
        support = list(support)
        detector = m.fit(m.build(model, class_name=class_name, seed=seed, shots=len(support)), support)
    model = detector.model
    support = list(support) if not isinstance(support, torch.Tensor) else support
    units = check_pairs(model, neurons)
    reader = make_readout(detector, units, support, readout)
    labels = None if labels is None else np.asarray(labels)
    if masks is not None:
        masks = np.stack([resize_mask(m, model.image_size) for m in masks])
    reference = support if mode != "zero" else None
    from tqdm.auto import tqdm

    bar = tqdm(total=2 + n_random, desc="ablation_effect", unit="run", disable=not progress)
    # a "downstream" / "all_channels" readout is fitted on the clean support already: scored as it is
    clean, clean_r = _evaluate(reader.detector, images, support, labels, masks, refitted=reader.name == "detector")
    bar.update(1)
    with ablate(model, units, mode, reference, seed):
        ablated, ablated_r = _evaluate(reader.detector, images, support, labels, masks)
    bar.update(1)
    randoms, random_rs, random_units = [], [], []
    for s in range(n_random):
        drawn = random_like(model, units, seed + 1 + s)
        with ablate(model, drawn, mode, reference, seed):
            m, r = _evaluate(reader.detector, images, support, labels, masks)
        randoms.append(m)
        random_rs.append(r)
        random_units.append(drawn)
        bar.update(1)
    bar.close()
    change = lambda r: float((r.maps - clean_r.maps).abs().mean())  # noqa: E731
    delta = {k: ablated[k] - clean[k] for k in clean}
    random_delta = [{k: r[k] - clean[k] for k in clean} for r in randoms]
    meta = {"mode": mode, "reference": _reference_label(mode, support), "n_neurons": len(units),
            "n_random": n_random, "seed": seed, "ablated": [list(p) for p in units], **reader.record()}
    return AblationEffect(
        clean=clean, ablated=ablated, random=randoms,
        clean_scores=clean_r.image_scores.numpy(), ablated_scores=ablated_r.image_scores.numpy(),
        random_scores=[r.image_scores.numpy() for r in random_rs],
        map_change=change(ablated_r), random_map_change=[change(r) for r in random_rs],
        meta=meta, ablated_units=units, random_units=random_units, delta=delta, random_delta=random_delta,
        random_summary={k: _summary([d[k] for d in random_delta]) for k in clean}, reader=reader,
    )


def single_neuron_sweep(lake, neurons: Neurons, support: Any, images: Any, labels=None, mode: str = "zero",
                        progress: bool = True, readout: ReadoutSpec = "downstream") -> list[dict]:
    """Ablate each neuron alone; rank by the drop of the mean image score of anomalous images, as
    read by `readout` (see ablation_effect; the default reads the final block's residual stream,
    all channels, fitted once on the clean model). progress: a tqdm bar over the neurons.

    Returns rows {hook, index, score_drop, clean, ablated, readout}, largest drop first.
    """
    from lake_interp.interp.readout import make_readout

    labels = None if labels is None else np.asarray(labels)
    support = list(support) if not isinstance(support, torch.Tensor) else support
    pairs = check_pairs(lake.model, neurons)
    reader = make_readout(lake, pairs, support, readout)
    reference = support if mode != "zero" else None
    clean, _ = _evaluate(reader.detector, images, support, labels, None, refitted=reader.name == "detector")
    rows = []
    from tqdm.auto import tqdm

    for hook, index in tqdm(pairs, desc="single_neuron_sweep", unit="neuron", disable=not progress):
        with ablate(lake.model, [(hook, index)], mode, reference):
            m, _ = _evaluate(reader.detector, images, support, labels, None)
        base, abl = clean["mean_score_anomalous"], m["mean_score_anomalous"]
        rows.append({"hook": hook, "index": index, "score_drop": base - abl, "clean": base, "ablated": abl,
                     "readout": reader.name, "readout_hooks": ",".join(reader.hooks),
                     "read_directly": (hook, index) in set(reader.overlap)})
    return sorted(rows, key=lambda r: -r["score_drop"])


def check_pairs(model, neurons: Neurons) -> list[tuple[str, int]]:
    return [(h, int(i)) for h, idx in check_neurons(model, neurons).items() for i in idx.tolist()]
