"""Every figure `lake-interp figures` makes (and the explorer's ablation maps), built from tiny data
with the study's own builders, for the format and browser tests."""

from __future__ import annotations

import types

import numpy as np
import plotly.graph_objects as go

HOT_TOP_LEFT = np.zeros((12, 16))
HOT_TOP_LEFT[:4, :5] = 1.0  # hot in its top-left corner only
HOT_TOP_LEFT[-1, -1] = 0.0


def asymmetric_heatmap() -> go.Figure:
    fig = go.Figure(go.Heatmap(z=HOT_TOP_LEFT, colorscale="Viridis", showscale=False))
    fig.update_layout(title="hot top-left")
    return fig


def method_rows(methods, shots=(1, 2), seeds=(0, 1)) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"method": m, "shots": k, "seed": s, "category": "disc", "image_auroc": rng.uniform(),
             "pixel_auroc": rng.uniform(), "pixel_aupro": rng.uniform()} for m in methods for k in shots for s in seeds]


def sweep_result(param, values):
    from lake_interp.interp.sweep import SweepResult

    rng = np.random.default_rng(1)
    rows = [{"value": v, "condition": c, "seed": s, "image_auroc": rng.uniform(), "pixel_auroc": rng.uniform()}
            for v in values for c, seeds in (("selected", [0]), ("random", [0, 1])) for s in seeds]
    return SweepResult(param, list(values), rows)


_CACHE: dict = {}


def cached_study_figures(model, tmp_path_factory) -> dict[str, go.Figure]:
    """`study_figures` on a tiny synthetic dataset, built once per session and model (copies)."""
    if id(model) not in _CACHE:
        from lake_interp.data import make_synthetic_dataset

        root = make_synthetic_dataset(tmp_path_factory.mktemp("figdata"), categories=["disc"], seed=0, image_size=64,
                                      n_train=2, n_test_good=1, n_test_defect=2)
        _CACHE[id(model)] = study_figures(model, root)
    return {name: go.Figure(fig) for name, fig in _CACHE[id(model)].items()}


def study_figures(model, root) -> dict[str, go.Figure]:
    """name -> figure, for fig1 .. fig9 (as `run_study` builds them) and the explorer's ablation maps."""
    from lake_interp import study
    from lake_interp.data import load_dataset
    from lake_interp.detectors.methods import default_methods
    from lake_interp.interp import (neuron_stability, neuron_words, stability_figure, top_activating_patches,
                                    top_patches_figure, words_figure)
    from lake_interp.interp.explorer import NeuronExplorer
    from lake_interp.lake import Lake, LakeConfig

    methods = list(default_methods()) + ["a_method_not_in_the_table"]
    spec = types.SimpleNamespace(methods=methods, shots=[1, 2], seeds=[0, 1])
    base = LakeConfig(k_neurons=4, text_weight=0.3)
    train, test = load_dataset("mvtec", root, "disc", "train"), load_dataset("mvtec", root, "disc", "test")
    support = train.few_shot(1, 0)
    lake = Lake(model, base, "disc").fit(support)
    top = study._most_sensitive(lake.neurons, 3)
    figs = {
        "fig1_selected_vs_random": study._methods_figure(method_rows(methods), spec),
        "fig2_metrics_vs_k": study._two_metric_sweep(sweep_result("k_neurons", [4, 16])),
        "fig3_neuron_depth": study._depth_figure(model, base, support, "disc")[0],
        "fig4_top_patches": top_patches_figure(top_activating_patches(model, test, top, n=4)),
        "fig5_ablation_maps": study._ablation_maps(lake, support, test, 2)[0],
        "fig6_text_weight": study._two_metric_sweep(sweep_result("text_weight", [0.0, 1.0])),
        "fig7_neuron_words": words_figure(neuron_words(model, top, reference=support)),
        "fig8_attribution_vs_ablation": study._attribution_vs_ablation(lake, support, test, 1, n=8)[0],
        "fig9_neuron_stability": stability_figure(neuron_stability(model, train, [1], [0, 1], k=4, config=base)),
        "explorer_ablation": NeuronExplorer(lake, test, support, n_top=2).ablation_figure(*top[0], len(test) - 1),
        "hot_top_left": asymmetric_heatmap(),
    }
    return figs
