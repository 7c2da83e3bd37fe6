"""The benchmark harness: every method, shot and seed on every category, side by side.

Methods come from the method table (`lake_interp.detectors.methods.METHODS`). The unit of work is a
cell (dataset, category, shots, seed; `lake_interp.shards`): all methods of a cell share its
forward passes. Per category, the test split goes through the vision tower once for the LAKE family
(lake, lake_random, lake_attr, knn_all, text_dense: activations of every hook any of them needs are
cached once, text embeddings once) and once per embedding kind for PatchCore and WinCLIP(+)
(`embed` once, every fit scored with `score_embedding(s)`); each support set once per cell; any
other detector is fitted and scored through the detector protocol (`lake_interp.evaluation`), a
zero-shot one once per category. Each finished cell lands as `<out>/cells/<cell>.json` and is
skipped when the same run is resumed; `results.csv`, `summary.md`, `categories/<category>.csv` and
the per-image `scores/<category>.csv` are built from the cells. With `shard=(i, n)` the run computes
the cells of shard i only, into `<out>/shards/<i>-of-<n>/`; `lake_interp.merge` builds the tables
from the shard folders.
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
from lake_interp.evaluation import METRICS, SPRO_METRICS, cache_test_targets, evaluate, metrics, targets
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


def run_benchmark(model, spec: BenchmarkSpec, out_dir, progress: bool = True,
                  shard: Optional[tuple[int, int]] = None) -> list[dict]:
    """Run (or resume) the benchmark; returns every row and writes results.csv and summary.md.
    shard=(i, n): only the cells of shard i of n (`lake_interp.shards.shard_cells`), into
    `<out_dir>/shards/<i>-of-<n>/` (no results.csv or summary.md: `lake-interp merge` builds them);
    returns the rows of those cells."""
    from lake_interp.data import DATASETS
    from lake_interp.shards import shard_cells, shard_folder

    if shard is not None:
        shard_cells([], *shard)  # a bad shard fails here
    out = Path(out_dir) if shard is None else shard_folder(out_dir, *shard)
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
        return _run_locked(model, spec, base, categories, output, progress, shard)


def _run_locked(model, spec: BenchmarkSpec, base: LakeConfig, categories: list[str], output, progress: bool,
                shard: Optional[tuple[int, int]] = None) -> list[dict]:
    from lake_interp.shards import category_scores, finished, grid, shard_cells

    out = output.root
    cells = grid(spec.dataset, categories, spec.shots, spec.seeds)
    mine = cells if shard is None else shard_cells(cells, *shard)
    planned = ["run.json", *(c.file for c in mine)]
    if shard is None:
        planned += ["results.csv", "summary.md", *(f"{d}/{c}.csv" for c in categories for d in ("categories", "scores"))]
    stale, run, inputs = _guard_resume(out / "run.json", spec, base, categories, model, output=output, planned=planned,
                                       shard=shard)
    done = {c: finished(out, c, run, inputs[c.category]) for c in mine if output.owns(c.file)}
    done = {c: r for c, r in done.items() if r is not None}
    todo = [c for c in mine if c not in done]
    where = "" if shard is None else f"shard {shard[0]}/{shard[1]}: "
    if done:
        print(f"lake-interp benchmark: {where}{len(done)} of {len(mine)} cells already done in {out}, "
              f"computing {len(todo)}", file=sys.stderr)
    bar = _progress(len(mine), progress)
    bar.update(len(done))
    for category in categories:
        pending = [c for c in todo if c.category == category]
        if pending:
            bar.set_description(category)
            for result in _run_category(model, spec, base, category, bar, pending):
                result.run, result.inputs = run, inputs[category]
                output.write_text(result.cell.file, result.to_json())  # a cell lands whole or not at all
                done[result.cell] = result
        tables = [f"{d}/{category}.csv" for d in ("scores", "categories")]
        if shard is None and (pending or not all(output.owns(t) for t in tables)):  # every cell of it is here
            results = [done[c] for c in cells if c.category == category]
            scores = category_scores(results)
            output.mkdir("scores")
            _write_csv(out / "scores" / f"{category}.csv", scores, list(scores[0]), output=output)
            write_rows(out / "categories" / f"{category}.csv", [r for x in results for r in x.rows], output=output)
    bar.close()
    rows = [r for c in mine for r in done[c].rows]
    if shard is None:
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


def _run_category(model, spec: BenchmarkSpec, base: LakeConfig, category: str, bar, cells=None):
    """Yields, cell by cell as each is finished, a `lake_interp.shards.CellResult` (digests left
    empty): the metric rows of every method and per test image (path relative to root, label,
    defect) every method's score. cells: those of `category` to compute (default: every
    (shots, seed) of the spec). The test split is embedded once for all of them."""
    from lake_interp.shards import Cell, CellResult

    test = load_dataset(spec.dataset, spec.root, category, "test")
    train = load_dataset(spec.dataset, spec.root, category, "train")
    class_name = class_name_for(category)
    if cells is None:
        cells = [Cell(spec.dataset, category, int(k), int(s)) for k in spec.shots for s in spec.seeds]
    lakes = {m: METHODS[m].build(model, base, class_name) for m in spec.methods if METHODS[m].lake_family}
    if lakes:  # the LAKE family's fast path: one forward pass per image for all of them
        visual_hooks = list(dict.fromkeys(h for lk in lakes.values() if lk.uses_visual for h in lk.hooks))
        test_hooks = list(dict.fromkeys(h for lk in lakes.values() for h in lk.required_hooks))
        probe = next(iter(lakes.values()))
        test_acts, truth = cache_test_targets(probe, test, test_hooks, mask_size=spec.resolution)
        text = probe.compute_text_features() if any(lk.uses_semantic for lk in lakes.values()) else None
    else:
        truth = targets(test, spec.resolution or model.image_size)
    masks, labels = truth.masks, truth.labels  # truth.regions: MVTec LOCO's sPRO regions (or why there are none)
    embedded = _TestEmbeddings(test, model)  # PatchCore, WinCLIP(+): the test split through the tower once
    zero_shot: dict[str, tuple] = {}  # method -> (metrics, result): scored once per category
    images = [{"path": Path(os.path.relpath(e.path, spec.root)).as_posix(), "label": int(e.label), "defect": e.defect}
              for e in test.entries]
    for cell in cells:
        shots, seed = cell.shots, cell.seed
        support = train.few_shot(shots, seed)
        support_acts = probe.patch_activations(support, visual_hooks) if lakes and visual_hooks else {}
        rows, scores = [], {}
        for method in spec.methods:
            m = METHODS[method]
            if m.lake_family:
                lake = m.build(model, base, class_name, seed=seed)
                lake.fit_activations(support_acts, text_features=text, support=support)  # images: "attribution"
                result = lake.score_activations(test_acts)
                values = metrics(result, labels, masks, spec.resolution, truth.regions)
            elif method in zero_shot:
                values, result = zero_shot[method]
            else:
                detector = m.fit(m.build(model, base, class_name, seed=seed, shots=shots), support)
                result = embedded.score(detector)
                if result is None:
                    values, result = evaluate(detector, test, spec.resolution, truth=truth)
                else:
                    values = metrics(result, labels, masks, spec.resolution, truth.regions)
                if m.zero_shot:
                    zero_shot[method] = values, result
            row = dict(zip(KEYS, (spec.dataset, category, method, shots, seed)))
            row.update({k: float(v) for k, v in values.items()})
            rows.append(row)
            scores[method] = [float(v) for v in result.image_scores.tolist()]
        bar.update(1)
        yield CellResult(cell, "", "", rows, images, scores)


EMBED_ONCE = {  # detector class -> its method scoring what its `embed` gives (embed depends on model and config only)
    "lake_interp.detectors.patchcore:PatchCore": "score_embedding",
    "lake_interp.detectors.winclip:WinCLIP": "score_embeddings",
}


class _TestEmbeddings:
    """A test split embedded once per (detector class, config) of `EMBED_ONCE`, in batches of
    `batch_size` (as `evaluate` streams it), kept on the CPU; `score(detector)` scores every batch
    with a fitted detector's `score_embedding(s)` on the model's device (None: the detector has no
    such path)."""

    def __init__(self, test, model, batch_size: int = 16):
        self.test, self.model, self.batch_size = test, model, batch_size
        self._cache: dict[tuple, list] = {}

    def score(self, detector):
        from lake_interp.evaluation import concat_results
        from lake_interp.lake.inputs import iter_batches

        kind = f"{type(detector).__module__}:{type(detector).__qualname__}"
        if kind not in EMBED_ONCE:
            return None
        key = (kind, json.dumps(detector.config.to_dict(), sort_keys=True, default=str))
        if key not in self._cache:
            self._cache[key] = [_to_device(detector.embed(chunk), "cpu") for chunk in iter_batches(self.test, self.batch_size)]
        score = getattr(detector, EMBED_ONCE[kind])
        return concat_results([score(_to_device(e, self.model.device)) for e in self._cache[key]])


def _to_device(x, device):
    """Tensors (also inside lists and dataclasses such as WinCLIPEmbeddings) moved to `device`."""
    import dataclasses

    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if dataclasses.is_dataclass(x):
        return type(x)(**{f.name: _to_device(getattr(x, f.name), device) for f in dataclasses.fields(x)})
    return x


def evaluate_result(result, masks, labels, resolution) -> dict:
    """Metrics of one result (kept for callers of earlier versions: `lake_interp.evaluation.metrics`)."""
    return metrics(result, labels, masks, resolution)


def _guard_resume(path: Path, spec: BenchmarkSpec, base: LakeConfig, categories: list[str], model,
                  output=None, planned=("run.json",), shard: Optional[tuple[int, int]] = None) -> tuple[set, str, dict]:
    """run.json records the resolved run (every LakeConfig field, the category list), the model's dtype and
    weights hash, and the version of the method names (methods_version); a resumed run must match them all. Records of earlier versions (config = overrides only,
    categories null, no dtype) are resolved the same way before comparing. A shard's record has
    `shard: [i, n]` as well. Returns (the categories whose input files changed, the digest of the run
    record (without shard and inputs), per category the digest of its input files) for the cells."""
    from lake_interp.shards import digest
    from lake_interp.lake.persist import model_identity, weights_sha256

    identity = model_identity(model)
    current = _resolved({**spec.to_dict(), "config": base.to_dict(), "categories": categories,
                         "dtype": identity["dtype"], "weights_sha256": identity["weights_sha256"],
                         "methods_version": METHODS_VERSION})
    run = digest(current)
    if shard is not None:
        current["shard"] = [int(shard[0]), int(shard[1])]
    inputs = {c: input_files(spec, c) for c in categories}  # compared per category, apart from the rest
    finished = [p for p in [*(path.parent / "cells").glob("*.json"), *(path.parent / "categories").glob("*.csv")]
                if not p.name.startswith(".")]  # not temporary files
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
        done = {p.stem for p in finished if p.parent.name == "categories"}
        done |= {p.stem.split("__")[1] for p in finished if p.parent.name == "cells" and p.stem.count("__") == 3}
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
            for rel in ["run.json", "results.csv", "summary.md", *(p for p in planned if p.startswith("cells/")),
                        *(f"{d}/{c}.csv" for c in categories for d in ("categories", "scores"))]:
                if (path.parent / rel).is_file() and not output.owns(rel):
                    output.adopt(rel)
    current = {**current, "inputs": inputs}
    if output is None:
        path.write_text(json.dumps(current, indent=1))
    else:
        output.claim(planned)  # every file this run writes: foreign ones refused before any is written
        output.write_text("run.json", json.dumps(current, indent=1))
    return stale, run, {c: digest(v) for c, v in inputs.items()}


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
    _write_csv(path, rows, list(KEYS) + list(METRICS) + [k for k in SPRO_METRICS if any(k in r for r in rows)], output=output)


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
            {k: (int(v) if k in ("shots", "seed") else float(v) if k in METRICS else float(v or "nan") if k in SPRO_METRICS else v)
             for k, v in r.items()}
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
    shown = [m for m in (*METRICS, *SPRO_METRICS) if rows and all(m in r for r in rows)]  # every metric the rows have (results.csv: all)
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
