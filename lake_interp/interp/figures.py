"""Plotly figures of every interp tool: neuron views (top patches, heatmaps, statistics) and causal
tools (ablation, single-neuron sweep, patching, sweeps, words). Only trace types that
`lake_interp.export.to_matplotlib` redraws are used, so every figure also exports to PNG/SVG/PDF."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from PIL import Image

from lake_interp.interp.heatmap import Heatmaps
from lake_interp.interp.stats import NeuronStats
from lake_interp.interp.stream import neuron_label
from lake_interp.interp.top_patches import TopPatches
from lake_interp.model.hook_sites import hook_label
from lake_interp.render import overlay


def _bare_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def top_patches_figure(top: TopPatches, max_neurons: int = 8) -> go.Figure:
    """Grid of crops: one row per neuron (the first `max_neurons`), one column per rank, each titled
    with its activation and image index; a box marks the patch inside its context margin."""
    rows, cols = min(len(top.neurons), max_neurons), top.values.shape[1]
    titles = [f"{top.values[i, r]:.3g} (img {int(top.image_index[i, r])})" for i in range(rows) for r in range(cols)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.06)
    m, p = top.margin, top.patch_size
    for i in range(rows):
        for r in range(cols):
            fig.add_trace(go.Image(z=top.crops[i, r].numpy()), row=i + 1, col=r + 1)
            if m > 0:
                fig.add_shape(type="rect", x0=m - 0.5, y0=m - 0.5, x1=m + p - 0.5, y1=m + p - 0.5,
                              line={"color": "lime", "width": 1}, row=i + 1, col=r + 1)
        fig.update_yaxes(title_text=neuron_label(*top.neurons[i]), row=i + 1, col=1)
    _bare_axes(fig)
    fig.update_annotations(font_size=9)
    fig.update_layout(title=f"Top-{cols} activating patches over {top.n_images} images",
                      height=150 * rows + 80, width=110 * cols + 150)
    return fig


def heatmap_figure(maps: Heatmaps, cols: int = 4, alpha: float = 0.5, max_neurons: int = 15) -> go.Figure:
    """The input image, each neuron's upsampled activation overlaid on it (the first `max_neurons`;
    own colour range per panel, jet: blue low, red high), and the lake's fused anomaly map if any."""
    image = Image.fromarray(maps.image)
    panels = [("input", maps.image)]  # (title, [S, S, 3] uint8)
    for (hook, ch), grid, m in list(zip(maps.neurons, maps.grid, maps.maps))[:max_neurons]:
        panels.append((f"{neuron_label(hook, ch)} max {grid.max():.3g}", np.asarray(overlay(image, m.numpy(), alpha))))
    if maps.anomaly_map is not None:
        panels.append((f"anomaly map (score {maps.image_score:.3g})", np.asarray(overlay(image, maps.anomaly_map.numpy(), alpha))))
    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels], horizontal_spacing=0.02)
    for k, (_, pic) in enumerate(panels):
        fig.add_trace(go.Image(z=pic), row=k // cols + 1, col=k % cols + 1)
    _bare_axes(fig)
    fig.update_annotations(font_size=10)
    fig.update_layout(title="Neuron activations over the patch grid", height=260 * rows + 60, width=250 * cols)
    return fig


def neuron_stats_figure(stats: NeuronStats, top: int = 6, max_points: int = 2000) -> go.Figure:
    """Top row: activation histograms (normal vs anomalous patches, density) of the `top` neurons
    with the highest AUROC; bottom row: how many neurons sit at each hook point."""
    order = stats.ranking()[:top]
    t = len(order)
    titles = [f"{neuron_label(*stats.neurons[j])} AUROC {stats.auroc[j]:.3f}" for j in order]
    fig = make_subplots(rows=2, cols=t, specs=[[{}] * t, [{"colspan": t}] + [None] * (t - 1)],
                        subplot_titles=titles + ["neurons per hook point"], vertical_spacing=0.2)
    for k, j in enumerate(order):
        for name, samples, color in (("normal", stats.normal_samples, "#636efa"), ("anomalous", stats.anomalous_samples, "#EF553B")):
            fig.add_trace(go.Histogram(x=samples[:max_points, j].numpy(), name=f"{name} patches", histnorm="probability density",
                                       marker_color=color, opacity=0.6, legendgroup=name, showlegend=k == 0),
                          row=1, col=k + 1)
        fig.update_xaxes(title_text="activation", row=1, col=k + 1)
    fig.add_trace(go.Bar(x=[hook_label(h) for h in stats.hook_counts], y=list(stats.hook_counts.values()),
                         name="neurons", marker_color="#00cc96", showlegend=False), row=2, col=1)
    fig.update_yaxes(title_text="density", row=1, col=1)
    fig.update_yaxes(title_text="neurons", row=2, col=1)
    fig.update_annotations(font_size=10)
    fig.update_layout(barmode="overlay", height=620, width=max(600, 220 * t),
                      title=f"Normal ({stats.n_normal}) vs anomalous ({stats.n_anomalous}) patches "
                            f"(anomalous: mask covers >= {stats.min_fraction:g} of the patch)")
    return fig


# --- causal tools: ablation, single-neuron sweep, patching, sweeps, words
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
    meta = effect.meta
    read = ", ".join(hook_label(h) for h in meta.get("readout_hooks", [])) or "the detector"
    direct = len(meta.get("readout_reads_ablated", []))
    fig.update_layout(barmode="group", yaxis_title="metric (0-1)", yaxis_range=[0, 1.05],
                      title=(f"Ablating {meta['n_neurons']} neurons ({meta['mode']}) vs as many random ones<br>"
                             f"<sup>read by {meta.get('readout', 'the detector')} at {read}"
                             + (f"; {direct} ablated units read directly" if direct else "") + "</sup>"))
    return fig


def neuron_sweep_figure(rows: list[dict], top: int = 30) -> go.Figure:
    """Bars of the anomaly-score drop caused by ablating each neuron alone (largest first)."""
    rows = rows[:top]
    fig = go.Figure(go.Bar(x=[f"{hook_label(r['hook'])}[{r['index']}]" for r in rows],
                           y=[r["score_drop"] for r in rows]))
    fig.update_layout(title="Single-neuron ablation: drop of the mean anomaly score (anomalous images)",
                      xaxis_title="neuron (layer.site[channel])", yaxis_title="score drop")
    return fig


def patching_figure(result, top: int = 30) -> go.Figure:
    """Fraction of the anomaly score removed (normal -> anomalous) and restored (anomalous -> normal)."""
    rows = result.rows()[:top]
    x = [hook_label(r["patched"]) for r in rows]
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
    """Heatmap: cosine of each neuron's written direction with each word's text embedding (RdBu_r:
    red = high, blue = low, white = 0; the first neuron in the top row, in every format)."""
    sim = words.similarity[:top_neurons].numpy()
    y = [f"{hook_label(h)}[{i}]" for h, i in words.neurons[:top_neurons]]
    fig = go.Figure(go.Heatmap(z=sim, x=words.words, y=y, colorscale="RdBu_r", zmid=0, colorbar={"title": "cosine"}))
    fig.update_yaxes(autorange="reversed")
    path = getattr(words, "path", "direct")
    how = (f"carried through the later blocks ({words.n_reference} reference images)" if path == "carried"
           else "direct write, read by ln_post at once")
    fig.update_layout(title=f"Neuron to language: cosine of the written direction ({how}) with word embeddings",
                      xaxis_title="word", yaxis_title="neuron")
    return fig
