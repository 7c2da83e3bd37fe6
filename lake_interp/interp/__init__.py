"""Neuron-level interpretability: top patches, heatmaps, statistics, ablation, patching, sweeps, words.

Every tool returns plain data; the matching `*_figure` function in `lake_interp.interp.figures`
draws it with plotly (and `lake_interp.export.save_figure` writes HTML, PNG, SVG, PDF).
"""

from lake_interp.interp.ablation import AblationEffect, ablate, ablation_effect, random_like, single_neuron_sweep
from lake_interp.interp.attribution import (
    Attribution,
    attribute,
    attribution_figure,
    attribution_map_figure,
    compare_with_ablation,
    comparison_figure,
)
from lake_interp.interp.explorer import NeuronExplorer
from lake_interp.interp.figures import (
    ablation_figure,
    heatmap_figure,
    neuron_stats_figure,
    neuron_sweep_figure,
    patching_figure,
    sweep_figure,
    top_patches_figure,
    words_figure,
)
from lake_interp.interp.heatmap import Heatmaps, neuron_heatmap
from lake_interp.interp.patching import PatchingResult, patch_neurons
from lake_interp.interp.stats import NeuronStats, neuron_stats
from lake_interp.interp.stability import NeuronStability, neuron_stability, stability_figure
from lake_interp.interp.sweep import SweepResult, sweep
from lake_interp.interp.top_patches import TopPatches, top_activating_patches
from lake_interp.interp.words import VOCABULARY, NeuronWords, neuron_words

__all__ = [
    "Attribution", "NeuronStability", "attribute", "attribution_figure", "attribution_map_figure",
    "compare_with_ablation", "comparison_figure", "neuron_stability", "stability_figure",
    "AblationEffect", "Heatmaps", "NeuronExplorer", "NeuronStats", "NeuronWords", "PatchingResult", "SweepResult", "TopPatches",
    "VOCABULARY", "ablate", "ablation_effect", "ablation_figure", "heatmap_figure", "neuron_heatmap",
    "neuron_stats", "neuron_stats_figure", "neuron_sweep_figure", "neuron_words", "patch_neurons",
    "patching_figure", "random_like", "single_neuron_sweep", "sweep", "sweep_figure", "top_activating_patches",
    "top_patches_figure", "words_figure",
]
