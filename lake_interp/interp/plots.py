"""Plotly figures of the causal tools (ablation, single-neuron sweep, patching, sweeps, words)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

METRIC_LABELS = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "pixel_f1_max": "pixel F1-max", "pixel_aupro": "pixel AUPRO",
}


def ablation_figure(effect, metrics=("image_auroc", "pixel_auroc", "pixel_aupro")) -> go.Figure:
    """Grouped bars: clean, ablated, and the random controls (mean with std over seeds)."""
    fig = go.Figure()
    labels = [METRIC_LABELS.get(m, m) for m in metrics]
    fig.add_bar(name="clean", x=labels, y=[effect.clean.get(m, np.nan) for m in metrics])
    fig.add_bar(name=f"selected neurons ablated ({effect.meta['mode']})", x=labels, y=[effect.ablated.get(m, np.nan) for m in metrics])
    rnd = np.array([[r.get(m, np.nan) for m in metrics] for r in effect.random]) if effect.random else None
    if rnd is not None:
        fig.add_bar(name=f"random neurons ablated (n={len(effect.random)} seeds)", x=labels, y=np.nanmean(rnd, 0),
                    error_y={"type": "data", "array": np.nanstd(rnd, 0)})
    fig.update_layout(barmode="group", yaxis_title="metric (0-1)", yaxis_range=[0, 1.05],
                      title=f"Ablating {effect.meta['n_neurons']} neurons vs as many random ones")
    return fig


def neuron_sweep_figure(rows: list[dict], top: int = 30) -> go.Figure:
    """Bars of the anomaly-score drop caused by ablating each neuron alone (largest first)."""
    rows = rows[:top]
    fig = go.Figure(go.Bar(x=[f"{r['hook'].replace('visual.blocks.', 'L')}[{r['index']}]" for r in rows],
                           y=[r["score_drop"] for r in rows]))
    fig.update_layout(title="Single-neuron ablation: drop of the mean anomaly score (anomalous images)",
                      xaxis_title="neuron (layer.site[channel])", yaxis_title="score drop")
    return fig


def patching_figure(result, top: int = 30) -> go.Figure:
    """Fraction of the anomaly score removed (normal -> anomalous) and restored (anomalous -> normal)."""
    rows = result.rows()[:top]
    x = [r["patched"].replace("visual.blocks.", "L") for r in rows]
    fig = go.Figure()
    fig.add_bar(name="removed (normal values patched into anomalous run)", x=x, y=[r["removed"] for r in rows])
    fig.add_bar(name="restored (anomalous values patched into normal run)", x=x, y=[r["restored"] for r in rows])
    fig.update_layout(barmode="group", title="Activation patching", yaxis_title="fraction of the score gap",
                      xaxis_title="patched neurons")
    return fig


def sweep_figure(result, metric: str = "image_auroc") -> go.Figure:
    """Metric against the swept value: selected neurons and the random control (mean ± std over seeds)."""
    fig = go.Figure()
    for condition in dict.fromkeys(r["condition"] for r in result.summary(metric)):
        rows = [r for r in result.summary(metric) if r["condition"] == condition]
        fig.add_scatter(x=[str(r["value"]) for r in rows], y=[r["mean"] for r in rows], mode="lines+markers",
                        name=condition, error_y={"type": "data", "array": [r["std"] for r in rows]})
    fig.update_layout(title=f"{METRIC_LABELS.get(metric, metric)} vs {result.param}", xaxis_title=result.param,
                      yaxis_title=METRIC_LABELS.get(metric, metric))
    return fig


def words_figure(words, top_neurons: int = 20) -> go.Figure:
    """Heatmap: cosine of each neuron's written direction with each word's text embedding."""
    sim = words.similarity[:top_neurons].numpy()
    y = [f"{h.replace('visual.blocks.', 'L')}[{i}]" for h, i in words.neurons[:top_neurons]]
    fig = go.Figure(go.Heatmap(z=sim, x=words.words, y=y, colorscale="RdBu", zmid=0, colorbar={"title": "cosine"}))
    fig.update_layout(title="Neuron to language: cosine of the written direction with word embeddings",
                      xaxis_title="word", yaxis_title="neuron")
    return fig
