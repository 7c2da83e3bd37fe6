"""`lake-interp demo`: synthetic defects, LAKE fitted on a few normal images, a short report."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lake_interp.benchmark import class_name_for
from lake_interp.data import MVTecAD, make_synthetic_dataset
from lake_interp.evaluation import evaluate
from lake_interp.lake import Lake, LakeConfig
from lake_interp.lake.inputs import resize_map
from lake_interp.model.hook_sites import parse_hook_name
from lake_interp.render import overlay, panel

WARNING = ("**RANDOM WEIGHTS: this model was loaded with `--pretrained none`. Every score and map in this "
           "report is meaningless; the run only shows that the pipeline works.**")


def run_demo(model, out_dir, categories: Sequence[str] = ("disc", "grid"), shots: int = 2, seed: int = 0,
             k_neurons: Optional[int] = None, random_weights: bool = False, progress: bool = True) -> Path:
    """Writes `<out>/data` (synthetic MVTec-AD layout), `<out>/images/*.png`, `<out>/report.md|html`;
    progress: a tqdm bar over the categories (fit, score, maps)."""
    from lake_interp.outputs import output_folder, safe_name

    for category in categories:
        safe_name(category, "category")
    with output_folder(out_dir, "lake-interp demo") as output:
        output.claim(["report.md", "report.html"])
        return _run_demo(model, output, list(categories), shots, seed, k_neurons, random_weights, progress)


def check_demo_folder(output, categories: Sequence[str], shots: int, seed: int) -> None:
    """The demo's checks that need no model (`lake-interp demo` runs them before loading it): the
    category names, shots and seed, the report files, and that `<out>/data` is the demo's own."""
    from lake_interp.data.synthetic import CATEGORIES
    from lake_interp.outputs import safe_name

    for category in categories:
        safe_name(category, "category")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"--categories: unknown synthetic categories {unknown}; expected some of {list(CATEGORIES)}")
    import inspect

    n_train = inspect.signature(make_synthetic_dataset).parameters["n_train"].default
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= n_train:
        raise ValueError(f"--shots {shots!r}: expected a number of support images from 1 to {n_train} (the normal "
                         "training images the demo generates per category)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed {seed!r}: expected an integer >= 0")
    output.claim(["report.md", "report.html"])
    root = output.root / "data"
    if root.exists():
        try:
            json.loads((root / "demo_data.json").read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{root} exists and was not written by this demo (no readable demo_data.json): "
                             f"use another --out, or delete {root} yourself") from e


def _run_demo(model, output, categories, shots, seed, k_neurons, random_weights, progress) -> Path:
    out = output.root
    root = out / "data"
    synthetic_data(root, list(categories), seed, output=output)
    config = LakeConfig.for_model(model, k_neurons=k_neurons)  # the default K rule, said where it is not 100
    output.mkdir("images")
    rows, figures = [], []
    from tqdm.auto import tqdm

    for category in tqdm(categories, desc="demo: fit and score", unit="category", disable=not progress):
        support = MVTecAD(root, category, "train").few_shot(shots, seed)
        lake = Lake(model, config, class_name=class_name_for(category)).fit(support)
        test = MVTecAD(root, category, "test")
        metrics, result = evaluate(lake, test)
        rows.append((category, metrics, lake.neurons.per_layer_counts()))
        figures += _examples(test, result, output, category)
    report = out / "report.md"
    output.write_text("report.md", _markdown(model, config, shots, seed, rows, figures, random_weights))
    output.write_text("report.html", _html(model, config, shots, seed, rows, figures, random_weights))
    return report


def synthetic_data(root: Path, categories: list[str], seed: int, output=None) -> None:
    """Generate the demo's data into `root`, unless `root/demo_data.json` says it holds exactly that.

    Only a `root` the demo wrote (it holds `demo_data.json` and, with `output`, every file of it is
    recorded in the output folder's manifest) is ever replaced; any other existing `root` (user data,
    or a demo run of an earlier version) is refused, never deleted. The new data is generated in a
    temporary folder of the output folder and moved into place when complete."""
    record, wanted = root / "demo_data.json", {"categories": categories, "seed": seed}
    if root.exists():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{root} exists and was not written by this demo (no readable {record.name}): "
                             f"use another --out, or delete {root} yourself") from e
        if saved == wanted and (output is None or not output.foreign(output.files_under("data"))):
            return
    if output is None:
        from lake_interp.outputs import output_folder

        with output_folder(root.parent, "lake-interp demo") as output:
            return synthetic_data(root, categories, seed, output)
    partial = output.tmp_dir()  # the old data stays until the new data is complete
    make_synthetic_dataset(partial, categories=categories, seed=seed)
    (partial / record.name).write_text(json.dumps(wanted))
    output.remove_tree(root.relative_to(output.root).as_posix())  # refused if it holds a file we did not write
    output.install_tree(partial, root.relative_to(output.root).as_posix())


def _examples(test, result, output, category: str) -> list[tuple[str, str]]:
    """One panel (image | ground truth | fused map) per defect type and one normal image."""
    seen, figures = set(), []
    vmin, vmax = float(result.maps.min()), float(result.maps.max())
    for i, entry in enumerate(test.entries):
        if entry.defect in seen:
            continue
        seen.add(entry.defect)
        sample = test[i]
        w, h = sample.image.size
        heat = overlay(sample.image, resize_map(result.maps[i], h, w), vmin=vmin, vmax=vmax)
        name = f"{category}_{entry.defect}_{entry.path.stem}.png"
        with output.atomic(f"images/{name}") as tmp:
            panel(sample.image, sample.mask, heat).save(tmp, format="PNG")
        caption = (f"{category} / {entry.defect}: image score {float(result.image_scores[i]):.3f} "
                   f"(image | ground truth | fused anomaly map)")
        figures.append((caption, f"images/{name}"))
    return figures


def _summary(model, config, shots, seed) -> str:
    return (f"Model `{model.cfg.name}` (pretrained `{model.pretrained}`), {shots}-shot support (seed {seed}), "
            f"K = {config.k_neurons} neurons per hook, sites {list(config.sites)}, layers {list(config.layers)}, "
            f"text weight {config.text_weight}. Data: the synthetic MVTec-AD-layout set in `data/`.")


HEADER = ("category", "image AUROC", "image AP", "pixel AUROC", "pixel AUPRO", "selected neurons per hook")


def _table(rows) -> list[tuple[str, ...]]:
    pct = lambda v: "n/a" if np.isnan(v) else f"{100 * v:.1f}"  # noqa: E731
    return [(category, pct(m["image_auroc"]), pct(m["image_ap"]), pct(m["pixel_auroc"]), pct(m["pixel_aupro"]),
             "blocks " + ", ".join(f"{parse_hook_name(h).block}:{n}" for h, n in counts.items()))
            for category, m, counts in rows]


def _markdown(model, config, shots, seed, rows, figures, random_weights) -> str:
    lines = ["# lake_interp demo", ""]
    if random_weights:
        lines += [WARNING, ""]
    lines += [_summary(model, config, shots, seed), "", "| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _table(rows)]
    lines += ["", "## Anomaly maps (fused, one colour scale per category)", ""]
    lines += [f"![{caption}]({path})\n\n{caption}\n" for caption, path in figures]
    return "\n".join(lines) + "\n"


def _html(model, config, shots, seed, rows, figures, random_weights) -> str:
    e = html.escape
    warning = f"<p class='warn'>{e(WARNING.strip('*'))}</p>" if random_weights else ""
    head = "".join(f"<th>{e(c)}</th>" for c in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _table(rows))
    imgs = "".join(f"<figure><img src='{e(p)}'><figcaption>{e(c)}</figcaption></figure>" for c, p in figures)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #aaa;padding:4px 8px;text-align:right}.warn{color:#b00;font-weight:bold}"
             "figure{display:inline-block;margin:8px}img{height:256px;image-rendering:pixelated}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>lake_interp demo</title><style>{style}</style>"
            f"</head><body><h1>lake_interp demo</h1>{warning}<p>{e(_summary(model, config, shots, seed))}</p>"
            f"<table><tr>{head}</tr>{body}</table><h2>Anomaly maps (fused, one colour scale per category)</h2>"
            f"{imgs}</body></html>\n")
