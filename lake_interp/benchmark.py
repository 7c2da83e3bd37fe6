"""The benchmark harness: every method, shot and seed on every category, side by side.

Methods come from the method table (`lake_interp.detectors.methods.METHODS`). The LAKE family
(lake, lake_random, knn_all, text_dense) shares one forward pass per test image per category
(activations of every hook any of them needs are cached once), one per support set, and text
embeddings once per category; every other detector is fitted and scored through the detector
protocol (`fit(support)`, `score(images)`, streamed in batches by `lake_interp.evaluation`), and a
zero-shot one once per category. Metrics come from `lake_interp.evaluation`. Finished categories
are written to `<out>/categories/<category>.csv` (with the per-image scores in
`<out>/scores/<category>.csv`) and skipped when the same run is resumed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from lake_interp.data import load_dataset
from lake_interp.detectors.methods import METHODS, METHODS_VERSION, check_methods, check_recorded_methods, default_methods
from lake_interp.evaluation import METRICS, Targets, cache_test_set, evaluate, metrics, targets
from lake_interp.lake import Lake, LakeConfig

KEYS = ("dataset", "category", "method", "shots", "seed")


@dataclass
class BenchmarkSpec:
    """What a benchmark run is (plain data; saved as run.json to guard resuming)."""

    dataset: str
    root: str
    model: str
    pretrained: Optional[str]
    categories: Optional[list[str]] = None  # None: every category found under root
    shots: Sequence[int] = (1, 2, 4)
    seeds: Sequence[int] = (0, 1, 2)
    methods: Sequence[str] = field(default_factory=default_methods)  # names of the method table
    config: dict = field(default_factory=dict)  # LakeConfig fields overriding the defaults (LAKE family)
    resolution: Optional[int] = None  # evaluation resolution; None: the model input size

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(root=str(Path(self.root).resolve()), shots=[int(v) for v in self.shots], seeds=[int(v) for v in self.seeds],
                 methods=list(self.methods), resolution=None if self.resolution is None else int(self.resolution))
        return d


def class_name_for(category: str) -> str:
    """Prompt class name: "metal_nut" -> "metal nut"; numbered categories (BTAD "01") -> "product"."""
    return "product" if category.isdigit() else category.replace("_", " ")


def run_benchmark(model, spec: BenchmarkSpec, out_dir, progress: bool = True) -> list[dict]:
    """Run (or resume) the benchmark; returns every row and writes results.csv and summary.md."""
    from lake_interp.data import DATASETS

    out = Path(out_dir)
    base = LakeConfig.from_dict(spec.config)
    check_methods(spec.methods, "methods (--methods)")  # unknown, repeated or missing methods: fail before any work or record
    for m in spec.methods:  # K wider than a layer...
        if METHODS[m].lake_family:
            Lake(model, METHODS[m].config(base))
    for name in ("shots", "seeds"):
        values = list(getattr(spec, name))
        if not values:
            raise ValueError(f"{name} (--{name}) is empty: give at least one value")
        low = 1 if name == "shots" else 0
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low]
        if bad:
            raise ValueError(f"{name} (--{name}) must be integers >= {low}; got {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} (--{name}) lists a value twice: {values}")
    r = spec.resolution
    if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1):
        raise ValueError(f"resolution (--resolution) must be a positive integer (pixels), got {r!r}")
    categories = list(spec.categories or DATASETS[spec.dataset].categories(spec.root))
    if not categories:
        raise ValueError(f"no {spec.dataset} categories under --root {spec.root}: expected one folder per category "
                         f"(e.g. {spec.root}/bottle/train, .../test); is --root one folder too deep or too high, or empty?")
    from lake_interp.outputs import output_folder, safe_name

    for category in categories:
        safe_name(category, "category")  # names from data never lead outside --out
        check_test_set(load_dataset(spec.dataset, spec.root, category, "test"))  # missing or one-class: fail here
    with output_folder(out, "lake-interp benchmark") as output:
        return _run_locked(model, spec, base, categories, output, progress)


def _run_locked(model, spec: BenchmarkSpec, base: LakeConfig, categories: list[str], output, progress: bool) -> list[dict]:
    out = output.root
    planned = ["run.json", "results.csv", "summary.md", *(f"{d}/{c}.csv" for c in categories for d in ("categories", "scores"))]
    stale = _guard_resume(out / "run.json", spec, base, categories, model, output=output, planned=planned)
    output.mkdir("categories")
    rows = []
    bar = _progress(len(categories) * len(spec.shots) * len(spec.seeds), progress)
    for category in categories:
        done = out / "categories" / f"{category}.csv"
        if done.is_file() and output.owns(f"categories/{category}.csv") and category not in stale:
            rows += read_rows(done)
            bar.update(len(spec.shots) * len(spec.seeds))
            continue
        bar.set_description(category)
        cat_rows, scores = _run_category(model, spec, base, category, bar)
        output.mkdir("scores")
        _write_csv(out / "scores" / f"{category}.csv", scores, list(scores[0]), output=output)
        write_rows(done, cat_rows, output=output)  # a category lands whole or not at all: this file marks it done
        rows += cat_rows
    bar.close()
    write_rows(out / "results.csv", rows, output=output)
    output.write_text("summary.md", summary_markdown(rows, spec))
    return rows


def check_test_set(test) -> None:
    """A test split must hold normal and anomalous images: else no metric is defined (all NaN)."""
    n_anomalous = int(test.labels.sum())
    if n_anomalous == 0 or n_anomalous == len(test):
        missing = "anomalous" if n_anomalous == 0 else "normal"
        raise ValueError(f"category {test.category!r}: the test split {test.source} has no {missing} images "
                         f"({len(test) - n_anomalous} normal, {n_anomalous} anomalous); the metrics need both")


def _run_category(model, spec: BenchmarkSpec, base: LakeConfig, category: str, bar) -> tuple[list[dict], list[dict]]:
    """Metric rows of every method, shot and seed, and per test image its scores (path relative to root,
    label, defect, one column `<method>_<shots>shot_seed<seed>` per fit)."""
    test = load_dataset(spec.dataset, spec.root, category, "test")
    train = load_dataset(spec.dataset, spec.root, category, "train")
    class_name = class_name_for(category)
    lakes = {m: METHODS[m].build(model, base, class_name) for m in spec.methods if METHODS[m].lake_family}
    if lakes:  # the LAKE family's fast path: one forward pass per image for all of them
        visual_hooks = list(dict.fromkeys(h for lk in lakes.values() if lk.uses_visual for h in lk.hooks))
        test_hooks = list(dict.fromkeys(h for lk in lakes.values() for h in lk.required_hooks))
        probe = next(iter(lakes.values()))
        test_acts, masks, labels = cache_test_set(probe, test, test_hooks, mask_size=spec.resolution)
        text = probe.compute_text_features() if any(lk.uses_semantic for lk in lakes.values()) else None
    else:
        truth = targets(test, spec.resolution or model.image_size)
        masks, labels = truth.masks, truth.labels
    zero_shot: dict[str, tuple] = {}  # method -> (metrics, result): scored once per category
    rows = []
    scores = [{"path": Path(os.path.relpath(e.path, spec.root)).as_posix(), "label": e.label, "defect": e.defect}
              for e in test.entries]
    for shots in spec.shots:
        for seed in spec.seeds:
            support = train.few_shot(shots, seed)
            support_acts = probe.patch_activations(support, visual_hooks) if lakes and visual_hooks else {}
            for method in spec.methods:
                m = METHODS[method]
                if m.lake_family:
                    lake = m.build(model, base, class_name, seed=seed)
                    lake.fit_activations(support_acts, text_features=text, support=support)  # images: "attribution"
                    result = lake.score_activations(test_acts)
                    values = metrics(result, labels, masks, spec.resolution)
                elif method in zero_shot:
                    values, result = zero_shot[method]
                else:
                    detector = m.fit(m.build(model, base, class_name, seed=seed, shots=shots), support)
                    values, result = evaluate(detector, test, spec.resolution, truth=Targets(labels, masks))
                    if m.zero_shot:
                        zero_shot[method] = values, result
                row = dict(zip(KEYS, (spec.dataset, category, method, shots, seed)))
                row.update(values)
                rows.append(row)
                for image, score in zip(scores, result.image_scores.tolist()):
                    image[f"{method}_{shots}shot_seed{seed}"] = score
            bar.update(1)
    return rows, scores


def evaluate_result(result, masks, labels, resolution) -> dict:
    """Metrics of one result (kept for callers of earlier versions: `lake_interp.evaluation.metrics`)."""
    return metrics(result, labels, masks, resolution)


def _guard_resume(path: Path, spec: BenchmarkSpec, base: LakeConfig, categories: list[str], model,
                  output=None, planned=("run.json",)) -> set:
    """run.json records the resolved run (every LakeConfig field, the category list), the model's dtype and
    weights hash, and the version of the method names (methods_version); a resumed run must match them all. Records of earlier versions (config = overrides only,
    categories null, no dtype) are resolved the same way before comparing."""
    from lake_interp.lake.persist import model_identity, weights_sha256

    identity = model_identity(model)
    current = _resolved({**spec.to_dict(), "config": base.to_dict(), "categories": categories,
                         "dtype": identity["dtype"], "weights_sha256": identity["weights_sha256"],
                         "methods_version": METHODS_VERSION})
    inputs = {c: input_files(spec, c) for c in categories}  # compared per category, apart from the rest
    finished = list((path.parent / "categories").glob("*.csv"))
    stale: set = set()
    if path.is_file() and finished:  # without finished categories there is nothing to resume or lose
        saved = _read_record(path)
        saved_inputs = saved.pop("inputs", None)
        compared = current
        # a record of the old method names (no methods_version): refused with the new names
        check_recorded_methods(saved.get("methods"), saved.get("methods_version"), path)
        saved.setdefault("methods_version", METHODS_VERSION)  # its names mean the same now
        if "dtype" not in saved:  # recorded before the dtype was: its hash is of the weights as stored
            saved["dtype"] = current["dtype"]
            compared = {**current, "weights_sha256": weights_sha256(model, None)}
        if saved != compared:
            changed = sorted(k for k in saved.keys() | compared.keys() if saved.get(k) != compared.get(k))
            if "config" in changed:
                old, new = saved.get("config") or {}, current["config"]
                changed += [f"config.{f}" for f in sorted(old.keys() | new.keys()) if old.get(f) != new.get(f)]
            raise ValueError(
                f"{path.parent} holds a different benchmark run (differs in {changed}); "
                f"use another --out, or delete {path.parent} to start over"
            )
        done = {p.stem for p in finished}
        if not isinstance(saved_inputs, dict):
            import warnings

            warnings.warn(f"{path} was recorded before runs recorded their input files: the finished categories "
                          f"{sorted(done & set(categories))} are resumed without checking their images", stacklevel=3)
        else:
            for c in categories:
                if c in done and saved_inputs.get(c) != inputs[c]:
                    stale.add(c)
                    print(f"lake-interp benchmark: the input files of category {c!r} changed since it was computed "
                          f"({_input_changes(saved_inputs.get(c), inputs[c])}): recomputing it", file=sys.stderr)
        if output is not None:  # the same run (perhaps recorded by an earlier version): its files are its own
            for rel in ["run.json", "results.csv", "summary.md",
                        *(f"{d}/{c}.csv" for c in categories for d in ("categories", "scores"))]:
                if (path.parent / rel).is_file() and not output.owns(rel):
                    output.adopt(rel)
    current = {**current, "inputs": inputs}
    if output is None:
        path.write_text(json.dumps(current, indent=1))
    else:
        output.claim(planned)  # every file this run writes: foreign ones refused before any is written
        output.write_text("run.json", json.dumps(current, indent=1))
    return stale


def _read_record(path: Path) -> dict:
    """run.json as a resolved record; an empty or damaged one is an error naming it."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable run record ({type(e).__name__}: {e}); it was not written whole: "
                         f"use another --out, or delete {path.parent} to start over") from e
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a run record (a JSON object expected); use another --out, or delete "
                         f"{path.parent} to start over")
    return _resolved(record)


def input_files(spec: BenchmarkSpec, category: str) -> list[list]:
    """Every image and mask file a category's run reads (train and test splits): [path relative to
    the root, size in bytes, mtime in ns], sorted; recorded in run.json and compared on resume."""
    root = Path(spec.root)
    files = set()
    for split in ("train", "test"):
        for e in load_dataset(spec.dataset, spec.root, category, split).entries:
            files.update(Path(p) for p in (e.path, *e.mask_paths))
    out = []
    for p in sorted(files):
        st = p.stat()
        out.append([Path(os.path.relpath(p, root)).as_posix(), int(st.st_size), int(st.st_mtime_ns)])
    return out


def _input_changes(old, new) -> str:
    old = {r[0]: r[1:] for r in old or []}
    new = {r[0]: r[1:] for r in new}
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    parts = [f"{len(v)} {what}" + (f" (e.g. {v[0]})" if v else "") for what, v in
             (("added", added), ("removed", removed), ("changed", changed)) if v]
    return ", ".join(parts) or "not recorded"


def _resolved(record: dict) -> dict:
    """A run.json record as JSON data with its config completed with the defaults (LakeConfig) and its
    categories resolved (null: every category under root)."""
    from lake_interp.data import DATASETS

    record = dict(record)
    try:
        record["config"] = LakeConfig.from_dict(record.get("config") or {}).to_dict()
    except (TypeError, ValueError):  # a field this version does not know: a different run
        pass
    if record.get("categories") is None and record.get("dataset") in DATASETS and Path(record["root"]).is_dir():
        record["categories"] = DATASETS[record["dataset"]].categories(record["root"])
    return json.loads(json.dumps(record))


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="fit")


def write_rows(path: Path, rows: list[dict], output=None) -> None:
    _write_csv(path, rows, list(KEYS) + list(METRICS), output=output)


def _write_csv(path: Path, rows: list[dict], fieldnames: list[str], output=None) -> None:
    """Write atomically: a temporary file, then renamed over `path` (with `output`, an
    `lake_interp.outputs.OutputFolder`, through its policy: `path` must lie inside it)."""
    import io

    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fieldnames)
    w.writeheader()
    w.writerows(rows)
    if output is not None:
        output.write_text(Path(path).relative_to(output.root).as_posix(), text.getvalue())
        return
    from lake_interp.outputs import write_file_atomic

    write_file_atomic(path, text.getvalue().encode("utf-8"))


def read_rows(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return [
            {k: (int(v) if k in ("shots", "seed") else float(v) if k in METRICS else v) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def _mean_std(values: list[float]) -> str:
    v = np.array(values, dtype=float)
    if np.all(np.isnan(v)):
        return "n/a"
    mean = np.nanmean(v) * 100
    return f"{mean:.1f}" if len(v) < 2 else f"{mean:.1f} ± {np.nanstd(v) * 100:.1f}"


N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0


def paired_difference(rows: list[dict], a: str, b: str, metric: str, n_boot: int = N_BOOTSTRAP,
                      seed: int = BOOTSTRAP_SEED) -> dict:
    """Method `a` minus method `b` on `metric`, paired by (shots, seed): per pair, the difference of
    their means over categories. Returns {mean, low, high, n}: the mean over the pairs and its
    percentile-bootstrap 95% interval (`n_boot` resamples of the pairs with replacement,
    numpy.random.default_rng(seed)); pairs where either value is NaN are left out."""
    diffs = []
    for shots, sd in dict.fromkeys((r["shots"], r["seed"]) for r in rows):
        va = [r[metric] for r in rows if r["method"] == a and r["shots"] == shots and r["seed"] == sd]
        vb = [r[metric] for r in rows if r["method"] == b and r["shots"] == shots and r["seed"] == sd]
        if va and vb and not (np.all(np.isnan(va)) or np.all(np.isnan(vb))):
            diffs.append(float(np.nanmean(va)) - float(np.nanmean(vb)))
    d = np.array(diffs)
    if len(d) == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    boot = d[np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"mean": float(d.mean()), "low": float(low), "high": float(high), "n": len(d)}


def protocol_text(spec: BenchmarkSpec) -> str:
    """How every number of the run was obtained (the summary's protocol line)."""
    return (f"Protocol: {', '.join(str(k) for k in spec.shots)}-shot; seeds {list(spec.seeds)}; the k support images are drawn "
            "from the normal images of the train split (`few_shot(k, seed)`: sorted paths, then "
            "`numpy.random.default_rng(seed).permutation`), the same support for every method at a given (k, seed); "
            "zero-shot methods use no support; the test split is never seen when fitting (no test image in a "
            "support, nothing tuned on it); methods_version " f"{METHODS_VERSION}.")


def _diff_cell(d: dict) -> str:
    if d["n"] == 0:
        return "n/a"
    return f"{d['mean'] * 100:+.1f} [{d['low'] * 100:+.1f}, {d['high'] * 100:+.1f}]"


def summary_markdown(rows: list[dict], spec: BenchmarkSpec) -> str:
    """Protocol, paired differences (lake vs each other method), mean over categories (± std over
    seeds), then per category (mean over seeds); percent."""
    shown = [m for m in METRICS if rows and all(m in r for r in rows)]  # every metric the rows have (results.csv: all)
    lines = [
        f"# Benchmark: {spec.dataset} ({spec.root})",
        "",
        f"Model `{spec.model}` (pretrained `{spec.pretrained}`), shots {list(spec.shots)}, seeds {list(spec.seeds)}.",
        "Values in percent; ± is the standard deviation (population, ddof=0) over seeds of the category mean.",
        "",
        protocol_text(spec),
        "",
    ]
    from lake_interp.model.loading import NONE_TAGS

    if spec.pretrained in NONE_TAGS:
        lines += ["**RANDOM WEIGHTS (pretrained none): these numbers are meaningless (smoke test only).**", ""]
    others = [m for m in spec.methods if m != "lake"]
    if "lake" in spec.methods and others:
        n_pairs = len(spec.shots) * len(spec.seeds)
        lines += [
            "## Paired differences (lake minus each method)",
            "",
            f"Per (shots, seed) pair ({n_pairs} pairs: shots x seeds), the difference of the two methods' means over "
            f"categories; the mean over the pairs and, in brackets, its 95% percentile-bootstrap interval "
            f"({N_BOOTSTRAP} resamples of the pairs, numpy default_rng({BOOTSTRAP_SEED})). Percentage points.",
            "",
            "| pair | n | " + " | ".join(shown) + " |",
            "|---|---|" + "---|" * len(shown),
        ]
        for other in others:
            diffs = [paired_difference(rows, "lake", other, metric) for metric in shown]
            lines.append(f"| lake vs {other} | {max(d['n'] for d in diffs)} | " + " | ".join(_diff_cell(d) for d in diffs) + " |")
        lines.append("")
    lines += [
        "## Mean over categories",
        "",
        "| method | shots | " + " | ".join(shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for method in spec.methods:
        for shots in spec.shots:
            sel = [r for r in rows if r["method"] == method and r["shots"] == shots]
            cells = []
            for metric in shown:
                per_seed = [np.nanmean([r[metric] for r in sel if r["seed"] == s] or [math.nan]) for s in spec.seeds]
                cells.append(_mean_std(per_seed))
            lines.append(f"| {method} | {shots} | " + " | ".join(cells) + " |")
    lines += ["", "## Per category (mean ± std over seeds)", "", "| category | method | shots | " + " | ".join(shown) + " |",
              "|---|---|---|" + "---|" * len(shown)]
    for category in dict.fromkeys(r["category"] for r in rows):
        for method in spec.methods:
            for shots in spec.shots:
                sel = [r for r in rows if r["category"] == category and r["method"] == method and r["shots"] == shots]
                cells = [_mean_std([np.nanmean([r[m] for r in sel if r["seed"] == s]) for s in spec.seeds])
                         if sel else "n/a" for m in shown]
                lines.append(f"| {category} | {method} | {shots} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
