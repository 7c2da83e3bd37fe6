"""One spec per figure, rendered to every format.

A figure is built once, as a plotly Figure (traces, layout). `resolve` turns it into the spec both
renderers draw from, with nothing left to a renderer's defaults:

- every bar / line / histogram trace has an explicit colour and a legend group: the colour of a
  method comes from one table keyed by method name (`method_color`, read from the method table
  `lake_interp.detectors.methods.METHODS`), every trace of a group has the group's colour, and only
  the group's first trace is in the legend (one entry per method, whatever the number of panels);
- every heatmap has an explicit colour scale (recorded by name in `trace.meta["colorscale"]`) and
  colour range (`zmin`/`zmax`), and its y axis runs downwards (row 0 at the top, as an image or a
  table reads); an image-like heatmap (no x/y labels) also gets square pixels;
- every `go.Image` is embedded as a PNG (`source`; a large photograph as a JPEG where that is less
  than half the size), downsampled to at most `max_image_px` pixels a side, with `dx`/`dy`/`x0`/`y0`
  set so that shapes drawn in the original pixel coordinates stay put.

`lake_interp.export.save_figure` writes the HTML (plotly) and PNG/SVG/PDF (matplotlib,
`lake_interp.export.to_matplotlib`) from the resolved spec; `plotly_spec` reads back, from a figure
or from the JSON in a written HTML file, what a browser draws (colours per legend entry, colour
scales, orientation), so that tests can compare it with what the static renderer drew
(`lake_interp.export.static_spec`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b", "#bcbd22",
           "#7f7f7f"]
"""Method colours, in the order of the method table (lake blue, lake_random red, ...)."""
FALLBACK = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
            "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#bd9e39", "#ad494a", "#a55194"]
"""Colours for names that are not methods, chosen by a hash of the name (the same in every run)."""
ALIASES = {"selected": "lake", "random": "lake_random"}
"""Legend names that mean a method: a sweep's `selected` condition is LAKE, `random` its random control."""
DEFAULT_COLOR = PALETTE[0]
ERROR_BAR_COLOR = "#444444"
SEQUENTIAL, DIVERGING = "Viridis", "RdBu_r"
"""Default colour scales: low to high dark-blue to yellow; diverging blue (low) - white - red (high)."""
MAX_IMAGE_PX = 256
JPEG_ABOVE_BYTES = 48_000
LEGEND_TYPES = ("bar", "scatter", "histogram")


def method_names() -> list[str]:
    """The method table's names, in its order (`lake_interp.detectors.methods`, else `lake.config`)."""
    try:
        from lake_interp.detectors.methods import METHODS
    except ImportError:  # an older layout: the table lived in the LAKE config module
        from lake_interp.lake.config import METHODS  # type: ignore[no-redef]
    return list(METHODS)


def method_colors() -> dict[str, str]:
    """Method name -> colour: the one table every figure reads."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(method_names())}


def method_color(name: Optional[str], taken: Optional[set] = None) -> str:
    """The colour of a method (or of an alias of one); any other name gets a colour from a hash of
    the name, moved on to the next fallback colour while it is in `taken` (colours already used in
    the same figure)."""
    if name is None:
        return DEFAULT_COLOR
    table = method_colors()
    if name in table:
        return table[name]
    if ALIASES.get(name) in table:
        return table[ALIASES[name]]
    start = int(hashlib.md5(name.encode()).hexdigest(), 16) % len(FALLBACK)
    for k in range(len(FALLBACK)):
        color = FALLBACK[(start + k) % len(FALLBACK)]
        if not taken or color.lower() not in taken:
            return color
    return FALLBACK[start]


# ------------------------------------------------------------------------------------ colour scales
@lru_cache(maxsize=None)
def _named_scales() -> dict[tuple, str]:
    out = {}
    for name in pc.named_colorscales():
        for n in (name, name + "_r"):
            out[_key(pc.get_colorscale(n))] = n
    return out


def _key(stops) -> tuple:
    return tuple((round(float(p), 6), _hex(c)) for p, c in stops)


def scale_name(stops) -> Optional[str]:
    """The plotly name (lower case, `_r` when reversed) of a colour scale given as stops, or None."""
    return _named_scales().get(_key(stops))


def scale_stops(scale) -> list[tuple[float, str]]:
    """A colour scale (name or stops) as [(position, '#rrggbb'), ...]."""
    stops = pc.get_colorscale(scale) if isinstance(scale, str) else scale
    return [(float(p), _hex(c)) for p, c in stops]


def _hex(color: str) -> str:
    """Any plotly colour string ('#abc', '#aabbcc', 'rgb(1,2,3)', a CSS name) as '#rrggbb'."""
    color = str(color).strip()
    if color.startswith("rgb"):
        r, g, b = (float(v) for v in re.findall(r"[\d.]+", color)[:3])
        return "#%02x%02x%02x" % (round(r), round(g), round(b))
    from matplotlib.colors import to_hex

    return to_hex(color).lower()


def scale_color(scale, t: float) -> str:
    """The colour of a scale at position t in [0, 1] (linear between stops, as both renderers do)."""
    stops = scale_stops(scale)
    for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
        if p0 <= t <= p1:
            f = 0.0 if p1 == p0 else (t - p0) / (p1 - p0)
            a, b = np.array(pc.hex_to_rgb(c0), float), np.array(pc.hex_to_rgb(c1), float)
            return "#%02x%02x%02x" % tuple(int(round(v)) for v in (1 - f) * a + f * b)
    return stops[-1][1] if t > stops[-1][0] else stops[0][1]


# ------------------------------------------------------------------------------------ resolve
def _axis_keys(trace) -> tuple[str, str]:
    return ("xaxis" + (trace.xaxis or "x")[1:], "yaxis" + (trace.yaxis or "y")[1:])


def resolve(fig: go.Figure, max_image_px: int = MAX_IMAGE_PX) -> go.Figure:
    """A copy of `fig` with every colour, legend entry, colour scale and axis orientation explicit
    (see the module docstring). Resolving a resolved figure changes nothing."""
    fig = go.Figure(fig)
    groups: dict[str, str] = {}  # legend group -> colour
    shown: set[str] = set()
    taken = {str(_explicit_color(t)).lower() for t in fig.data if t.type in LEGEND_TYPES and _explicit_color(t)}
    for i, trace in enumerate(fig.data):
        if trace.type in LEGEND_TYPES:
            key = trace.legendgroup or trace.name or f"trace {i}"
            if key not in groups:
                explicit = _explicit_color(trace)
                groups[key] = _hex(explicit) if explicit else method_color(trace.name if trace.name else None, taken)
                taken.add(groups[key].lower())
            color = groups[key]
            trace.legendgroup = key
            if trace.type == "scatter":
                trace.line.color = color
            trace.marker.color = color
            if trace.error_y is not None and trace.error_y.array is not None and trace.error_y.color is None:
                trace.error_y.color = ERROR_BAR_COLOR
            if trace.name:
                trace.showlegend = key not in shown and trace.showlegend is not False
                shown.add(key)
            else:
                trace.showlegend = False
        elif trace.type == "heatmap":
            _resolve_heatmap(fig, trace)
        elif trace.type == "image":
            _resolve_image(fig, trace, max_image_px)
    return fig


def _explicit_color(trace) -> Optional[str]:
    c = trace.marker.color if trace.marker is not None else None
    if not isinstance(c, str) and trace.type == "scatter" and trace.line is not None:
        c = trace.line.color
    return c if isinstance(c, str) else None


def _resolve_heatmap(fig: go.Figure, trace) -> None:
    meta = dict(trace.meta) if isinstance(trace.meta, dict) else {}
    z = np.asarray(trace.z, dtype=float)
    if "colorscale" not in meta:
        if trace.colorscale is not None:
            meta["colorscale"] = scale_name(trace.colorscale) or "custom"
        else:
            meta["colorscale"] = DIVERGING if trace.zmid is not None else SEQUENTIAL
    if trace.colorscale is None:
        trace.colorscale = meta["colorscale"]
    finite = z[np.isfinite(z)]
    if trace.zmid is not None:
        half = float(np.max(np.abs(finite - trace.zmid))) if finite.size else 1.0
        half = half or 1.0
        if trace.zmin is None:
            trace.zmin = trace.zmid - half
        if trace.zmax is None:
            trace.zmax = trace.zmid + half
        trace.zmid = None
    if trace.zmin is None:
        trace.zmin = float(finite.min()) if finite.size else 0.0
    if trace.zmax is None:
        trace.zmax = float(finite.max()) if finite.size else 1.0
    image_like = meta.get("image_like", trace.x is None and trace.y is None)
    meta["image_like"] = bool(image_like)
    trace.meta = meta
    xk, yk = _axis_keys(trace)
    fig.layout[yk].autorange = "reversed"  # row 0 at the top, in every format
    if image_like:
        fig.layout[yk].scaleanchor = trace.xaxis or "x"
        fig.layout[yk].scaleratio = 1
        fig.layout[yk].constrain = "domain"
        fig.layout[xk].constrain = "domain"


def _resolve_image(fig: go.Figure, trace, max_image_px: int) -> None:
    from PIL import Image

    xk, yk = _axis_keys(trace)
    fig.layout[yk].autorange = "reversed"
    fig.layout[yk].scaleanchor = trace.xaxis or "x"
    if trace.z is None:
        return
    z = np.asarray(trace.z)
    if z.dtype != np.uint8:
        z = np.clip(z, 0, 255).astype(np.uint8)
    h, w = z.shape[:2]
    dx0 = trace.dx if trace.dx is not None else 1.0
    dy0 = trace.dy if trace.dy is not None else 1.0
    x00 = trace.x0 if trace.x0 is not None else 0.0
    y00 = trace.y0 if trace.y0 is not None else 0.0
    pic = Image.fromarray(z if z.ndim == 3 else np.stack([z] * 3, -1))
    if max(h, w) > max_image_px:
        f = max(h, w) / max_image_px
        pic = pic.resize((max(1, round(w / f)), max(1, round(h / f))), Image.BOX)
    w2, h2 = pic.size
    dx, dy = dx0 * w / w2, dy0 * h / h2
    trace.z = None
    trace.source = _data_uri(pic)
    # the first pixel's centre, so that the picture covers the same span as the original pixels
    trace.dx, trace.dy = dx, dy
    trace.x0, trace.y0 = x00 - dx0 / 2 + dx / 2, y00 - dy0 / 2 + dy / 2


def _data_uri(pic) -> str:
    """PNG (lossless: masks, crops, drawings); a photograph whose PNG is large goes as a JPEG
    (quality 90) where that is less than half the size, so that multi-panel figures stay light."""
    png = io.BytesIO()
    pic.save(png, format="PNG", optimize=True)
    data, kind = png.getvalue(), "png"
    if len(data) > JPEG_ABOVE_BYTES:
        jpg = io.BytesIO()
        pic.save(jpg, format="JPEG", quality=90)
        if 2 * len(jpg.getvalue()) < len(data):
            data, kind = jpg.getvalue(), "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def image_array(trace) -> np.ndarray:
    """The pixels of a `go.Image` trace (from `z` or from a PNG/JPEG data URI in `source`)."""
    if trace.z is not None:
        return np.asarray(trace.z, dtype=np.uint8)
    from PIL import Image

    data = base64.b64decode(trace.source.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ------------------------------------------------------------------------------------ read back
def html_figure(path) -> go.Figure:
    """The figure a plotly HTML file draws: its `Plotly.newPlot(id, data, layout, config)` JSON."""
    text = Path(path).read_text()
    at = text.index("Plotly.newPlot(")
    dec = json.JSONDecoder()
    i = text.index(",", at) + 1  # after the div id
    data, i = dec.raw_decode(text, _skip(text, i))
    layout, _ = dec.raw_decode(text, _skip(text, text.index(",", i) + 1))
    return go.Figure(data=_decode(data), layout=_decode(layout), skip_invalid=True)


def _decode(obj):
    """plotly's typed arrays ({"dtype", "bdata", "shape"}) back to numpy arrays, everywhere in obj."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            shape = obj.get("shape")
            if shape is not None:
                arr = arr.reshape([int(v) for v in str(shape).split(",")] if isinstance(shape, str) else shape)
            return arr
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def _skip(text: str, i: int) -> int:
    while text[i].isspace():
        i += 1
    return i


def plotly_spec(fig: go.Figure) -> dict:
    """What plotly draws, as plain data: {"legend": [(name, colour)], "traces": [(axes, name,
    colour)], "heatmaps": [{axes, colorscale, low, high, zmin, zmax, row0}], "images": [...]}, with
    plotly's own defaults applied where the figure leaves a value out (colorway by trace index, the
    template's colour scale, y axis upwards)."""
    colorway = list(fig.layout.colorway or (fig.layout.template.layout.colorway if fig.layout.template else ())
                    or pc.qualitative.Plotly)
    legend, traces, heatmaps, images = [], [], [], []
    seen_groups = set()
    for i, t in enumerate(fig.data):
        axes = _axis_keys(t)
        if t.type in LEGEND_TYPES:
            color = _hex(_explicit_color(t) or colorway[i % len(colorway)])
            traces.append((axes, t.name, color))
            group = t.legendgroup or None
            if t.name and t.showlegend is not False and (group is None or group not in seen_groups):
                legend.append((t.name, color))
            if group:
                seen_groups.add(group)
        elif t.type == "heatmap":
            scale = t.colorscale
            if scale is None and fig.layout.template and fig.layout.template.data.heatmap:
                scale = fig.layout.template.data.heatmap[0].colorscale
            scale = scale_stops(scale if scale is not None else "Plasma")
            z = np.asarray(t.z, dtype=float)
            zmin, zmax = t.zmin, t.zmax
            if zmin is None or zmax is None:
                zmin, zmax = float(np.nanmin(z)), float(np.nanmax(z))
                if t.zmid is not None:
                    half = max(abs(zmin - t.zmid), abs(zmax - t.zmid))
                    zmin, zmax = t.zmid - half, t.zmid + half
            reversed_ = fig.layout[axes[1]].autorange == "reversed"
            heatmaps.append({"axes": axes, "colorscale": scale_name(scale), "low": scale[0][1], "high": scale[-1][1],
                             "zmin": float(zmin), "zmax": float(zmax), "row0": "top" if reversed_ else "bottom",
                             "square": fig.layout[axes[1]].scaleanchor is not None})
        elif t.type == "image":
            # plotly draws images with the y axis downwards unless the axis says otherwise
            images.append({"axes": axes, "row0": "bottom" if fig.layout[axes[1]].autorange is True else "top"})
    return {"legend": legend, "traces": traces, "heatmaps": heatmaps, "images": images}
