"""Cells and shards of a benchmark run: the unit of work, which shard computes it, and its file.

A *cell* is one (dataset, category, shots, seed) of the grid; all methods of a cell share its
forward passes. Each finished cell lands whole (atomically, through `lake_interp.outputs`) as
`cells/<dataset>__<category>__shots<k>__seed<s>.json`: the metric rows of every method, the test
images (path, label, defect) and every method's image scores, with the digest of the run record
(`run`: spec, resolved config, categories, dtype, weights, methods_version) and of the category's
input files (`inputs`) it was computed under. A cell file whose digests match is finished: a rerun
skips it, `lake-interp merge` takes it.

Shards: `--shard i/n` (0 <= i < n) takes the i-th of n contiguous blocks of the sorted cell list
(`shard_cells`): stable across processes and machines (it depends on the grid only), and each
shard touches few categories, so it embeds few test splits (the benchmark embeds each category
it computes once). A shard writes into its own folder `<out>/shards/<i>-of-<n>/` (own lock,
manifest and run.json), so shards may run at once into one shared `--out`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

CELLS = "cells"
SHARDS = "shards"


class Cell(NamedTuple):
    dataset: str
    category: str
    shots: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}__{self.category}__shots{self.shots}__seed{self.seed}"

    @property
    def file(self) -> str:
        """Its file, relative to the run folder."""
        return f"{CELLS}/{self.name}.json"


def grid(dataset: str, categories: Iterable[str], shots: Iterable[int], seeds: Iterable[int]) -> list[Cell]:
    """Every cell of a run, in the order of results.csv (categories, then shots, then seeds as given)."""
    return [Cell(dataset, c, int(k), int(s)) for c in categories for k in shots for s in seeds]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n; errors name --shard."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N with integers, e.g. 0/3 (shards are numbered 0..N-1)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: expected 0 <= I < N (shards are numbered 0..N-1, e.g. 0/3, 1/3, 2/3)")
    return i, n


def shard_cells(cells: Iterable[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard `index` of `count`: the sorted cell list cut into `count` contiguous
    blocks (sizes differ by at most one); returned in the order given."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: expected 0 <= index < count")
    cells = list(cells)
    ordered = sorted(cells)
    n = len(ordered)
    mine = set(ordered[index * n // count:(index + 1) * n // count])
    return [c for c in cells if c in mine]


def shard_of(cell: Cell, cells: Iterable[Cell], count: int) -> int:
    """The shard (of `count`) that computes `cell`."""
    ordered = sorted(cells)
    k, n = ordered.index(cell), len(ordered)
    return next(i for i in range(count) if i * n // count <= k < (i + 1) * n // count)


def shard_folder(out, index: int, count: int) -> Path:
    return Path(out) / SHARDS / f"{index}-of-{count}"


def digest(data) -> str:
    """sha256 of JSON data (keys sorted): what a cell records of its run and inputs."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class CellResult:
    """One finished cell: metric rows (one per method), test images, image scores per method."""

    cell: Cell
    run: str  # digest of the run record
    inputs: str  # digest of the category's input files
    rows: list[dict]
    images: list[dict]  # path (relative to the root), label, defect
    scores: dict[str, list[float]]  # method -> image scores, in the order of images

    def to_json(self) -> str:
        return json.dumps({"cell": self.cell._asdict(), "run": self.run, "inputs": self.inputs, "rows": self.rows,
                           "images": self.images, "scores": self.scores}, indent=1) + "\n"


def read_cell(path) -> CellResult:
    """A cell file; an unreadable one, or one whose name is not its cell, is an error naming it."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        cell = Cell(**d["cell"])
        result = CellResult(cell, str(d["run"]), str(d["inputs"]), list(d["rows"]), list(d["images"]),
                            dict(d["scores"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable benchmark cell ({type(e).__name__}: {e}); delete it to "
                         "recompute it") from e
    if path.name != Path(cell.file).name:
        raise ValueError(f"{path} holds the cell {cell.name}: a cell file was renamed or copied; delete it")
    return result


def finished(folder, cell: Cell, run: str, inputs: str) -> Optional[CellResult]:
    """The cell as `folder` holds it when it was computed under this run and these inputs, else None."""
    path = Path(folder) / cell.file
    if not path.is_file():
        return None
    try:
        result = read_cell(path)
    except ValueError:
        return None
    return result if (result.cell, result.run, result.inputs) == (cell, run, inputs) else None


def same_cell(a: CellResult, b: CellResult) -> bool:
    """Equal rows, images and scores (NaN equal to NaN)."""
    def norm(x):
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, list):
            return [norm(v) for v in x]
        return x

    return norm([a.rows, a.images, a.scores]) == norm([b.rows, b.images, b.scores])


def score_columns(shots: Iterable[int], seeds: Iterable[int], methods: Iterable[str]) -> list[str]:
    """Columns of scores/<category>.csv: `<method>_<shots>shot_seed<seed>`, shots, then seeds, then methods."""
    return [f"{m}_{k}shot_seed{s}" for k in shots for s in seeds for m in methods]


def category_scores(results: list[CellResult]) -> list[dict]:
    """scores/<category>.csv rows from the cells of one category (in grid order): per test image its
    path, label, defect and one column per fit."""
    table = [dict(image) for image in results[0].images]
    for r in results:
        if r.images != results[0].images:
            raise ValueError(f"cell {r.cell.name} scored other test images than {results[0].cell.name}")
        for method, values in r.scores.items():
            for image, score in zip(table, values):
                image[f"{method}_{r.cell.shots}shot_seed{r.cell.seed}"] = score
    return table
