"""A neuron explorer for Jupyter: pick a category, a layer and a neuron (or step through them), see its top patches, heatmap, ablation
effect and words. With ipywidgets and a widget front end it is interactive; elsewhere (`static=True`,
no ipywidgets, plain Python) it shows, or returns, the same figures for one neuron."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from lake_interp.figure_spec import resolve
from lake_interp.interp.ablation import ablate
from lake_interp.interp.figures import heatmap_figure, top_patches_figure, words_figure
from lake_interp.interp.heatmap import neuron_heatmap
from lake_interp.interp.top_patches import TopPatches, top_activating_patches
from lake_interp.interp.words import VOCABULARY, neuron_words
from lake_interp.model.hook_sites import hook_label


@dataclass
class _Category:
    """What the explorer holds for one category; top patches and words computed on first use."""

    lake: Any
    test: Any
    support: Any
    neurons: list[tuple[str, int]]
    top: Optional[TopPatches] = None
    words: Any = None


class NeuronExplorer:
    """lake: a fitted detector (a Lake, or any detector of the protocol with `neurons` given);
    test: the images to explore (dataset or list of Samples/images); support: the normal images it
    was fitted on (it is refitted under ablation: `lake_interp.evaluation.refit`).
    Several categories: `NeuronExplorer(categories={"bottle": (lake, test, support), ...})`."""

    def __init__(self, lake=None, test: Any = None, support: Any = None, neurons=None, n_top: int = 9,
                 vocabulary: Sequence[str] = VOCABULARY, categories: Optional[dict] = None):
        if (lake is None) == (categories is None):
            raise ValueError("NeuronExplorer takes a lake (with test and support) or categories={name: (lake, test, support)}")
        if categories is None:
            categories = {getattr(lake, "class_name", "object"): (lake, test, support)}
        self._categories = {}
        for name, (lk, ts, sp) in categories.items():
            chosen = list(neurons if neurons is not None else (getattr(lk, "neurons", None) or []))
            if not chosen:
                raise ValueError(f"NeuronExplorer needs a fitted lake (lake.neurons) or a list of neurons ({name})")
            if ts is None or sp is None:
                raise ValueError(f"NeuronExplorer needs the test images and the support images the lake was fitted on "
                                 f"({name}: {'test' if ts is None else 'support'} is None)")
            self._categories[name] = _Category(lk, ts, sp, chosen)
        self.category = next(iter(self._categories))
        self.n_top, self.vocabulary = n_top, vocabulary

    # --------------------------------------------------------------------------- selection
    @property
    def categories(self) -> list[str]:
        return list(self._categories)

    def select(self, category: str) -> "NeuronExplorer":
        if category not in self._categories:
            raise ValueError(f"unknown category {category!r}; the explorer has {self.categories}")
        self.category = category
        return self

    @property
    def _current(self) -> _Category:
        return self._categories[self.category]

    lake = property(lambda self: self._current.lake)
    test = property(lambda self: self._current.test)
    support = property(lambda self: self._current.support)
    neurons = property(lambda self: self._current.neurons)

    @property
    def hooks(self) -> list[str]:
        return list(dict.fromkeys(h for h, _ in self.neurons))

    def channels(self, hook: str) -> list[int]:
        return [c for h, c in self.neurons if h == hook]

    # --------------------------------------------------------------------------- views
    def top_patches(self) -> TopPatches:
        """Computed once for every neuron of the category (one pass over `test`), then sliced per neuron."""
        cat = self._current
        if cat.top is None:
            cat.top = top_activating_patches(cat.lake.model, cat.test, cat.neurons, n=self.n_top)
        return cat.top

    def ablation_figure(self, hook: str, channel: int, image_index: int) -> go.Figure:
        """One image's map before and after zero-ablating the neuron, as read downstream: nearest
        neighbour on all channels of the final block's residual stream, fitted on the clean support
        and refitted under the ablation (`lake_interp.interp.readout`), never LAKE's own reading of
        the zeroed channel."""
        from plotly.subplots import make_subplots

        from lake_interp.evaluation import refit
        from lake_interp.interp.readout import make_readout

        from lake_interp.interp.ablation import random_like

        image = self.test[image_index]
        reader = make_readout(self.lake, [(hook, channel)], self.support, "downstream")
        clean = reader.detector.score([image])
        with ablate(self.lake.model, [(hook, channel)]):
            ablated = refit(reader.detector, self.support).score([image])
        control = random_like(self.lake.model, [(hook, channel)], seed=0)  # a random channel of the same hook
        with ablate(self.lake.model, control):
            random = refit(reader.detector, self.support).score([image])
        shown = [("clean", clean), (f"{hook_label(hook)}[{channel}] ablated", ablated),
                 (f"random {hook_label(control[0][0])}[{control[0][1]}] ablated", random)]
        fig = make_subplots(1, 3, subplot_titles=[f"{t} (score {float(r.image_scores[0]):.3f})" for t, r in shown])
        vmax = float(max(r.maps.max() for _, r in shown))
        for col, (_, r) in enumerate(shown, start=1):
            fig.add_trace(go.Heatmap(z=r.maps[0].numpy(), zmin=0, zmax=vmax, showscale=col == 3, colorscale="Viridis",
                                     colorbar={"title": "anomaly"}), 1, col)
        fig.update_xaxes(title_text="x (pixel)")
        fig.update_yaxes(title_text="y (pixel, row 0 at the top)", col=1)
        # resolve: row 0 at the top with ticks counted from the top, square pixels, in every format
        direct = " (read directly)" if reader.overlap else ""
        fig.update_layout(title=f"{self.category}: zero-ablating {hook}[{channel}] vs a random channel of the same hook "
                                f"on image {image_index}, read at {', '.join(reader.hooks)} (all channels){direct}")
        return resolve(fig)

    def attribution_figure(self, hook: str, channel: int, image_index: int) -> go.Figure:
        """The neuron's per-pixel attribution to the image's anomaly score (first order: the change
        of the downstream readout's map when it is zeroed; `lake_interp.interp.attribute`), beside
        the image; the title ranks it among the explorer's neurons."""
        from lake_interp.interp.attribution import attribute, attribution_map_figure

        image = self.test[image_index]
        result = attribute(self.lake, [image], target="map", units=list(self._current.neurons),
                           map_units=[(hook, channel)], support=self.support)
        fig = attribution_map_figure(result, (hook, channel), 0, images=[image], model=self.lake.model)
        row = next(r for r in result.top(len(result.units)) if (r["hook"], r["channel"]) == (hook, channel))
        fig.update_layout(title=f"{fig.layout.title.text}<br><sup>rank {row['rank']} of {len(result.units)} "
                                f"explorer neurons by attribution to the score (readout {result.meta['readout']})</sup>")
        return fig

    def figures(self, hook: str, channel: int, image_index: int = 0) -> dict[str, go.Figure]:
        """Every view of one neuron of the current category: top patches, heatmap with the fused map,
        ablation, words, and its attribution over the image (`attribution_figure`)."""
        if (hook, channel) not in self.neurons:
            raise ValueError(f"({hook!r}, {channel}) is not among the explorer's neurons for {self.category!r}")
        cat = self._current
        if cat.words is None:
            cat.words = neuron_words(cat.lake.model, cat.neurons, self.vocabulary, reference=cat.support)
        row = cat.words.neurons.index((hook, channel))
        words = type(cat.words)(cat.words.words, [(hook, channel)], cat.words.similarity[row : row + 1],
                                cat.words.path, cat.words.n_reference)
        image = self.test[image_index]
        figs = {
            "top_patches": top_patches_figure(self.top_patches().subset([(hook, channel)])),
            "heatmap": heatmap_figure(neuron_heatmap(self.lake.model, image, [(hook, channel)], lake=self.lake)),
            "ablation": self.ablation_figure(hook, channel, image_index),
            "words": words_figure(words),
            "attribution": self.attribution_figure(hook, channel, image_index),
        }
        return {name: resolve(fig) for name, fig in figs.items()}  # as save_figure draws them

    # --------------------------------------------------------------------------- display
    def show(self, static: Optional[bool] = None):
        """Interactive controls when ipywidgets and IPython are there (and static is not True);
        otherwise the figures of the current category's first neuron, shown and returned."""
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

        category = widgets.Dropdown(options=self.categories, value=self.category, description="category")
        hook = widgets.Dropdown(options=self.hooks, description="layer")
        channel = widgets.Dropdown(options=self.channels(self.hooks[0]), description="neuron")
        image = widgets.IntSlider(0, 0, len(self.test) - 1, description="image")
        prev, step = widgets.Button(description="< previous"), widgets.Button(description="next >")
        out = widgets.Output()
        updating = [False]  # True while several controls change together: redraw once at the end

        def refresh(*_):
            if updating[0]:
                return
            with out:
                out.clear_output()
                for fig in self.figures(hook.value, channel.value, image.value).values():
                    display(fig)

        def set_controls(neuron=None, category_changed=False):
            updating[0] = True
            try:
                if category_changed:
                    hook.options = self.hooks
                    image.value, image.max = 0, len(self.test) - 1
                h, c = neuron or (hook.value, None)
                hook.value = h
                channel.options = self.channels(h)
                channel.value = c if c is not None else channel.options[0]
            finally:
                updating[0] = False
            refresh()

        def on_category(change):
            self.select(change["new"])
            set_controls(self.neurons[0], category_changed=True)

        def on_step(delta):
            i = self.neurons.index((hook.value, channel.value))
            set_controls(self.neurons[(i + delta) % len(self.neurons)])

        category.observe(on_category, names="value")
        hook.observe(lambda change: None if updating[0] else set_controls((change["new"], None)), names="value")
        for w in (channel, image):
            w.observe(refresh, names="value")
        prev.on_click(lambda _: on_step(-1))
        step.on_click(lambda _: on_step(1))
        box = widgets.VBox([widgets.HBox([category, hook, channel]), widgets.HBox([prev, step, image]), out])
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
