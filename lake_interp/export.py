"""Figure export: one spec, rendered to interactive HTML (plotly) and to PNG/SVG/PDF (matplotlib).

Each figure is built once, as a plotly Figure; `lake_interp.figure_spec.resolve` makes every
colour, legend group, colour scale and axis orientation explicit in it, and both renderers draw
that resolved spec: plotly writes the HTML, `to_matplotlib` redraws the trace types this project
uses (Bar, Scatter with error bars, Heatmap, Image, Histogram, rectangle shapes) at the same
subplot domains, with the same colours, legend entries (one per legend group), colour scales
(the plotly scale's own stops), colour ranges and orientation (row 0 at the top of every heatmap
and image, square pixels where the spec asks for them). Static export needs no browser.

The HTML works offline: it loads plotly.js from `plotly.min.js` beside it (the installed plotly's
copy, written once per folder), or carries it inline (`plotlyjs="inline"`); never from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, to_hex  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from lake_interp.figure_spec import image_array, resolve, scale_stops  # noqa: E402

PLOTLY_JS = "plotly.min.js"


def save_figure(fig: go.Figure, path_stem, formats: Sequence[str] = ("png", "svg", "pdf", "html"),
                width: float = 8.0, height: float = 4.5, plotlyjs: str = "directory", output=None) -> list[Path]:
    """Write `<stem>.<fmt>` for each format from one resolved spec; returns the paths written.

    plotlyjs: "directory" (default) loads plotly.js from `plotly.min.js` in the same folder, written
    there from the installed plotly when missing or from another plotly version; "inline" puts it
    inside the HTML file (about 4.7 MB). Neither needs the network. ``output``: an
    ``lake_interp.outputs.OutputFolder`` holding ``path_stem``: every file goes through its policy
    (atomic, recorded, a foreign file never overwritten)."""
    if plotlyjs not in ("directory", "inline"):
        raise ValueError(f"plotlyjs={plotlyjs!r}: expected 'directory' or 'inline'")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    spec = resolve(fig)
    written = []

    def target(path: Path):
        if output is None:
            from contextlib import nullcontext

            return nullcontext(path)
        return output.atomic(path.relative_to(output.root).as_posix())

    if "html" in formats:
        if plotlyjs == "directory":
            write_plotlyjs(stem.parent, output=output)
        with target(stem.with_suffix(".html")) as path:
            spec.write_html(path, include_plotlyjs=PLOTLY_JS if plotlyjs == "directory" else True,
                            include_mathjax=False, full_html=True)
        written.append(stem.with_suffix(".html"))
    static = [f for f in formats if f != "html"]
    if static:
        mfig = to_matplotlib(spec, width, height)
        for fmt in static:
            with target(stem.with_suffix(f".{fmt}")) as path:
                mfig.savefig(path, format=fmt, dpi=200, bbox_inches="tight")
            written.append(stem.with_suffix(f".{fmt}"))
        plt.close(mfig)
    return written


def write_plotlyjs(folder, output=None) -> Path:
    """`<folder>/plotly.min.js` from the installed plotly, unless it is already that file (with
    ``output``, an ``OutputFolder`` holding ``folder``, written through its policy)."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLY_JS
    js = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(js.encode()) or path.read_text()[:300] != js[:300]:
        if output is None:
            path.write_text(js)
        else:
            output.write_text(path.relative_to(output.root).as_posix(), js)
    return path


def _text(t) -> str:
    if t is None:
        return ""
    return t if isinstance(t, str) else (t.text or "")


def _axis_names(trace) -> tuple[str, str]:
    return ("xaxis" + (trace.xaxis or "x")[1:], "yaxis" + (trace.yaxis or "y")[1:])


def colormap(trace) -> LinearSegmentedColormap:
    """The heatmap's plotly colour scale as a matplotlib colour map: the same stops, the same name."""
    meta = trace.meta if isinstance(trace.meta, dict) else {}
    return LinearSegmentedColormap.from_list(meta.get("colorscale", "plotly"), scale_stops(trace.colorscale), N=256)


def to_matplotlib(fig: go.Figure, width: float = 8.0, height: float = 4.5):
    """A matplotlib Figure drawing the (resolved) plotly figure's traces on axes at the same domains."""
    fig = resolve(fig)
    layout = fig.layout
    mfig = plt.figure(figsize=(width, height))
    axes: dict[tuple[str, str], plt.Axes] = {}
    handles: dict[str, tuple] = {}  # legend group -> (artist, label), in the order plotly lists them

    def ax_for(key):
        if key not in axes:
            xa, ya = layout[key[0]], layout[key[1]]
            x0, x1 = xa.domain or (0, 1)
            y0, y1 = ya.domain or (0, 1)
            pad = 0.06  # of the domain, on each side, for tick labels
            w, h = x1 - x0, y1 - y0
            axes[key] = mfig.add_axes([x0 + pad * w, y0 + pad * h, w * (1 - 2 * pad), h * (1 - 2 * pad)], label="|".join(key))
        return axes[key]

    def legend(trace, artist):
        if trace.showlegend is not False and trace.name and trace.legendgroup not in handles:
            handles[trace.legendgroup] = (artist, trace.name)

    categories: dict[tuple, list[str]] = {}  # axes -> category labels of bars and scatters, in plotly's order
    for trace in fig.data:
        if trace.type in ("bar", "scatter") and trace.x is not None:
            if not all(isinstance(v, (int, float, np.number)) for v in trace.x) or trace.type == "bar":
                cats = categories.setdefault(_axis_names(trace), [])
                cats += [str(v) for v in trace.x if str(v) not in cats]
    bars: dict[tuple, list] = {}
    for trace in fig.data:
        if trace.type == "bar":
            bars.setdefault(_axis_names(trace), []).append(trace)
    for key, group in bars.items():
        ax = ax_for(key)
        cats = categories[key]
        n = len(group) if layout.barmode in (None, "group") else 1
        w = 0.8 / n
        for j, t in enumerate(group):
            off = (j - (n - 1) / 2) * w if n > 1 else 0.0
            pos = [cats.index(str(x)) + off for x in t.x]
            err = t.error_y.array if t.error_y and t.error_y.array is not None else None
            bar = ax.bar(pos, t.y, width=w, yerr=err, label=t.name or "", color=t.marker.color, capsize=3,
                         alpha=t.opacity if t.opacity is not None else 1.0,
                         ecolor=t.error_y.color if err is not None else None)
            legend(t, bar.patches[0] if bar.patches else bar)
        long = max(map(len, cats)) > 8
        ax.set_xticks(range(len(cats)), cats, rotation=30 if long else 0, ha="right" if long else "center",
                      fontsize=7 if long else None)
    for trace in fig.data:
        if trace.type == "bar":
            continue
        key = _axis_names(trace)
        ax = ax_for(key)
        if trace.type == "scatter":
            x = list(trace.x) if trace.x is not None else list(range(len(trace.y)))
            cats = categories.get(key)
            xs = [cats.index(str(v)) for v in x] if cats else x
            err = trace.error_y.array if trace.error_y and trace.error_y.array is not None else None
            mode = trace.mode or "lines+markers"
            line = ax.errorbar(xs, trace.y, yerr=err, label=trace.name or "", capsize=3, color=trace.line.color,
                               ecolor=trace.error_y.color if err is not None else None,
                               linestyle="-" if "lines" in mode else "none", marker="o" if "markers" in mode else None)
            legend(trace, line.lines[0])
            if cats:
                ax.set_xticks(range(len(cats)), cats)
        elif trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=float)
            ya = layout[key[1]]
            im = ax.imshow(z, cmap=colormap(trace), vmin=trace.zmin, vmax=trace.zmax, interpolation="nearest",
                           origin="upper" if ya.autorange == "reversed" else "lower",
                           aspect="equal" if ya.scaleanchor is not None else "auto")
            im.set_gid("heatmap")
            if trace.x is not None:
                ax.set_xticks(range(len(trace.x)), [str(v) for v in trace.x], rotation=90, fontsize=6)
            if trace.y is not None:
                ax.set_yticks(range(len(trace.y)), [str(v) for v in trace.y], fontsize=6)
            if trace.showscale is not False:  # beside the axes, which keep their domain
                ax.apply_aspect()
                box = ax.get_position()
                cax = mfig.add_axes([box.x1 + 0.01, box.y0, 0.015, box.height], label="<colorbar>")
                mfig.colorbar(im, cax=cax, label=_text(trace.colorbar.title) if trace.colorbar else "")
        elif trace.type == "image":
            pic = image_array(trace)
            h, w = pic.shape[:2]
            dx, dy = trace.dx or 1.0, trace.dy or 1.0
            left, top = (trace.x0 or 0.0) - dx / 2, (trace.y0 or 0.0) - dy / 2
            im = ax.imshow(pic, extent=(left, left + w * dx, top + h * dy, top), origin="upper", aspect="equal",
                           interpolation="nearest")
            im.set_gid("image")
        elif trace.type == "histogram":
            *_, patches = ax.hist(trace.x, bins=30, alpha=trace.opacity if trace.opacity is not None else 0.6,
                                  label=trace.name or "", color=trace.marker.color, density=trace.histnorm is not None)
            legend(trace, patches[0])
        else:
            raise NotImplementedError(f"static export of plotly {trace.type!r} traces is not implemented")
    for shape in layout.shapes or ():
        key = ("xaxis" + (shape.xref or "x")[1:], "yaxis" + (shape.yref or "y")[1:])
        if shape.type == "rect" and key in axes:
            axes[key].add_patch(Rectangle((shape.x0, shape.y0), shape.x1 - shape.x0, shape.y1 - shape.y0, fill=False,
                                          edgecolor=shape.line.color or "black", linewidth=shape.line.width or 1))
    for (xk, yk), ax in axes.items():
        xa, ya = layout[xk], layout[yk]
        ax.set_xlabel(_text(xa.title), fontsize=8)
        ax.set_ylabel(_text(ya.title), fontsize=8)
        if ya.range is not None:
            ax.set_ylim(ya.range)
        if xa.showticklabels is False:
            ax.set_xticks([])
        if ya.showticklabels is False:
            ax.set_yticks([])
        if xa.visible is False and ya.visible is False:
            ax.set_axis_off()
    if handles:
        artists, labels = zip(*handles.values())
        mfig.legend(artists, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    for ann in layout.annotations or ():  # subplot titles
        if ann.xref == "paper" and ann.yref == "paper":
            mfig.text(ann.x, ann.y, ann.text, ha="center", va="bottom", fontsize=8)
    if _text(layout.title):
        mfig.suptitle(_text(layout.title), fontsize=10, y=1.05, va="bottom")
    return mfig


def static_spec(mfig) -> dict:
    """What the matplotlib renderer drew, read from its artists, in `figure_spec.plotly_spec`'s form:
    {"legend": [(name, colour)], "traces": [(axes, name, colour)], "heatmaps": [...], "images": [...]}."""
    legend = []
    for lg in mfig.legends:
        for handle, text in zip(lg.legend_handles, lg.get_texts()):
            color = handle.get_facecolor() if hasattr(handle, "get_facecolor") and not hasattr(handle, "get_xdata") \
                else handle.get_color()
            legend.append((text.get_text(), to_hex(color)))
    traces, heatmaps, images = [], [], []
    for i, ax in enumerate(mfig.axes):
        label = ax.get_label()
        if label == "<colorbar>" or hasattr(ax, "_colorbar"):
            continue
        key = tuple(label.split("|")) if "|" in label else (f"axes {i}",)
        for c in ax.containers:
            first = c.patches[0] if hasattr(c, "patches") and len(c.patches) else c.lines[0]
            if first is None:  # the error bars of a bar trace
                continue
            color = first.get_facecolor() if hasattr(first, "get_facecolor") else first.get_color()
            traces.append((key, c.get_label() or None, to_hex(color)))
        for im in ax.get_images():
            if im.get_gid() == "heatmap":
                cmap = im.get_cmap()
                zmin, zmax = im.get_clim()
                row0_top = ax.yaxis_inverted()  # row i sits at y = i with either origin
                heatmaps.append({"axes": key, "colorscale": cmap.name.lower(), "low": to_hex(cmap(0.0)),
                                 "high": to_hex(cmap(1.0)), "zmin": float(zmin), "zmax": float(zmax),
                                 "row0": "top" if row0_top else "bottom", "square": ax.get_aspect() == 1.0})
            else:
                images.append({"axes": key, "row0": "top" if ax.yaxis_inverted() else "bottom"})
    return {"legend": legend, "traces": traces, "heatmaps": heatmaps, "images": images}
