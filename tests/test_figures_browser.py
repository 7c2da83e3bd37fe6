"""Every HTML figure opens in a real browser without network and draws something: headless
Chromium (Debian's `chromium`; .ci/run installs it) takes a screenshot of each file. A blank page
(plotly.js missing, a script error) is white; a drawn figure has many non-white pixels and many
colours. The map that is hot in its top-left corner is drawn hot top-left."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from lake_interp.export import save_figure
from tests.figure_cases import cached_study_figures

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")
                if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium / chrome on PATH (Debian: apt-get install -y "
                                                        "chromium; .ci/run does this)")


def screenshot(html, out, profile) -> np.ndarray:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network: any fetch fails
           f"--user-data-dir={profile}", f"--screenshot={out}", "--window-size=1200,900",
           "--virtual-time-budget=5000", html.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return np.asarray(Image.open(out).convert("RGB"))


@pytest.fixture(scope="module")
def html_figures(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("browserfigs")
    figs = cached_study_figures(tiny_model, tmp_path_factory)
    return {name: save_figure(fig, out / name, formats=("html",))[0] for name, fig in figs.items()}


def test_every_html_figure_draws_offline(html_figures, tmp_path):
    for name, html in html_figures.items():
        shot = screenshot(html, tmp_path / f"{name}.png", tmp_path / "profile")
        ink = (shot < 235).any(-1)
        colours = len(np.unique(shot.reshape(-1, 3)[::7], axis=0))
        assert ink.mean() > 0.03 and colours > 20, f"{name}: blank page ({ink.mean():.3f} ink, {colours} colours)"
        if name == "hot_top_left":  # viridis: yellow high, dark purple low
            hot = np.argwhere(np.linalg.norm(shot - [253, 231, 37], axis=-1) < 40)
            cold = np.argwhere(np.linalg.norm(shot - [68, 1, 84], axis=-1) < 40)
            lo, hi = cold.min(0), cold.max(0)
            rel = (hot.mean(0) - lo) / (hi - lo)
            assert rel[0] < 0.4 and rel[1] < 0.4, rel
