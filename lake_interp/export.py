"""Figure export: interactive HTML with plotly, static PNG/SVG/PDF with matplotlib.

Static export needs no browser: plotly's own image export (kaleido >= 1) drives a Chrome or
Chromium install, which servers and CI machines often lack. So each figure is defined once, as a
plotly Figure, and `to_matplotlib` redraws the trace types this project uses (Bar, Scatter with
error bars, Heatmap, Image, Histogram) with the same subplot layout, titles, axis labels and legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

DEFAULT_COLORS = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880"]


def save_figure(fig: go.Figure, path_stem, formats: Sequence[str] = ("png", "svg", "pdf", "html"),
                width: float = 8.0, height: float = 4.5) -> list[Path]:
    """Write `<stem>.<fmt>` for each format; returns the paths written."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if "html" in formats:
        fig.write_html(stem.with_suffix(".html"), include_plotlyjs="cdn")
        written.append(stem.with_suffix(".html"))
    static = [f for f in formats if f != "html"]
    if static:
        mfig = to_matplotlib(fig, width, height)
        for fmt in static:
            mfig.savefig(stem.with_suffix(f".{fmt}"), dpi=200, bbox_inches="tight")
            written.append(stem.with_suffix(f".{fmt}"))
        plt.close(mfig)
    return written


def _text(t) -> str:
    if t is None:
        return ""
    return t if isinstance(t, str) else (t.text or "")


def _axis_names(trace) -> tuple[str, str]:
    return ("xaxis" + (trace.xaxis or "x")[1:], "yaxis" + (trace.yaxis or "y")[1:])


def to_matplotlib(fig: go.Figure, width: float = 8.0, height: float = 4.5):
    """A matplotlib Figure drawing the plotly figure's traces on axes at the same domains."""
    layout = fig.layout
    mfig = plt.figure(figsize=(width, height))
    axes: dict[tuple[str, str], plt.Axes] = {}
    palette: dict[str, str] = {}

    def color(trace) -> str:  # one colour per trace name, the same in every subplot
        key = trace.legendgroup or trace.name or str(id(trace))
        return palette.setdefault(key, DEFAULT_COLORS[len(palette) % len(DEFAULT_COLORS)])

    def ax_for(trace):
        key = _axis_names(trace)
        if key not in axes:
            xa, ya = layout[key[0]], layout[key[1]]
            x0, x1 = xa.domain or (0, 1)
            y0, y1 = ya.domain or (0, 1)
            pad = 0.06  # of the domain, on each side, for tick labels
            w, h = x1 - x0, y1 - y0
            axes[key] = mfig.add_axes([x0 + pad * w, y0 + pad * h, w * (1 - 2 * pad), h * (1 - 2 * pad)])
        return axes[key]

    bars: dict[tuple, list] = {}
    for trace in fig.data:
        if trace.type == "bar":
            bars.setdefault(_axis_names(trace), []).append(trace)
    for key, group in bars.items():
        ax = ax_for(group[0])
        cats = list(dict.fromkeys(str(x) for t in group for x in t.x))
        n = len(group)
        w = 0.8 / n
        for j, t in enumerate(group):
            pos = [cats.index(str(x)) + (j - (n - 1) / 2) * w for x in t.x]
            err = t.error_y.array if t.error_y and t.error_y.array is not None else None
            ax.bar(pos, t.y, width=w, yerr=err, label=t.name if t.showlegend is not False else None, color=color(t), capsize=3)
        ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats)) > 8 else 0, ha="right" if max(map(len, cats)) > 8 else "center")
    for trace in fig.data:
        if trace.type == "bar":
            continue
        ax = ax_for(trace)
        if trace.type == "scatter":
            x = list(trace.x) if trace.x is not None else list(range(len(trace.y)))
            numeric = all(isinstance(v, (int, float, np.number)) for v in x)
            xs = x if numeric else list(range(len(x)))
            err = trace.error_y.array if trace.error_y and trace.error_y.array is not None else None
            mode = trace.mode or "lines+markers"
            ax.errorbar(xs, trace.y, yerr=err, label=trace.name if trace.showlegend is not False else None, capsize=3, color=color(trace),
                        linestyle="-" if "lines" in mode else "none", marker="o" if "markers" in mode else None)
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in x])
        elif trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=float)
            cmap = "RdBu_r" if trace.zmid is not None else "viridis"
            vmax = np.nanmax(np.abs(z)) if trace.zmid is not None else None
            im = ax.imshow(z, aspect="auto", cmap=cmap, vmin=-vmax if vmax else None, vmax=vmax)
            if trace.x is not None:
                ax.set_xticks(range(len(trace.x)), [str(v) for v in trace.x], rotation=90, fontsize=6)
            if trace.y is not None:
                ax.set_yticks(range(len(trace.y)), [str(v) for v in trace.y], fontsize=6)
            mfig.colorbar(im, ax=ax, label=_text(trace.colorbar.title) if trace.colorbar else "")
        elif trace.type == "image":
            ax.imshow(np.asarray(trace.z, dtype=np.uint8))
            ax.set_xticks([])
            ax.set_yticks([])
        elif trace.type == "histogram":
            ax.hist(trace.x, bins=30, alpha=0.6, label=trace.name, color=color(trace), density=trace.histnorm is not None)
        else:
            raise NotImplementedError(f"static export of plotly {trace.type!r} traces is not implemented")
    for (xk, yk), ax in axes.items():
        ax.set_xlabel(_text(layout[xk].title))
        ax.set_ylabel(_text(layout[yk].title))
        if layout[yk].range is not None:
            ax.set_ylim(layout[yk].range)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
    for ann in layout.annotations or ():  # subplot titles
        if ann.xref == "paper" and ann.yref == "paper":
            mfig.text(ann.x, ann.y, ann.text, ha="center", va="bottom", fontsize=8)
    if _text(layout.title):
        mfig.suptitle(_text(layout.title), fontsize=10, y=1.05, va="bottom")
    return mfig
