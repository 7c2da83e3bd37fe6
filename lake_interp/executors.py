"""Where the shards of a benchmark run: this process (`local`), Slurm jobs (`submitit`), or the same
jobs as local processes (`submitit-local`, submitit's LocalExecutor).

`run_jobs` submits one job per unfinished shard (job i runs `run_benchmark(..., shard=(i, n))`
into `<out>/shards/<i>-of-<n>/`), waits for them, then merges in place into `<out>`
(`lake_interp.merge`). Submitting again skips shards whose every cell is finished, and each job
skips its finished cells. submitit's own files (pickled jobs, logs) go to `<out>/submitit/`.
submitit is an optional extra (`pip install lake-interp[cluster]`), imported only here.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Optional

EXECUTORS = ("local", "submitit", "submitit-local")
LOGS = "submitit"


def shard_job(spec, model: dict, out: str, index: int, count: int) -> dict:
    """One job: load the model, run shard `index` of `count` (what `lake-interp benchmark --shard` does)."""
    from lake_interp.benchmark import run_benchmark
    from lake_interp.cli import load_model, with_default_k

    loaded = load_model(model["model"], model["pretrained"], model["device"], model["precision"])
    spec.config = with_default_k(spec.config, loaded)
    rows = run_benchmark(loaded, spec, out, progress=False, shard=(index, count))
    return {"shard": [index, count], "rows": len(rows)}


def shard_finished(out, spec, categories: list[str], index: int, count: int) -> bool:
    """Does the shard folder hold every cell of the shard, all computed under the run its run.json records
    (whose spec fields are the ones asked for)? The merge checks everything again."""
    from lake_interp.shards import digest, finished, grid, shard_cells, shard_folder

    folder = shard_folder(out, index, count)
    try:
        record = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
        return False
    asked = spec.to_dict()
    if any(record.get(k) != asked[k] for k in ("dataset", "root", "model", "pretrained", "shots", "seeds", "methods",
                                                 "resolution")) or record.get("categories") != categories:
        return False
    run = digest({k: v for k, v in record.items() if k not in ("shard", "inputs")})
    cells = shard_cells(grid(spec.dataset, categories, spec.shots, spec.seeds), index, count)
    return all(finished(folder, c, run, digest(record["inputs"].get(c.category))) for c in cells)


def make_executor(kind: str, folder: Path, partition: Optional[str], gpus: Optional[int], timeout_min: int,
                  name: str = "lake-interp-benchmark"):
    """A submitit executor: Slurm (`submitit`, one GPU per job by default) or local processes."""
    timeout_min = int(math.ceil(timeout_min))  # submitit's AutoExecutor takes whole minutes only
    try:
        import submitit
    except ModuleNotFoundError:
        raise RuntimeError(f"--executor {kind} needs submitit: pip install submitit (or lake-interp[cluster])") from None
    if kind == "submitit":
        if shutil.which("sbatch") is None:
            raise RuntimeError("--executor submitit submits Slurm jobs, but sbatch is not on this machine's PATH; run "
                               "it on the cluster's login node, or use --executor submitit-local for local processes")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"timeout_min": timeout_min, "gpus_per_node": 1 if gpus is None else gpus, "nodes": 1,
                  "tasks_per_node": 1, "name": name}
        if partition:
            params["slurm_partition"] = partition
        executor.update_parameters(**params)
        return executor
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus or 0, tasks_per_node=1, nodes=1)
    return executor


def submit_shards(executor, spec, model: dict, out, shards: list[int], jobs: int) -> list:
    """One job per shard index of `shards` (of `jobs`), as one job array where the executor has them."""
    n = len(shards)
    return executor.map_array(shard_job, [spec] * n, [model] * n, [str(out)] * n, list(shards), [jobs] * n)


def run_jobs(spec, model: dict, out, jobs: int, kind: str = "submitit", partition: Optional[str] = None,
             gpus: Optional[int] = None, timeout_min: int = 240) -> list[dict]:
    """Submit the unfinished shards of `jobs` as jobs, wait, merge into `out`; returns the merged rows.
    A failed job is reported (its error and log); the merge then refuses, naming the missing cells."""
    from lake_interp.data import DATASETS
    from lake_interp.merge import merge

    if kind not in ("submitit", "submitit-local"):
        raise ValueError(f"--executor {kind!r}: expected one of {EXECUTORS}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs {jobs!r}: expected a positive integer (the number of shard jobs)")
    out = Path(out)
    categories = list(spec.categories or DATASETS[spec.dataset].categories(spec.root))
    pending = [i for i in range(jobs) if not shard_finished(out, spec, categories, i, jobs)]
    if len(pending) < jobs:
        print(f"lake-interp benchmark: {jobs - len(pending)} of {jobs} shards already finished in {out / 'shards'}; "
              f"submitting {len(pending)}", file=sys.stderr)
    failures = []
    if pending:
        executor = make_executor(kind, out / LOGS, partition, gpus, timeout_min)
        submitted = submit_shards(executor, spec, model, out, pending, jobs)
        print(f"lake-interp benchmark: submitted {len(submitted)} shard job(s) ({kind}): "
              + ", ".join(f"{i}/{jobs} as {j.job_id}" for i, j in zip(pending, submitted)), file=sys.stderr)
        for i, job in zip(pending, submitted):
            try:
                job.result()
            except Exception as e:  # submitit's FailedJobError / UncompletedJobError carry the job's error
                text = str(e).strip().splitlines()
                failures.append(f"shard {i}/{jobs} (job {job.job_id}) failed: {text[-1] if text else type(e).__name__}; "
                                f"log: {job.paths.stderr}")
        for f in failures:
            print(f"lake-interp benchmark: {f}", file=sys.stderr)
    rows = merge([out], out)
    return rows
