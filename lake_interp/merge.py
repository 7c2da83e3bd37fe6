"""`lake-interp merge`: results.csv and summary.md of a benchmark run from its cell files.

Sources are benchmark folders: a folder with a run.json (an unsharded run, or one shard folder)
and every `<folder>/shards/<i>-of-<n>/` under it. Every source must record the same run (its
resolved run.json: spec, model, weights, dtype, config, categories, methods_version and the input
files of every category; only `shard` may differ), else nothing is written. Every cell is taken
from the source that holds it (a cell held twice must be equal in both). Missing cells are an
error naming them and the shard that computes each; with `partial=True` the tables are written
from the cells present and summary.md says, at the top, INCOMPLETE and which cells are missing.

The merged folder (`out`; default: the one source folder, i.e. merging in place) gets run.json
(the run's record, without `shard`), results.csv, summary.md, categories/<category>.csv and
scores/<category>.csv (complete categories only), written through `lake_interp.outputs`: files it
did not write are never replaced, and a folder holding another run's record is refused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

from lake_interp.outputs import TMP_MARK
from lake_interp.shards import SHARDS, CellResult, Cell, category_scores, digest, grid, read_cell, same_cell, shard_of

IGNORED = ("shard", "inputs")  # compared apart (inputs) or allowed to differ (shard)


def find_runs(sources: Sequence) -> list[Path]:
    """The run folders of `sources` (each itself if it holds a run.json, and its shards/*/)."""
    runs = []
    for src in map(Path, sources):
        if not src.is_dir():
            raise ValueError(f"merge: {src} is not a folder (expected a benchmark --out folder or a shard folder)")
        found = ([src] if (src / "run.json").is_file() else []) + sorted(
            p for p in (src / SHARDS).glob("*") if p.is_dir() and (p / "run.json").is_file())
        if not found:
            raise ValueError(f"merge: {src} holds no benchmark run (no run.json, no {SHARDS}/*/run.json)")
        runs += [p for p in found if p.resolve() not in {r.resolve() for r in runs}]
    return runs


def common_record(runs: list[Path]) -> dict:
    """The one run all folders record (with inputs); refused, naming folders and fields, if they differ."""
    from lake_interp.benchmark import _read_record

    records = [_read_record(r / "run.json") for r in runs]
    first = {k: v for k, v in records[0].items() if k not in IGNORED}
    for run, rec in zip(runs[1:], records[1:]):
        other = {k: v for k, v in rec.items() if k not in IGNORED}
        changed = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if "config" in changed:
            a, b = first.get("config") or {}, other.get("config") or {}
            fields = [f"config.{f}" for f in sorted(a.keys() | b.keys()) if a.get(f) != b.get(f)]
            if fields:  # the fields that differ, not the whole config besides them
                changed = [c for c in changed if c != "config"] + fields
        changed += [f"inputs.{c}" for c in sorted(set(records[0].get("inputs") or {}) | set(rec.get("inputs") or {}))
                    if (records[0].get("inputs") or {}).get(c) != (rec.get("inputs") or {}).get(c)]
        if changed:
            raise ValueError(f"merge: {runs[0]} and {run} hold different benchmark runs (they differ in {changed}); "
                             "only shards of one run can be merged: rerun the odd one with the same arguments")
    if not isinstance(records[0].get("inputs"), dict):
        raise ValueError(f"merge: {runs[0] / 'run.json'} records no input files (written by an earlier version); "
                         "rerun that benchmark to record them")
    return {**first, "inputs": records[0]["inputs"]}


def spec_of(record: dict):
    from lake_interp.benchmark import BenchmarkSpec

    return BenchmarkSpec(**{f.name: record[f.name] for f in fields(BenchmarkSpec)})


def collect(runs: list[Path], record: dict) -> tuple[dict[Cell, CellResult], list[Cell]]:
    """(cell -> its result from the folders, the grid's missing cells). Cells of another run, of changed
    inputs or outside the grid are refused naming the file; a cell held twice must be equal."""
    run = digest({k: v for k, v in record.items() if k not in IGNORED})
    inputs = {c: digest(v) for c, v in record["inputs"].items()}
    cells = grid(record["dataset"], record["categories"], record["shots"], record["seeds"])
    wanted, found, where = set(cells), {}, {}
    for folder in runs:
        for path in sorted((folder / "cells").glob("*.json")):
            if path.name.startswith(TMP_MARK):  # a file being written, or left by a killed run
                continue
            r = read_cell(path)
            if r.cell not in wanted:
                raise ValueError(f"merge: {path} is the cell {r.cell.name}, which is not in the run's grid")
            if r.run != run or r.inputs != inputs.get(r.cell.category):
                what = "another run" if r.run != run else f"other input files of category {r.cell.category!r}"
                raise ValueError(f"merge: {path} was computed under {what} than {folder / 'run.json'} records; delete "
                                 "it and rerun that shard (its finished cells are kept)")
            if r.cell in found and not same_cell(found[r.cell], r):
                raise ValueError(f"merge: the cell {r.cell.name} is held by {where[r.cell]} and {path} with different "
                                 "values; delete one of them")
            found.setdefault(r.cell, r)
            where.setdefault(r.cell, path)
    return found, [c for c in cells if c not in found]


def missing_text(missing: list[Cell], cells: list[Cell], runs: list[Path]) -> str:
    """Which cells are missing, and which shard (and folder, where one was given) computes each."""
    folders = {}
    for r in runs:
        i, n = json.loads((r / "run.json").read_text()).get("shard", [0, 1])
        folders[i, n] = r
    n = max(n for _, n in folders)
    lines = []
    for i in range(n):
        mine = [c for c in missing if shard_of(c, cells, n) == i]
        if mine:
            folder = folders.get((i, n))
            who = (f"shard {i}/{n}" if n > 1 else "the unsharded run") + f" ({folder or 'no folder of it was given'})"
            shown = ", ".join(c.name for c in mine[:8]) + (f" and {len(mine) - 8} more" if len(mine) > 8 else "")
            lines.append(f"  {who}: {len(mine)} cell(s): {shown}")
    return "\n".join(lines)


def merge(sources: Sequence, out=None, partial: bool = False) -> list[dict]:
    """Merge benchmark folders into `out` (default: the one source); returns the rows of results.csv."""
    from lake_interp.benchmark import summary_markdown, write_rows, _write_csv
    from lake_interp.outputs import output_folder

    sources = list(sources)
    if not sources:
        raise ValueError("merge: give at least one benchmark folder")
    if out is None:
        if len(sources) > 1:
            raise ValueError("merge: several folders need --out (the folder to write the merged tables to)")
        out = sources[0]
    out = Path(out)
    runs = find_runs(sources)
    record = common_record(runs)
    if (out / "run.json").is_file() and out.resolve() not in {r.resolve() for r in runs}:
        common_record([runs[0], out])  # an earlier merge of another run there: refused
    cells = grid(record["dataset"], record["categories"], record["shots"], record["seeds"])
    found, missing = collect(runs, record)
    if missing and not partial:
        raise ValueError(f"merge: {len(missing)} of {len(cells)} cells are missing (nothing was written):\n"
                         f"{missing_text(missing, cells, runs)}\nrun those shards again with the same arguments "
                         "(finished cells are skipped), or merge with --partial for tables marked INCOMPLETE")
    spec = spec_of(record)
    rows = [row for c in cells if c in found for row in found[c].rows]
    complete = [cat for cat in record["categories"] if all(c in found for c in cells if c.category == cat)]
    planned = ["run.json", "results.csv", "summary.md", *(f"{d}/{c}.csv" for c in complete for d in ("categories", "scores"))]
    summary = summary_markdown(rows, spec)
    if missing:
        title, rest = summary.split("\n", 1)
        summary = (f"{title}\n\n**INCOMPLETE: {len(missing)} of {len(cells)} cells missing** (merged with --partial; "
                   f"every mean below is over the cells present only): "
                   + ", ".join(c.name for c in missing) + ".\n" + rest)
    with output_folder(out, "lake-interp merge") as output:
        output.claim(planned)  # foreign files: refused before anything is written
        output.write_text("run.json", json.dumps(record, indent=1))
        for cat in complete:
            results = [found[c] for c in cells if c.category == cat]
            scores = category_scores(results)
            _write_csv(output.root / "scores" / f"{cat}.csv", scores, list(scores[0]), output=output)
            write_rows(output.root / "categories" / f"{cat}.csv", [r for x in results for r in x.rows], output=output)
        write_rows(output.root / "results.csv", rows, output=output)
        output.write_text("summary.md", summary)
    if missing:
        print(f"lake-interp merge: INCOMPLETE: {len(missing)} of {len(cells)} cells missing:\n"
              f"{missing_text(missing, cells, runs)}", file=sys.stderr)
    return rows
