"""Every figure tells one story in every format: the HTML (what plotly draws, read back from the
written file) and the static PNG/SVG/PDF (what matplotlib drew, read from its artists) have the
same colour for each method and legend entry, one legend entry per method, the same colour scale
in the same direction, row 0 of every map at the top; the HTML needs no network and stays light."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from lake_interp import export
from lake_interp.figure_spec import html_figure, method_color, method_colors, plotly_spec
from tests.figure_cases import HOT_TOP_LEFT, cached_study_figures

STUDY = ["fig1_selected_vs_random", "fig2_metrics_vs_k", "fig3_neuron_depth", "fig4_top_patches",
         "fig5_ablation_maps", "fig6_text_weight", "fig7_neuron_words", "fig8_attribution_vs_ablation",
         "fig9_neuron_stability"]


@pytest.fixture(scope="module")
def written(tiny_model, tmp_path_factory):
    """Every figure written by save_figure, with what the static renderer drew (its spec, read
    from the matplotlib artists before the figure is closed)."""
    out = tmp_path_factory.mktemp("figs")
    static = {}
    draw = export.to_matplotlib
    mp = pytest.MonkeyPatch()

    def recording(fig, *a, **k):
        mfig = draw(fig, *a, **k)
        static[current[0]] = export.static_spec(mfig)
        return mfig

    mp.setattr(export, "to_matplotlib", recording)
    current = [None]
    try:
        for name, fig in cached_study_figures(tiny_model, tmp_path_factory).items():
            current[0] = name
            export.save_figure(fig, out / name)
    finally:
        mp.undo()
    return out, static


def names_and_colors(spec):
    return sorted((str(n), c) for _, n, c in spec["traces"])


@pytest.mark.parametrize("name", STUDY + ["explorer_ablation", "hot_top_left"])
def test_html_and_static_agree(written, name):
    out, static = written
    html = plotly_spec(html_figure(out / f"{name}.html"))
    png = static[name]
    # the same colour for each legend entry, and one legend entry per method / group
    assert html["legend"] == png["legend"]
    assert len({n for n, _ in html["legend"]}) == len(html["legend"])
    # every trace (every panel) has its group's colour, in both formats
    assert names_and_colors(html) == names_and_colors(png)
    for spec in (html, png):
        colors = {}
        for _, n, c in spec["traces"]:
            assert colors.setdefault(n, c) == c, f"{name}: {n} drawn in {colors[n]} and {c}"
    # colour scales: the same named scale, direction and range; row 0 at the top
    keys = ("colorscale", "low", "high", "row0", "square")
    assert [{k: h[k] for k in keys} for h in html["heatmaps"]] == [{k: h[k] for k in keys} for h in png["heatmaps"]]
    for h, p in zip(html["heatmaps"], png["heatmaps"]):
        assert h["row0"] == "top"
        assert (h["zmin"], h["zmax"]) == pytest.approx((p["zmin"], p["zmax"]))
    assert [i["row0"] for i in html["images"]] == [i["row0"] for i in png["images"]] == ["top"] * len(html["images"])


def test_methods_have_one_colour_everywhere(written):
    out, _ = written
    table = method_colors()
    fig1 = plotly_spec(html_figure(out / "fig1_selected_vs_random.html"))
    for _, method, color in fig1["traces"]:
        assert color == (table.get(method) or method_color(method, set(table.values())))
    assert len(fig1["legend"]) == len({m for _, m, _ in fig1["traces"]})  # one entry per method, 3 panels
    assert method_color("a_method_not_in_the_table") == method_color("a_method_not_in_the_table")
    # the sweeps' conditions are LAKE and its random control: their colours in fig1
    for name in ("fig2_metrics_vs_k", "fig6_text_weight"):
        legend = dict(plotly_spec(html_figure(out / f"{name}.html"))["legend"])
        assert legend == {"selected": table["lake"], "random": table["lake_random"]}


def test_scales_read_the_same_way(written):
    out, static = written
    words = plotly_spec(html_figure(out / "fig7_neuron_words.html"))["heatmaps"][0]
    assert words["colorscale"] == static["fig7_neuron_words"]["heatmaps"][0]["colorscale"] == "rdbu_r"  # red = high
    assert words["zmin"] == pytest.approx(-words["zmax"])  # white = 0
    fig = html_figure(out / "fig7_neuron_words.html")
    assert fig.layout.yaxis.autorange == "reversed"  # the first neuron's row on top


def _hot_cold_centroids(pixels: np.ndarray, hot: str, cold: str):
    rgb = pixels[..., :3].astype(float)

    def near(color):
        c = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], float)
        return np.linalg.norm(rgb - c, axis=-1) < 40

    h, c = np.argwhere(near(hot)), np.argwhere(near(cold))
    assert len(h) > 50 and len(c) > 50
    return h.mean(0), c.min(0), c.max(0)


def test_a_map_hot_top_left_is_hot_top_left_everywhere(written):
    out, _ = written
    pixels = np.asarray(Image.open(out / "hot_top_left.png").convert("RGB"))
    hot, lo, hi = _hot_cold_centroids(pixels, "#fde725", "#440154")  # viridis high / low
    rel = (hot - lo) / (hi - lo)
    assert rel[0] < 0.4 and rel[1] < 0.4, rel  # (row, column) in the upper-left part of the map
    fig = html_figure(out / "hot_top_left.html")
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), HOT_TOP_LEFT)  # z[0] is row 0 ...
    assert fig.layout.yaxis.autorange == "reversed"  # ... and plotly draws it at the top
    assert fig.layout.yaxis.scaleanchor == "x"  # square pixels
    # the explorer's ablation maps: not flipped, row 0 on top with ticks counted from the top, square
    ex = html_figure(out / "explorer_ablation.html")
    for trace in ex.data:
        axis = ex.layout["yaxis" + (trace.yaxis or "y")[1:]]
        assert axis.autorange == "reversed" and axis.scaleanchor is not None


def test_html_is_offline_and_light(written):
    out, _ = written
    js = out / "plotly.min.js"
    assert js.is_file() and js.stat().st_size > 1_000_000
    for html in out.glob("*.html"):
        text = html.read_text()
        assert not re.search(r"<script[^>]+src=\"https?:", text), html.name
        assert "cdn.plot.ly" not in text and "cdn.jsdelivr" not in text, html.name
        assert re.search(r'<script[^>]* src="plotly.min.js"', text), html.name
        assert html.stat().st_size < 2_000_000, html.name


def test_large_images_are_downsampled(tmp_path):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    yy, xx = np.mgrid[:900, :1200]
    photo = np.stack([(xx / 5) % 256, (yy / 4) % 256, ((xx + yy) / 8) % 256], -1).astype(np.uint8)
    photo = (photo.astype(int) + np.random.default_rng(0).integers(-8, 8, photo.shape)).clip(0, 255).astype(np.uint8)
    fig = make_subplots(4, 4)
    for k in range(16):
        fig.add_trace(go.Image(z=photo), k // 4 + 1, k % 4 + 1)
    export.save_figure(fig, tmp_path / "big", formats=("html", "png"))
    assert (tmp_path / "big.html").stat().st_size < 2_000_000  # 16 raw 1200 x 900 images are 52 MB
    read = html_figure(tmp_path / "big.html")
    from lake_interp.figure_spec import image_array

    pic = image_array(read.data[0])
    assert max(pic.shape[:2]) <= 256 and read.data[0].dx == pytest.approx(1200 / pic.shape[1])
    inline = export.save_figure(fig, tmp_path / "inline", formats=("html",), plotlyjs="inline")[0]
    assert "cdn.plot.ly/plotly" not in inline.read_text()[:2000] and inline.stat().st_size > 3_000_000


def test_no_progress_flags():
    from lake_interp.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["figures", "--config", "c.json", "--no-progress"]).no_progress
    assert parser.parse_args(["demo", "--no-progress"]).no_progress
    assert not parser.parse_args(["demo"]).no_progress
