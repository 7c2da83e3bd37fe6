"""Sharded benchmarks: the same grid unsharded, as 3 shards in 3 processes and through submitit's
LocalExecutor gives the same results.csv row for row; a shard killed mid-run recomputes only its
unfinished cells; merging refuses shards of different runs, missing cells and foreign files; each
test split is embedded once per category (PatchCore, WinCLIP+), with the numbers of the per-fit path."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lake_interp.benchmark import KEYS
from lake_interp.cli import main
from lake_interp.data import make_synthetic_dataset
from lake_interp.shards import Cell, grid, parse_shard, shard_cells, shard_of

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
CELLS = ["mvtec__disc__shots1__seed0", "mvtec__disc__shots1__seed1", "mvtec__grid__shots1__seed0",
         "mvtec__grid__shots1__seed1"]  # sorted; 3 shards: [0], [1], [2, 3]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc", "grid"], seed=3, image_size=32,
                                  n_train=2, n_test_good=2, n_test_defect=2)


def bench_args(root, out, *extra, k=4):
    return ["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "--seeds", "0", "1", "--methods",
            "knn_all", "patchcore", "--k-neurons", str(k), "--no-progress", "--out", str(out), *TINY, *extra]


def cli_process(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lake_interp.cli", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_table(path, ref):
    """Row for row, column for column: keys equal, numbers equal (NaN = NaN; rtol 1e-6, as CPU float
    sums may differ with the thread count of a process)."""
    rows, expected = read_csv(path), read_csv(ref)
    assert len(rows) == len(expected) and rows and list(rows[0]) == list(expected[0])
    for r, e in zip(rows, expected):
        for k in e:
            if k in KEYS or k in ("path", "label", "defect"):
                assert r[k] == e[k], (k, r, e)
            else:
                np.testing.assert_allclose(float(r[k]), float(e[k]), rtol=1e-6, atol=1e-9, err_msg=k)


def assert_same_run(out, ref):
    assert_same_table(out / "results.csv", ref / "results.csv")
    for cat in ("disc", "grid"):
        assert_same_table(out / "scores" / f"{cat}.csv", ref / "scores" / f"{cat}.csv")
    assert json.loads((out / "run.json").read_text()) == json.loads((ref / "run.json").read_text())


def stamps(folder):
    """cell name -> (inode, mtime_ns) of the cell files of a folder: a rewritten (atomically replaced) file changes."""
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((Path(folder) / "cells").glob("*.json"))
            if not p.name.startswith(".")}  # not the temporary file of a cell being written


@pytest.fixture(scope="module")
def reference(root, tmp_path_factory):
    """The grid unsharded, in this process."""
    out = tmp_path_factory.mktemp("ref") / "b"
    assert main(bench_args(root, out)) == 0
    assert sorted(stamps(out)) == CELLS
    return out


@pytest.fixture(scope="module")
def sharded(root, reference, tmp_path_factory):
    """3 shards in 3 processes at once into one --out; shard 2 is killed (-9) after its first cell lands.
    Returns (out, the cells shard 2 had landed when killed)."""
    out = tmp_path_factory.mktemp("sharded") / "b"
    procs = [cli_process(bench_args(root, out, "--shard", f"{i}/3")) for i in range(3)]
    victim = out / "shards" / "2-of-3" / "cells"
    end = time.monotonic() + 180
    while not stamps(victim.parent):
        assert procs[2].poll() is None, procs[2].communicate()
        assert time.monotonic() < end
        time.sleep(0.005)
    procs[2].send_signal(signal.SIGKILL)
    assert procs[2].wait() == -signal.SIGKILL
    for p in procs[:2]:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr
        assert "lake-interp merge" in stdout
    return out, stamps(victim.parent)


# ----------------------------------------------------------------------------- shard assignment
def test_shards_partition_the_sorted_cells_in_contiguous_blocks():
    cells = grid("mvtec", ["zipper", "bottle", "cable"], [4, 1, 2], [2, 0, 1])
    for n in (1, 2, 3, 5, 27, 30):
        parts = [shard_cells(cells, i, n) for i in range(n)]
        assert sorted(c for p in parts for c in p) == sorted(cells)  # every cell once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        flat = [c for p in parts for c in sorted(p)]
        assert flat == sorted(cells, key=lambda c: (c.dataset, c.category, c.shots, c.seed))  # contiguous blocks
        # the same shards whatever order the grid is spelled in (other processes, other machines)
        assert [set(shard_cells(cells[::-1], i, n)) for i in range(n)] == [set(p) for p in parts]
        assert all(shard_of(c, cells, n) == i for i, p in enumerate(parts) for c in p)
    assert shard_cells(cells, 0, 27)[0] == Cell("mvtec", "bottle", 1, 0)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/3", "1/0", "a/3", "1", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_bad_sharding_options_fail_before_the_model_loads(root, tmp_path, capsys):
    for extra, said in ((["--shard", "3/3"], "0 <= I < N"), (["--jobs", "2"], "need --executor"),
                        (["--executor", "submitit-local"], "needs --jobs"),
                        (["--executor", "submitit-local", "--jobs", "2", "--shard", "0/2"], "give one of the two")):
        assert main(bench_args(root, tmp_path / "b", *extra)) == 2
        err = capsys.readouterr().err
        assert said in err and "RANDOM WEIGHTS" not in err
    assert not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- 3 processes, one killed
def test_three_shard_processes_merge_to_the_unsharded_results(sharded, reference, root, capsys):
    out, landed = sharded
    assert len(landed) == 1 and set(landed) < set(CELLS[2:])  # killed mid-run: one of its two cells landed
    assert sorted(stamps(out / "shards" / "0-of-3")) == CELLS[:1]
    assert sorted(stamps(out / "shards" / "1-of-3")) == CELLS[1:2]
    # the killed shard is missing a cell: merge refuses, naming it and its shard, and writes nothing
    missing = sorted(set(CELLS[2:]) - set(landed))
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 4 cells are missing" in err and f"shard 2/3 ({out / 'shards' / '2-of-3'})" in err and missing[0] in err
    assert not (out / "results.csv").exists() and not (out / "summary.md").exists()
    # the same command again: only the unfinished cell is computed, the landed one is kept as it is
    assert main(bench_args(root, out, "--shard", "2/3")) == 0
    err = capsys.readouterr().err
    assert "taking over the stale lock" in err and "1 of 2 cells already done" in err and "computing 1" in err
    after = stamps(out / "shards" / "2-of-3")
    assert sorted(after) == CELLS[2:] and all(after[c] == landed[c] for c in landed)
    assert main(["merge", str(out)]) == 0  # in place
    assert_same_run(out, reference)
    assert "INCOMPLETE" not in (out / "summary.md").read_text()


def test_submitit_local_executor_runs_the_jobs_and_merges(root, reference, tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' processes inherit it
    out = tmp_path / "b"
    args = bench_args(root, out, "--executor", "submitit-local", "--jobs", "2")
    assert main(args) == 0, capsys.readouterr().err
    assert "submitted 2 shard job(s) (submitit-local)" in capsys.readouterr().err
    assert sorted(stamps(out / "shards" / "0-of-2")) == CELLS[:2]
    assert sorted(stamps(out / "shards" / "1-of-2")) == CELLS[2:]
    assert_same_run(out, reference)
    before = {i: stamps(out / "shards" / f"{i}-of-2") for i in range(2)}
    assert main(args) == 0  # resubmitted: every shard finished, nothing submitted or recomputed
    assert "2 of 2 shards already finished" in capsys.readouterr().err
    assert {i: stamps(out / "shards" / f"{i}-of-2") for i in range(2)} == before
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- merge refusals
def test_merge_refuses_shards_of_different_runs(sharded, root, tmp_path, capsys):
    out, _ = sharded
    other = tmp_path / "other"
    for i in (0, 1):
        shutil.copytree(out / "shards" / f"{i}-of-3", other / "shards" / f"{i}-of-3")
    assert main(bench_args(root, other, "--shard", "2/3", k=8)) == 0  # another K: another run
    capsys.readouterr()
    assert main(["merge", str(other)]) == 2
    err = capsys.readouterr().err
    assert "hold different benchmark runs" in err and "config.k_neurons" in err and "'config'" not in err
    assert not (other / "results.csv").exists()
    # several folders: merged into --out; a cell copied into another run's shard folder is refused by its digest
    assert main(["merge", str(out / "shards" / "0-of-3"), str(other / "shards" / "2-of-3"), "--out",
                 str(tmp_path / "m")]) == 2
    assert "hold different benchmark runs" in capsys.readouterr().err
    stray = other / "shards" / "2-of-3"
    shutil.copy(out / "shards" / "2-of-3" / "run.json", stray / "run.json")  # its record says run 1, its cells run 2
    assert main(["merge", str(other)]) == 2
    assert "was computed under another run" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (other / "results.csv").exists()


def test_merge_of_missing_cells_partial_and_foreign_files(sharded, tmp_path, capsys):
    out, _ = sharded
    parts = [str(out / "shards" / f"{i}-of-3") for i in (0, 1)]
    merged = tmp_path / "m"
    assert main(["merge", *parts]) == 2
    assert "need --out" in capsys.readouterr().err
    assert main(["merge", *parts, "--out", str(merged), "--partial"]) == 0
    assert "INCOMPLETE: 2 of 4 cells missing" in capsys.readouterr().err
    summary = (merged / "summary.md").read_text()
    assert "**INCOMPLETE: 2 of 4 cells missing**" in summary and CELLS[2] in summary and CELLS[3] in summary
    rows = read_csv(merged / "results.csv")
    assert [(r["category"], r["seed"]) for r in rows] == [("disc", "0"), ("disc", "0"), ("disc", "1"), ("disc", "1")]
    assert (merged / "scores" / "disc.csv").is_file() and not (merged / "scores" / "grid.csv").exists()
    # a file merge did not write is never replaced
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "summary.md").write_text("mine")
    assert main(["merge", str(out), "--out", str(foreign), "--partial"]) == 2
    assert "did not write: summary.md" in capsys.readouterr().err
    assert (foreign / "summary.md").read_text() == "mine" and not (foreign / "results.csv").exists()


# ----------------------------------------------------------------------------- embedding once per category
def test_test_split_embedded_once_per_category_with_the_per_fit_numbers(root, tiny_model, tmp_path, monkeypatch):
    from lake_interp.benchmark import BenchmarkSpec, run_benchmark
    from lake_interp.data import load_dataset
    from lake_interp.detectors.patchcore import PatchCore
    from lake_interp.detectors.winclip import WinCLIP
    from lake_interp.evaluation import METRICS, fit_and_evaluate
    from lake_interp.shards import read_cell

    methods, seeds = ("patchcore", "winclip_plus"), (0, 1)
    test = load_dataset("mvtec", root, "disc", "test")
    train = load_dataset("mvtec", root, "disc", "train")
    expected = {}  # the independent path: a fresh detector per fit, the test split embedded by its own score
    for method in methods:
        for seed in seeds:
            values, result = fit_and_evaluate(tiny_model, method, train.few_shot(1, seed), test, class_name="disc",
                                              seed=seed, shots=1)
            expected[method, seed] = values, result.image_scores.tolist()
    calls = {}
    for cls in (PatchCore, WinCLIP):
        original = cls.embed
        monkeypatch.setattr(cls, "embed", lambda self, images, _o=original, _c=cls.__name__:
                            calls.__setitem__(_c, calls.get(_c, 0) + 1) or _o(self, images))
    spec = BenchmarkSpec("mvtec", str(root), "lake-tiny", None, categories=["disc"], shots=(1,), seeds=seeds,
                         methods=methods)
    rows = run_benchmark(tiny_model, spec, tmp_path / "b", progress=False)
    # per class: the test split once (4 images: one batch), each of the 2 supports once
    assert calls == {"PatchCore": 1 + 2, "WinCLIP": 1 + 2}
    for seed in seeds:
        cell = read_cell(tmp_path / "b" / "cells" / f"mvtec__disc__shots1__seed{seed}.json")
        for method in methods:
            row = next(r for r in rows if r["method"] == method and r["seed"] == seed)
            values, scores = expected[method, seed]
            np.testing.assert_allclose([row[m] for m in METRICS], [values[m] for m in METRICS], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(cell.scores[method], scores, rtol=1e-5, atol=1e-7)


def test_slurm_submission_of_the_shard_jobs(root, tmp_path, monkeypatch):
    """Without a cluster: sbatch and srun faked on PATH; the job array submitit writes for the shards."""
    pytest.importorskip("submitit")
    from lake_interp.benchmark import BenchmarkSpec
    from lake_interp.executors import make_executor, shard_job, submit_shards

    spec = BenchmarkSpec("mvtec", str(root), "lake-tiny", "none", shots=(1,), seeds=(0, 1), methods=("knn_all",))
    with pytest.raises(RuntimeError, match="sbatch is not on this machine's PATH.*submitit-local"):
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        make_executor("submitit", tmp_path / "logs", "gpu", None, 30)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 4242"\n')
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    executor = make_executor("submitit", tmp_path / "logs", "gpu", None, 29.5)
    jobs = submit_shards(executor, spec, {"model": "lake-tiny"}, tmp_path / "b", [0, 2], 3)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
    script = (tmp_path / "logs" / "4242_submission.sh").read_text()
    for line in ("#SBATCH --array=0-1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=30",
                 "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"):
        assert line in script
    calls = [j.submission() for j in jobs]
    assert all(c.function is shard_job for c in calls)
    assert [c.args[2:] for c in calls] == [(str(tmp_path / "b"), 0, 3), (str(tmp_path / "b"), 2, 3)]
