"""A neuron explorer for Jupyter: pick a layer and a neuron, see its top patches, heatmap, ablation
effect and words. With ipywidgets and a widget front end it is interactive; elsewhere (`static=True`,
no ipywidgets, plain Python) it shows, or returns, the same figures for one neuron."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from lake_interp.interp.ablation import ablate
from lake_interp.interp.figures import heatmap_figure, top_patches_figure, words_figure
from lake_interp.interp.heatmap import neuron_heatmap
from lake_interp.interp.top_patches import TopPatches, top_activating_patches
from lake_interp.interp.words import VOCABULARY, neuron_words


class NeuronExplorer:
    """lake: a fitted Lake; test: the images to explore (dataset or list of Samples/images);
    support: the normal images the lake was fitted on (its bank is rebuilt under ablation)."""

    def __init__(self, lake, test: Any, support: Any, neurons=None, n_top: int = 9,
                 vocabulary: Sequence[str] = VOCABULARY):
        self.lake, self.test, self.support = lake, test, support
        self.neurons = list(neurons if neurons is not None else lake.neurons)
        if not self.neurons:
            raise ValueError("NeuronExplorer needs a fitted lake (lake.neurons) or a list of neurons")
        self.n_top, self.vocabulary = n_top, vocabulary
        self._top: Optional[TopPatches] = None
        self._words = None

    @property
    def hooks(self) -> list[str]:
        return list(dict.fromkeys(h for h, _ in self.neurons))

    def channels(self, hook: str) -> list[int]:
        return [c for h, c in self.neurons if h == hook]

    # --------------------------------------------------------------------------- views
    def top_patches(self) -> TopPatches:
        """Computed once for every neuron (one pass over `test`), then sliced per neuron."""
        if self._top is None:
            self._top = top_activating_patches(self.lake.model, self.test, self.neurons, n=self.n_top)
        return self._top

    def ablation_figure(self, hook: str, channel: int, image_index: int) -> go.Figure:
        """Fused map of one image before and after zero-ablating the neuron (bank rebuilt alike)."""
        from plotly.subplots import make_subplots

        image = self.test[image_index]
        keep = self.lake.neurons
        clean = self.lake.score([image])
        with ablate(self.lake.model, [(hook, channel)]):
            self.lake.fit(self.support, neurons=keep)
            ablated = self.lake.score([image])
        self.lake.fit(self.support, neurons=keep)
        fig = make_subplots(1, 2, subplot_titles=[f"clean (score {float(clean.image_scores[0]):.3f})",
                                                  f"ablated (score {float(ablated.image_scores[0]):.3f})"])
        vmax = float(max(clean.maps.max(), ablated.maps.max()))
        for col, m in ((1, clean.maps[0]), (2, ablated.maps[0])):
            fig.add_trace(go.Heatmap(z=np.flipud(m.numpy()), zmin=0, zmax=vmax, showscale=col == 2,
                                     colorbar={"title": "anomaly"}), 1, col)
        fig.update_layout(title=f"Zero-ablating {hook}[{channel}] on image {image_index}")
        return fig

    def figures(self, hook: str, channel: int, image_index: int = 0) -> dict[str, go.Figure]:
        """Every view of one neuron: top patches, heatmap with the fused map, ablation, words."""
        if (hook, channel) not in self.neurons:
            raise ValueError(f"({hook!r}, {channel}) is not among the explorer's neurons")
        if self._words is None:
            self._words = neuron_words(self.lake.model, self.neurons, self.vocabulary)
        row = self._words.neurons.index((hook, channel))
        words = type(self._words)(self._words.words, [(hook, channel)], self._words.similarity[row : row + 1])
        image = self.test[image_index]
        return {
            "top_patches": top_patches_figure(self.top_patches().subset([(hook, channel)])),
            "heatmap": heatmap_figure(neuron_heatmap(self.lake.model, image, [(hook, channel)], lake=self.lake)),
            "ablation": self.ablation_figure(hook, channel, image_index),
            "words": words_figure(words),
        }

    # --------------------------------------------------------------------------- display
    def show(self, static: Optional[bool] = None):
        """Interactive controls when ipywidgets and IPython are there (and static is not True);
        otherwise the figures of the first neuron, shown and returned."""
        widgets = None if static else _widgets()
        if widgets is None:
            hook, channel = self.neurons[0]
            figs = self.figures(hook, channel, 0)
            for fig in figs.values():
                _display(fig)
            return figs
        return self._widget(widgets)

    def _widget(self, widgets):
        from IPython.display import display

        hook = widgets.Dropdown(options=self.hooks, description="layer")
        channel = widgets.Dropdown(options=self.channels(self.hooks[0]), description="neuron")
        image = widgets.IntSlider(0, 0, len(self.test) - 1, description="image")
        out = widgets.Output()

        def refresh(*_):
            with out:
                out.clear_output()
                for fig in self.figures(hook.value, channel.value, image.value).values():
                    display(fig)

        def on_hook(change):
            channel.options = self.channels(change["new"])

        hook.observe(on_hook, names="value")
        for w in (channel, image):
            w.observe(refresh, names="value")
        box = widgets.VBox([widgets.HBox([hook, channel, image]), out])
        display(box)
        refresh()
        return box


def _widgets():
    try:
        import ipywidgets
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return ipywidgets if shell is not None and "IPKernelApp" in shell.config else None


def _display(fig: go.Figure) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(fig)
    except ImportError:
        pass
