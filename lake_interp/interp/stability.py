"""Stability of selected neuron sets across support draws: Jaccard, overlap and rank-biased overlap.

`neuron_stability(model, dataset, shots, seeds, criterion, k)` fits LAKE's selection once per
(shots, seed) support draw (`dataset.few_shot(shots, seed)`; the config's seed is the draw's seed,
so the random criterion draws independently per seed) and compares every pair of selected sets
per hook point:

- Jaccard |S n T| / |S u T|;
- overlap |S n T| / K (for two independent uniformly random K-subsets of d channels its expectation
  is K / d: `expected_random_overlap`);
- rank-biased overlap (Webber et al. 2010, extrapolated RBO_ext at depth K, persistence p): the
  selections are ranked best first; identical rankings give 1.

It also lists the units selected in every draw. The benchmark's paired comparisons (lake vs
lake_random and vs the baselines, bootstrap 95% intervals over the (shots, seed) pairs) are
`lake_interp.benchmark.paired_difference`; they are not recomputed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Optional, Sequence

import numpy as np


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """|S n T| / K (K = the larger set's size)."""
    k = max(len(a), len(b))
    return len(set(a) & set(b)) / k if k else 1.0


def rbo(a: Sequence[int], b: Sequence[int], p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap of two rankings of equal depth k (Webber et al. 2010, eq. 32)."""
    k = min(len(a), len(b))
    if k == 0:
        return 1.0
    seen_a, seen_b, x, total = set(), set(), 0, 0.0
    for d in range(1, k + 1):
        ia, ib = a[d - 1], b[d - 1]
        x += (ia in seen_b) + (ib in seen_a) + (ia == ib)
        seen_a.add(ia)
        seen_b.add(ib)
        total += (x / d) * p**d
    return float((x / k) * p**k + (1 - p) / p * total)


def expected_random_overlap(k: int, d: int) -> float:
    """E |S n T| / K for independent uniform K-subsets of d channels: K / d."""
    return k / d


@dataclass
class NeuronStability:
    draws: list[tuple[int, int]]  # (shots, seed) per draw
    hooks: list[str]
    selections: dict  # hook -> [n_draws, K] channel indices (best first)
    pairs: list[dict]  # per pair of draws and hook: jaccard, overlap, rbo
    summary: dict  # hook -> {jaccard_mean, jaccard_min, overlap_mean, rbo_mean, n_pairs}
    stable_units: dict  # hook -> channels selected in every draw
    meta: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        return [{"hook": h, **v, "stable_units": len(self.stable_units[h])} for h, v in self.summary.items()]

    def jaccard_matrix(self) -> np.ndarray:
        """[n_draws, n_draws] Jaccard averaged over hooks (1 on the diagonal)."""
        n = len(self.draws)
        m = np.eye(n)
        for row in self.pairs:
            i, j = row["draw_a"], row["draw_b"]
            m[i, j] += row["jaccard"] / len(self.hooks)
            m[j, i] = m[i, j]
        return m

    def to_dict(self) -> dict:
        return {"draws": [list(d) for d in self.draws], "hooks": self.hooks,
                "selections": {h: np.asarray(v).tolist() for h, v in self.selections.items()},
                "pairs": self.pairs, "summary": self.summary,
                "stable_units": {h: list(v) for h, v in self.stable_units.items()}, "meta": self.meta}


def stability_from_sets(selections: dict, draws: Sequence[tuple[int, int]], p: float = 0.9, **meta) -> NeuronStability:
    """The overlaps of given selections: hook -> [n_draws, K] channel indices, best first."""
    hooks = list(selections)
    pairs = []
    for i, j in combinations(range(len(draws)), 2):
        for h in hooks:
            a, b = [int(c) for c in selections[h][i]], [int(c) for c in selections[h][j]]
            pairs.append({"draw_a": i, "draw_b": j, "hook": h, "jaccard": jaccard(a, b), "overlap": overlap(a, b),
                          "rbo": rbo(a, b, p)})
    summary = {}
    for h in hooks:
        rows = [r for r in pairs if r["hook"] == h]
        summary[h] = {"jaccard_mean": float(np.mean([r["jaccard"] for r in rows])) if rows else 1.0,
                      "jaccard_min": float(np.min([r["jaccard"] for r in rows])) if rows else 1.0,
                      "overlap_mean": float(np.mean([r["overlap"] for r in rows])) if rows else 1.0,
                      "rbo_mean": float(np.mean([r["rbo"] for r in rows])) if rows else 1.0, "n_pairs": len(rows)}
    stable = {h: sorted(set.intersection(*[set(int(c) for c in s) for s in selections[h]])) for h in hooks}
    return NeuronStability(list(draws), hooks, selections, pairs, summary, stable, {"rbo_p": p, **meta})


def neuron_stability(model, dataset, shots: Sequence[int] = (1, 2, 4), seeds: Sequence[int] = (0, 1, 2),
                     criterion: Any = "variance", k: int = 100, config: Optional[Any] = None,
                     class_name: str = "object", p: float = 0.9) -> NeuronStability:
    """Select K neurons per hook on every (shots, seed) support draw of `dataset` and compare the sets
    (see the module docstring). config: the base LakeConfig (its sites and layers; criterion, k
    and seed are set here)."""
    from lake_interp.lake import Lake, LakeConfig

    base = (config or LakeConfig()).replace(criterion=criterion, k_neurons=k, text_weight=0.0)
    draws, sets = [], {}
    for s in shots:
        for seed in seeds:
            lake = Lake(model, base.replace(seed=seed), class_name).fit(dataset.few_shot(s, seed))
            draws.append((s, seed))
            for h, idx in lake.neurons.indices.items():
                sets.setdefault(h, []).append(idx.tolist())
    from lake_interp.model.hook_sites import channel_width

    width = {h: channel_width(model, h) for h in sets}
    return stability_from_sets({h: np.array(v) for h, v in sets.items()}, draws, p,
                               criterion=criterion if isinstance(criterion, str) else "custom", k=k,
                               expected_random_overlap={h: expected_random_overlap(k, w) for h, w in width.items()})


def stability_figure(result: NeuronStability):
    """Left: Jaccard between every pair of draws (mean over hooks); right: per hook the mean
    Jaccard, overlap and RBO, with the overlap two random K-subsets would have."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from lake_interp.model.hook_sites import hook_label

    labels = [f"{s}-shot s{seed}" for s, seed in result.draws]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Jaccard between draws (mean over hooks)",
                                                        "per hook: mean over pairs of draws"])
    fig.add_trace(go.Heatmap(z=result.jaccard_matrix(), x=labels, y=labels, zmin=0, zmax=1, colorscale="Viridis",
                             colorbar={"title": "Jaccard", "x": 0.45}), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    hooks = [hook_label(h) for h in result.hooks]
    for key, name in (("jaccard_mean", "Jaccard"), ("overlap_mean", "overlap |S n T| / K"), ("rbo_mean", "RBO")):
        fig.add_trace(go.Bar(x=hooks, y=[result.summary[h][key] for h in result.hooks], name=name), row=1, col=2)
    expected = result.meta.get("expected_random_overlap", {})
    if expected:
        fig.add_trace(go.Scatter(x=hooks, y=[expected[h] for h in result.hooks], mode="markers",
                                 name="random K/d", marker={"symbol": "circle", "size": 9}), row=1, col=2)  # one shape in every format
    fig.update_layout(title=f"Stability of the selected neurons ({result.meta.get('criterion')}, K={result.meta.get('k')}, "
                            f"{len(result.draws)} support draws)", height=450, width=1100)
    return fig
