"""`lake-interp figures`: every interpretability figure of a study, from one small JSON config.

Writes, per figure, `<name>.png|svg|pdf` (static, no browser needed), `<name>.html`
(interactive), the numbers behind it (`<name>.csv` or `.json`) and its caption; plus
`study_config.json` and a README.md listing the figures and the command that made them.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lake_interp.benchmark import BenchmarkSpec, check_test_set, class_name_for, run_benchmark
from lake_interp.data import DATASETS, load_dataset, make_synthetic_dataset
from lake_interp.data.io import read_json_object
from lake_interp.data.synthetic import CATEGORIES as SYNTHETIC_CATEGORIES
from lake_interp.export import save_figure
from lake_interp.interp import (
    ablate, neuron_stability, neuron_words, stability_figure, sweep, sweep_figure, top_activating_patches,
    top_patches_figure, words_figure,
)
from lake_interp.detectors.methods import METHODS, check_methods, default_methods
from lake_interp.lake import Lake, LakeConfig
from lake_interp.lake.inputs import resize_map
from lake_interp.lake.neurons import NeuronSet
from lake_interp.model.hook_sites import hook_name
from lake_interp.render import overlay


@dataclass
class StudyConfig:
    """A study: model, data, and the axes of the figures. Plain data, read from JSON."""

    model: str = "ViT-B-16"
    pretrained: Optional[str] = "openai"
    dataset: str = "synthetic"  # mvtec, visa, btad, mvtec_loco, folder, or synthetic (generated)
    root: Optional[str] = None  # dataset root; for synthetic: where to generate (default <out>/data)
    categories: list = field(default_factory=lambda: ["disc", "grid"])
    shots: list = field(default_factory=lambda: [1, 2, 4])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    k_values: list = field(default_factory=lambda: [10, 25, 50, 100, 200])
    text_weights: list = field(default_factory=lambda: [0.0, 0.1, 0.3, 0.5, 0.7, 1.0])
    lake: dict = field(default_factory=dict)  # LakeConfig fields
    methods: list = field(default_factory=default_methods)  # figure 1's methods: names of the method table
    n_top_neurons: int = 6
    n_examples: int = 4
    synthetic: dict = field(default_factory=dict)  # make_synthetic_dataset keyword arguments

    @classmethod
    def from_json(cls, path) -> "StudyConfig":
        d = read_json_object(path)
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"{path}: unknown study fields {sorted(set(d) - known)}; known: {sorted(known)}")
        return cls(**d)


def _caption_suffix(cfg: StudyConfig, model) -> str:
    warn = " RANDOM WEIGHTS: illustrative only, the numbers mean nothing." if model.random_weights else ""
    return (f"Model {cfg.model} (pretrained {model.pretrained}), dataset {cfg.dataset}, categories "
            f"{', '.join(cfg.categories)}, shots {cfg.shots}, seeds {cfg.seeds}.{warn}")


def run_study(model, cfg: StudyConfig, out_dir, command: str = "lake-interp figures", progress: bool = True) -> list[dict]:
    """Make every figure; returns [{name, caption, files}] (also written to README.md). progress:
    a tqdm bar over the figures (and the benchmark's and sweeps' own bars).

    The whole config is checked before anything is written; an `out_dir` holding another study
    (a different study_config.json) is refused."""
    from lake_interp.outputs import output_folder

    out = Path(out_dir)
    check_study(model, cfg)
    with output_folder(out, "lake-interp figures") as output:
        return _run_study(model, cfg, output, command, progress)


FIGURE_NAMES = ("fig1_selected_vs_random", "fig2_metrics_vs_k", "fig3_neuron_depth", "fig4_top_patches",
                "fig5_ablation_maps", "fig6_text_weight", "fig7_neuron_words", "fig8_attribution_vs_ablation",
                "fig9_neuron_stability")


def _run_study(model, cfg: StudyConfig, output, command: str, progress: bool) -> list[dict]:
    out = output.root
    _claim_folder(out, cfg, output, write=False)  # another study: refused first, with what differs
    # study_config.json and plotly.min.js: an identical file is left as it is, any other foreign one refused on writing
    output.claim(["README.md", *(f"{n}.{ext}" for n in FIGURE_NAMES
                                 for ext in ("png", "svg", "pdf", "html", "csv", "json", "caption.txt"))])
    _claim_folder(out, cfg, output)
    dataset, root = cfg.dataset, cfg.root
    if dataset == "synthetic":
        root = root or str(out / "data")
        if not Path(root).is_dir():
            if Path(root).resolve() == (out / "data").resolve():  # generated whole in a temporary folder, then moved
                partial = output.tmp_dir()
                make_synthetic_dataset(partial, categories=cfg.categories, **cfg.synthetic)
                output.install_tree(partial, "data")
            else:
                make_synthetic_dataset(root, categories=cfg.categories, **cfg.synthetic)
        dataset = "mvtec"
    base = LakeConfig.from_dict(cfg.lake)
    suffix = _caption_suffix(cfg, model)
    made = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(FIGURE_NAMES), desc="figures", unit="figure", disable=not progress)
    doing = lambda what: bar.set_postfix_str(what)  # noqa: E731  what the next step computes

    def emit(name: str, fig: go.Figure, caption: str, data, width=8.0, height=4.5):
        fig.update_layout(title={"text": fig.layout.title.text or name})
        files = save_figure(fig, out / name, width=width, height=height, output=output)
        if isinstance(data, list) and data and isinstance(data[0], dict):
            _write_csv(out / f"{name}.csv", data, output)
            files.append(out / f"{name}.csv")
        else:
            output.write_text(f"{name}.json", json.dumps(data, indent=1, default=_jsonable))
            files.append(out / f"{name}.json")
        full = f"{caption} {suffix}"
        output.write_text(f"{name}.caption.txt", full + "\n")
        made.append({"name": name, "caption": full, "files": [f.name for f in files]})
        bar.update(1)

    # 1. selected vs random neurons (and the baselines), over categories, shots, seeds
    spec = BenchmarkSpec(dataset, root, cfg.model, model.pretrained, cfg.categories, cfg.shots, cfg.seeds,
                         methods=cfg.methods, config=cfg.lake)
    doing("fig1: benchmark of every method, shot and seed")
    rows = run_benchmark(model, spec, out / "benchmark", progress=progress)
    emit("fig1_selected_vs_random", _methods_figure(rows, spec), (
        "Selected (variance top-K, lake) vs random neurons (lake_random) and the other methods of the table ("
        + "; ".join(f"{m}: {METHODS[m].computes}" for m in spec.methods if m not in ("lake", "lake_random"))
        + "): mean over categories, error bars = std over seeds."), rows, width=10)

    # shared fit for figures 3, 4, 5, 7: first category, most shots, seed 0
    category, shots = cfg.categories[0], max(cfg.shots)
    train = load_dataset(dataset, root, category, "train")
    test = load_dataset(dataset, root, category, "test")
    support = train.few_shot(shots, cfg.seeds[0])
    lake = Lake(model, base, class_name_for(category)).fit(support)

    # 2. metrics vs K with the random control; 6. text weight sweep
    for name, param, values, text in (
        ("fig2_metrics_vs_k", "k_neurons", cfg.k_values, "Image and pixel AUROC vs K neurons per hook"),
        ("fig6_text_weight", "text_weight", cfg.text_weights, "Image and pixel AUROC vs the text weight"),
    ):
        doing(f"{name[:4]}: sweep of {param}")
        results = [sweep(model, load_dataset(dataset, root, c, "train").few_shot(shots, cfg.seeds[0]),
                         load_dataset(dataset, root, c, "test"), param, values, base, cfg.seeds,
                         class_name=class_name_for(c), progress=progress) for c in cfg.categories]
        merged = type(results[0])(param, results[0].values, [r for res in results for r in res.rows])
        emit(name, _two_metric_sweep(merged), f"{text}, selected neurons and the random control "
             f"({shots}-shot; mean over categories and control seeds, error bars = std).", merged.rows)

    # 3. where the neurons sit: global top-K over every block and both sites
    doing("fig3: criterion scores of every block and site")
    emit("fig3_neuron_depth", *_depth_figure(model, base, support, category))

    # 4. top-activating patches of the most sensitive neurons
    doing("fig4: top-activating patches")
    top = _most_sensitive(lake.neurons, cfg.n_top_neurons)
    patches = top_activating_patches(model, test, top, n=8)
    emit("fig4_top_patches", top_patches_figure(patches), (
        f"Top-activating test patches of the {len(top)} most sensitive selected neurons ({category}); "
        "value = activation."), [{**r, "image": Path(os.path.relpath(test.paths[r["image_index"]], root)).as_posix()} for r in patches.rows()],
        width=10, height=1.4 * len(top) + 1)

    # 5. maps before / after ablating the selected neurons
    doing("fig5: maps before and after ablation")
    fig5, data5, reader5, effect5 = _ablation_maps(lake, support, test, cfg.n_examples)
    d, rs = effect5.delta, effect5.random_summary

    def _pp(metric):  # selected delta vs the random draws' mean +- std, percentage points
        return (f"{metric} {100 * d[metric]:+.1f} pp vs random {100 * rs[metric]['mean']:+.1f} "
                f"± {100 * rs[metric]['std']:.1f} pp")

    emit("fig5_ablation_maps", fig5, (
        f"Anomalous test images ({category}), their masks, and the anomaly map of a downstream readout (nearest "
        f"neighbour on all channels of the final block's residual stream, {reader5.hooks[0]}, fitted on the clean "
        f"support, bank rebuilt under the ablation): clean, after zero-ablating LAKE's {len(lake.neurons)} selected "
        f"neurons, and after zero-ablating as many random channels of the same hooks (random draw 0); "
        f"{len(reader5.overlap)} selected neurons are channels of that stream itself and are read directly. Over the "
        f"test split ({effect5.meta['n_random']} random draws; each draw's delta in the JSON): {_pp('image_auroc')}; "
        f"{_pp('pixel_auroc')}. LAKE's own map is not used: it would read its own zeroed inputs."), data5,
        width=10, height=2 * cfg.n_examples + 1)

    # 7. neuron to words
    doing("fig7: neuron words")
    words = neuron_words(model, top, reference=support)
    emit("fig7_neuron_words", words_figure(words), (
        "Neuron to language: cosine between each top neuron's written direction, carried through the blocks after "
        f"its layer (forward-mode Jacobian, mean over the {len(support)} support images' patches), then ln_post "
        "(linearised) and proj, and the text embeddings of defect and material words."), words.rows(), width=10)

    # 8. attribution of the anomaly score to every unit vs its measured ablation
    doing("fig8: attribution vs measured ablation")
    fig8, data8 = _attribution_vs_ablation(lake, support, test, cfg.n_examples)
    emit("fig8_attribution_vs_ablation", fig8, (
        f"Attribution (activation x gradient, first order) of the anomaly score of {data8['n_images']} anomalous test "
        f"images ({category}) to every residual channel and MLP neuron of the vision tower ({data8['n_units']} units, "
        f"one forward and one backward pass), against the measured effect of zero-ablating each of the top "
        f"{data8['n']} units alone; both read by the same downstream readout ({data8['readout']}: nearest neighbour "
        f"on all channels of the final block's residual stream, fitted on the support). Spearman "
        f"{data8['spearman']:.3f}."), data8["rows"], width=7)

    # 9. stability of the selected neurons over support draws
    doing("fig9: neuron-set stability")
    stability = neuron_stability(model, train, cfg.shots, cfg.seeds, base.criterion if base.criterion != "all"
                                 else "variance", base.k_neurons, base, class_name_for(category))
    emit("fig9_neuron_stability", stability_figure(stability), (
        f"Stability of the selected neurons ({category}, criterion {stability.meta.get('criterion', base.criterion)}, "
        f"K={base.k_neurons} per hook) over the support draws (shots {list(cfg.shots)} x seeds {list(cfg.seeds)}): "
        "Jaccard between every pair of draws (mean over hooks), and per hook the mean Jaccard, overlap and "
        "rank-biased overlap, with the overlap K/d two random sets would have."), stability.to_dict(), width=10)

    bar.close()
    _write_readme(out, made, command, output)
    return made


def check_study(model, cfg: StudyConfig) -> None:
    """Every field of `cfg` that can be checked without doing the work; errors name the field."""

    def fail(name: str, problem: str):
        raise ValueError(f"study config field {name!r}: {problem}")

    if cfg.dataset != "synthetic" and cfg.dataset not in DATASETS:
        fail("dataset", f"unknown dataset {cfg.dataset!r}; expected synthetic or one of {sorted(DATASETS)}")
    if cfg.dataset != "synthetic" and not cfg.root:
        fail("root", f"dataset {cfg.dataset!r} needs root, the folder holding its categories (only 'synthetic' "
                     "generates its data)")
    for name in ("categories", "shots", "seeds", "k_values", "text_weights"):
        values = getattr(cfg, name)
        if not isinstance(values, (list, tuple)) or not values:
            fail(name, f"expected a non-empty list, got {values!r}")
        if len(set(values)) != len(values):
            fail(name, f"lists a value twice: {list(values)}")
    if not isinstance(cfg.methods, (list, tuple)) or not cfg.methods:
        fail("methods", f"expected a non-empty list of method names, got {cfg.methods!r}")
    try:
        check_methods(cfg.methods, "methods")
    except (ValueError, NotImplementedError) as e:
        fail("methods", str(e))
    for name in ("lake", "synthetic"):
        if not isinstance(getattr(cfg, name), dict):
            fail(name, f"expected a JSON object of fields, got {getattr(cfg, name)!r}")
    for name in ("shots", "seeds", "k_values", "n_top_neurons", "n_examples"):
        values = getattr(cfg, name)
        for v in values if isinstance(values, (list, tuple)) else [values]:
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seeds" else 1):
                fail(name, f"expected {'integers >= 0' if name == 'seeds' else 'positive integers'}, got {v!r}")
    with warnings.catch_warnings():  # the runs themselves warn where it matters
        warnings.simplefilter("ignore")
        for name, param, values in (("lake", None, [None]), ("k_values", "k_neurons", cfg.k_values),
                                    ("text_weights", "text_weight", cfg.text_weights)):
            for v in values:
                try:
                    base = LakeConfig.from_dict(cfg.lake if param is None else {**cfg.lake, param: v})
                    for method in cfg.methods:
                        if METHODS[method].lake_family:
                            Lake(model, METHODS[method].config(base))  # K wider than a layer, ...
                except (TypeError, ValueError) as e:
                    fail(name, f"{v!r}: {e}" if param else str(e))
    if cfg.dataset == "synthetic" and (cfg.root is None or not Path(cfg.root).is_dir()):  # generated here
        params = inspect.signature(make_synthetic_dataset).parameters
        unknown = sorted(set(cfg.synthetic) - (set(params) - {"out_dir", "categories"}))
        if unknown:
            fail("synthetic", f"unknown make_synthetic_dataset arguments {unknown}")
        unknown = [c for c in cfg.categories if c not in SYNTHETIC_CATEGORIES]
        if unknown:
            fail("categories", f"unknown synthetic categories {unknown}; expected some of {list(SYNTHETIC_CATEGORIES)}")
        n_train = cfg.synthetic.get("n_train", params["n_train"].default)
        if max(cfg.shots) > n_train:
            fail("shots", f"{max(cfg.shots)} shots need as many normal training images; the synthetic data "
                          f"has n_train={n_train}")
        return
    dataset = "mvtec" if cfg.dataset == "synthetic" else cfg.dataset  # synthetic data already generated: read it
    for category in cfg.categories:  # missing categories, one-class test sets, too few normal images
        check_test_set(load_dataset(dataset, cfg.root, category, "test"))
        load_dataset(dataset, cfg.root, category, "train").few_shot_indices(max(cfg.shots), cfg.seeds[0])


def _claim_folder(out: Path, cfg: StudyConfig, output=None, write: bool = True) -> None:
    """Write study_config.json, unless `out` already holds another study's."""
    record, new = out / "study_config.json", json.loads(json.dumps(asdict(cfg)))
    if record.is_file():
        try:
            old = json.loads(record.read_text())
        except ValueError:
            old = None
        if old != new:
            old = old if isinstance(old, dict) else {}
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ValueError(f"{out} holds the figures of a different study (its study_config.json differs in "
                             f"{changed}); use another --out, or delete {out} to start over")
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    if output is None:
        record.write_text(json.dumps(new, indent=1))
    else:
        output.write_text("study_config.json", json.dumps(new, indent=1))


def _jsonable(x):
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _write_csv(path: Path, rows: list[dict], output=None) -> None:
    import io

    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if output is None:
        path.write_text(text.getvalue(), newline="")
    else:
        output.write_text(path.relative_to(output.root).as_posix(), text.getvalue())


def _methods_figure(rows: list[dict], spec: BenchmarkSpec) -> go.Figure:
    metrics = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "pixel AUPRO")]
    fig = make_subplots(1, len(metrics), subplot_titles=[t for _, t in metrics])
    for col, (metric, _) in enumerate(metrics, start=1):
        for method in spec.methods:
            means, stds = [], []
            for shots in spec.shots:
                per_seed = [np.nanmean([r[metric] for r in rows if r["method"] == method and r["shots"] == shots
                                        and r["seed"] == s]) for s in spec.seeds]
                means.append(float(np.nanmean(per_seed)))
                stds.append(float(np.nanstd(per_seed)))
            fig.add_bar(x=[f"{s}-shot" for s in spec.shots], y=means, error_y={"type": "data", "array": stds},
                        name=method, showlegend=col == 1, row=1, col=col)
        fig.update_yaxes(range=[0, 1.05], title_text="metric (0-1)" if col == 1 else None, row=1, col=col)
    fig.update_layout(barmode="group", title="Selected vs random neurons and baselines")
    return fig


def _two_metric_sweep(result) -> go.Figure:
    fig = make_subplots(1, 2, subplot_titles=["image AUROC", "pixel AUROC"])
    for col, metric in enumerate(("image_auroc", "pixel_auroc"), start=1):
        for trace in sweep_figure(result, metric).data:
            trace.showlegend = col == 1
            fig.add_trace(trace, 1, col)
        fig.update_xaxes(title_text=result.param, row=1, col=col)
    fig.update_layout(title=f"Detector metrics vs {result.param}")
    return fig


def _depth_figure(model, base: LakeConfig, support, category: str):
    n_layers = model.cfg.vision.n_layers
    sites = ("hook_resid_post", "mlp.hook_post")
    with warnings.catch_warnings():  # k_neurons=1 only builds the probe; its scores rank every neuron
        warnings.filterwarnings("ignore", message="k_neurons=1 with cosine distance")
        probe = Lake(model, base.replace(sites=sites, layers=tuple(range(n_layers)), k_neurons=1, text_weight=0.0,
                                         criterion=base.criterion if base.criterion != "all" else "variance"))
    probe.fit(support)
    scores = probe.neurons.all_scores  # hook -> [d]
    normalised = {h: s / s.median().clamp_min(1e-12) for h, s in scores.items()}
    flat = sorted(((float(v), h) for h, s in normalised.items() for v in s), reverse=True)
    k = base.k_neurons * len(base.layers)
    counts = {h: 0 for h in scores}
    for _, h in flat[:k]:
        counts[h] += 1
    fig = go.Figure()
    for site in sites:
        fig.add_bar(name=site, x=[str(layer) for layer in range(n_layers)],
                    y=[counts[hook_name("visual", layer, site)] for layer in range(n_layers)])
    fig.update_layout(barmode="group", title="Where the most sensitive neurons sit", xaxis_title="block",
                      yaxis_title="neurons in the global top-K")
    caption = (f"Counts per block and site of the global top {k} neurons by criterion score ({base.criterion if base.criterion != 'all' else 'variance'}), "
               f"each score divided by the median score of its hook so that layers of different scale compare "
               f"({category}, {len(support)}-shot support).")
    data = {"k": k, "counts": counts, "median_score": {h: float(s.median()) for h, s in scores.items()}}
    return fig, caption, data


def _most_sensitive(neurons: NeuronSet, n: int) -> list[tuple[str, int]]:
    """Round robin over hooks, best first within each hook."""
    per_hook = [list(zip([h] * len(i), i.tolist())) for h, i in neurons.indices.items()]
    out = []
    for rank in range(max(len(p) for p in per_hook)):
        out += [p[rank] for p in per_hook if rank < len(p)]
    return out[:n]


def _attribution_vs_ablation(lake, support, test, n_examples: int, n: int = 30):
    """Attribution of the score of the first anomalous test images to every unit (read downstream),
    and the measured single-unit ablations of the top n with the same readout."""
    from lake_interp.interp import attribute, compare_with_ablation, comparison_figure

    anomalous = [test[i] for i, label in enumerate(test.labels) if label == 1][:max(1, n_examples)]
    result = attribute(lake, anomalous, target="score", support=support)
    comparison = compare_with_ablation(lake, anomalous, result, n=min(n, len(result.units)), support=support)
    data = {"rows": comparison["rows"], "spearman": comparison["spearman"], "n": comparison["n"],
            "readout": comparison["readout"], "n_images": len(anomalous), "n_units": len(result.units)}
    return comparison_figure(comparison), data


def _ablation_maps(lake, support, test, n_examples: int, n_random: int = 5):
    """The readout (`lake_interp.interp.readout`, "downstream": all channels of the final block's
    residual stream, fitted on the clean support, refitted under the ablation) before and after
    zero-ablating LAKE's selected neurons, and after zero-ablating as many random channels of the
    same hooks (the first random draw of `ablation_effect`, whose metric deltas over the whole test
    split, for the selected set and each of `n_random` draws, go with the figure's data): not LAKE
    itself, which would read its own zeroed inputs."""
    from lake_interp.evaluation import refit
    from lake_interp.interp.ablation import ablation_effect

    with warnings.catch_warnings():  # the final block's selected channels are read directly: said in the caption
        warnings.filterwarnings("ignore", message="the readout")
        effect = ablation_effect(lake, list(lake.neurons), support, test, test.labels, [s.mask for s in test],
                                 n_random=n_random, progress=False)
    reader = effect.reader  # fitted once, on the clean support
    anomalous = [i for i, label in enumerate(test.labels) if label == 1][:n_examples]
    samples = [test[i] for i in anomalous]
    clean = reader.detector.score(samples)
    with ablate(lake.model, lake.neurons):
        ablated = refit(reader.detector, support).score(samples)
    control = effect.random_units[0] if effect.random_units else None
    if control is not None:
        with ablate(lake.model, control):
            random = refit(reader.detector, support).score(samples)
    shown = [clean, ablated] + ([random] if control is not None else [])
    vmax = float(max(r.maps.max() for r in shown))
    vmin = float(min(r.maps.min() for r in shown))
    titles = []
    for i, s in enumerate(samples):
        titles += [f"{s.defect} {s.path.stem}", "mask", f"clean {float(clean.image_scores[i]):.3f}",
                   f"selected ablated {float(ablated.image_scores[i]):.3f}"]
        if control is not None:
            titles.append(f"random ablated {float(random.image_scores[i]):.3f}")
    cols = 4 + (control is not None)
    fig = make_subplots(len(samples), cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.06)
    images = []
    for i, s in enumerate(samples):
        w, h = s.image.size
        mask = np.zeros((h, w), bool) if s.mask is None else s.mask
        panels = [np.asarray(s.image), np.stack([mask * 255] * 3, -1).astype(np.uint8)]
        for r in shown:
            panels.append(np.asarray(overlay(s.image, resize_map(r.maps[i], h, w), vmin=vmin, vmax=vmax)))
        for j, panel in enumerate(panels, start=1):
            fig.add_trace(go.Image(z=panel), i + 1, j)
        images.append({"path": str(s.path), "defect": s.defect, "clean_score": float(clean.image_scores[i]),
                       "ablated_score": float(ablated.image_scores[i]),
                       "random_ablated_score": float(random.image_scores[i]) if control is not None else None})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title="Downstream readout maps: clean, selected neurons ablated, as many random neurons ablated")
    data = {"images": images, "meta": effect.meta, "delta": effect.delta, "random_delta": effect.random_delta,
            "random_summary": effect.random_summary, "random_units": [[list(p) for p in u] for u in effect.random_units],
            "clean": effect.clean, "ablated": effect.ablated}
    return fig, data, reader, effect


def _write_readme(out: Path, made: list[dict], command: str, output=None) -> None:
    lines = ["# Figures", "", f"Made by `{command}` (config: `study_config.json`). Each figure comes as PNG, SVG and "
             "PDF (static, drawn with matplotlib: no browser needed) and HTML (interactive plotly; it loads plotly.js "
             "from `plotly.min.js` in this folder, so it works offline), both drawn from one spec (the same colour per "
             "method in every panel and format, one legend entry per method, the same colour scale, row 0 of every "
             "map and matrix at the top), the numbers behind it (CSV/JSON) and its caption (`.caption.txt`).", ""]
    for m in sorted(made, key=lambda m: m["name"]):
        lines += [f"## {m['name']}", "", f"![{m['name']}]({m['name']}.png)", "", m["caption"], "",
                  "Files: " + ", ".join(f"`{f}`" for f in m["files"]), ""]
    if output is None:
        (out / "README.md").write_text("\n".join(lines))
    else:
        output.write_text("README.md", "\n".join(lines))
