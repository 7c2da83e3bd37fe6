"""Neuron-level interpretability: top patches, heatmaps, statistics, ablation, patching, sweeps, words."""
