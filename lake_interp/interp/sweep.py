"""Detector metrics as a function of one LakeConfig field, with the random-neuron control on the same axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from lake_interp.lake import Lake, LakeConfig

SWEEPABLE = ("k_neurons", "criterion", "sites", "layers", "text_weight", "distance", "sigma", "standardize")


@dataclass
class SweepResult:
    param: str
    values: list
    rows: list[dict]  # {value, condition ("selected" | "random"), seed, image_auroc, ..., pixel_aupro}

    def summary(self, metric: str = "image_auroc") -> list[dict]:
        """Mean and std over seeds per value and condition."""
        out = []
        for condition in dict.fromkeys(r["condition"] for r in self.rows):
            for value in self.values:
                v = [r[metric] for r in self.rows if r["condition"] == condition and r["value"] == _label(value)]
                if v:
                    out.append({"value": _label(value), "condition": condition, "mean": float(np.nanmean(v)),
                                "std": float(np.nanstd(v)), "n": len(v)})
        return out


def _label(value) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def sweep(model, support: Any, test, param: str, values: Sequence, base: Optional[LakeConfig] = None,
          seeds: Sequence[int] = (0,), control: bool = True, class_name: str = "object",
          progress: bool = True) -> SweepResult:
    """Fit and score once per value (and per seed of the random control); progress: a tqdm bar.

    support: normal images; test: a dataset or list of Samples (labels and masks are used).
    One forward pass over the test set in all: activations of every hook any value needs are
    cached once (`lake_interp.evaluation.cache_test_set`, the LAKE family's fast path); text
    embeddings are computed once. Metrics from `lake_interp.evaluation.metrics`.
    """
    from lake_interp.evaluation import cache_test_set, metrics

    if param not in SWEEPABLE:
        raise ValueError(f"cannot sweep {param!r}; expected one of {SWEEPABLE}")
    base = base or LakeConfig()
    control = control and param != "criterion"
    configs = []
    for value in values:
        cfg = base.replace(**{param: value})
        configs.append((value, "selected", 0, cfg))
        if control and cfg.uses_selection():
            configs += [(value, "random", s, cfg.replace(criterion="random", seed=s)) for s in seeds]
    lakes = [(v, c, s, Lake(model, cfg, class_name)) for v, c, s, cfg in configs]
    test_hooks = list(dict.fromkeys(h for *_, lk in lakes for h in lk.required_hooks))
    visual_hooks = list(dict.fromkeys(h for *_, lk in lakes if lk.uses_visual for h in lk.hooks))
    probe = lakes[0][3]
    test_acts, masks, labels = cache_test_set(probe, test, test_hooks)
    support_acts = probe.patch_activations(support, visual_hooks) if visual_hooks else {}
    text = probe.compute_text_features() if any(lk.uses_semantic for *_, lk in lakes) else None
    rows = []
    from tqdm.auto import tqdm

    for value, condition, seed, lake in tqdm(lakes, desc=f"sweep {param}", unit="fit", disable=not progress):
        lake.fit_activations(support_acts, text_features=text, support=support)  # images: criterion "attribution"
        result = lake.score_activations(test_acts)
        rows.append({"value": _label(value), "condition": condition, "seed": seed,
                     **metrics(result, labels, masks)})
    return SweepResult(param, [_label(v) for v in values], rows)
