"""Safety, classes "outputs" and "concurrency": the one output policy (lake_interp/outputs.py).

Every case checks the clear error (or the correct result) and that no file that was there before
changed (sha256 of every file of the folder before and after). Concurrency and kill -9 cases run
real `python -m lake_interp.cli` processes; the disk-full case runs on a small tmpfs where this
machine lets us mount one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from lake_interp.cli import main
from lake_interp.data import make_synthetic_dataset
from lake_interp.outputs import LOCK, MANIFEST, TMP_MARK, OutputError, OutputFolder, safe_name

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def state(folder: Path) -> dict:
    """Every file under `folder` (relative path -> sha256), and every folder (-> 'dir')."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def unchanged(before: dict, folder: Path) -> bool:
    """No file of `before` changed or disappeared (new files may exist)."""
    after = state(folder)
    return all(after.get(k) == v for k, v in before.items())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc", "grid"], seed=3, image_size=64,
                                  n_train=2, n_test_good=1, n_test_defect=1, defects=["hole"])


@pytest.fixture(scope="module")
def detector(root, tmp_path_factory):
    det = tmp_path_factory.mktemp("det") / "det"
    assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--out", str(det), "--k-neurons", "4", *TINY]) == 0
    return det


@pytest.fixture(scope="module")
def images(root, tmp_path_factory):
    """12 images at 192 px (so that writing their overlays takes a measurable time)."""
    folder = tmp_path_factory.mktemp("imgs")
    src = sorted((root / "disc" / "test").rglob("*.png")) + sorted((root / "grid" / "test").rglob("*.png"))
    for i in range(12):
        Image.open(src[i % len(src)]).convert("RGB").resize((192, 192)).save(folder / f"img{i:02d}.png")
    return folder


def bench_args(root, out, categories=("disc", "grid")):
    return ["benchmark", "--dataset", "mvtec", "--root", str(root), "--categories", *categories, "--shots", "1",
            "--seeds", "0", "--methods", "lake", "--k-neurons", "4", "--no-progress", "--out", str(out), *TINY]


def cli_process(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lake_interp.cli", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, condition, timeout=120.0) -> bool:
    """Poll until `condition()`; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError


def locked_by(out: Path, pid: int):
    def check():
        try:
            return json.loads((out / LOCK).read_text()).get("pid") == pid
        except (OSError, ValueError):
            return False
    return check


# ============================================================================ outputs
class TestOutputPolicy:
    def test_figures_refuses_a_foreign_readme(self, tiny_model, tmp_path):
        from lake_interp.study import StudyConfig, run_study

        out = tmp_path / "figs"
        out.mkdir()
        (out / "README.md").write_text("my notes")
        (out / "fig1_selected_vs_random.png").write_bytes(b"my figure")
        before = state(out)
        cfg = StudyConfig(model="lake-tiny", pretrained=None, categories=["disc"], shots=[1], seeds=[0], k_values=[4],
                          text_weights=[0.0], lake={"k_neurons": 4}, synthetic={"image_size": 64, "n_train": 2})
        with pytest.raises(OutputError, match=r"would overwrite and did not write: README\.md, fig1_selected_vs_random\.png"):
            run_study(tiny_model, cfg, out)
        assert state(out) == before  # nothing written, nothing left behind (no lock, no manifest)

    def test_demo_refuses_foreign_reports_and_keeps_a_user_partial_folder(self, tmp_path, capsys):
        out = tmp_path / "demo"
        (out / "data.partial").mkdir(parents=True)
        (out / "data.partial" / "mine.txt").write_text("user data")
        (out / "report.md").write_text("my report")
        before = state(out)
        args = ["demo", "--out", str(out), "--categories", "disc", "--shots", "1", "--k-neurons", "4", "--no-progress", *TINY]
        assert main(args) == 2
        assert "report.md" in capsys.readouterr().err
        assert state(out) == before
        (out / "report.md").unlink()
        before = state(out)
        assert main(args) == 0
        assert unchanged(before, out) and (out / "report.md").is_file() and (out / "data" / "demo_data.json").is_file()
        assert not [p for p in out.rglob("*") if p.name.startswith(TMP_MARK)]

    def test_benchmark_refuses_foreign_results(self, root, tmp_path, capsys):
        out = tmp_path / "b"
        out.mkdir()
        (out / "results.csv").write_text("mine")
        (out / "summary.md").write_text("mine too")
        before = state(out)
        assert main(bench_args(root, out, ["disc"])) == 2
        err = capsys.readouterr().err
        assert "results.csv" in err and "summary.md" in err and "did not write" in err
        assert state(out) == before

    def test_score_refuses_foreign_maps_and_fit_a_foreign_tensor_file(self, root, detector, images, tmp_path, capsys):
        out = tmp_path / "s"
        (out / "maps").mkdir(parents=True)
        (out / "maps" / "img00_map.png").write_bytes(b"mine")
        before = state(out)
        assert main(["score", "--detector", str(detector), "--images", str(images), "--out", str(out)]) == 2
        assert "earlier scoring run" in capsys.readouterr().err and state(out) == before
        det = tmp_path / "d"
        det.mkdir()
        (det / "tensors.safetensors").write_bytes(b"mine")
        before = state(det)
        assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--out", str(det), "--k-neurons", "4", *TINY]) == 2
        assert "already holds a detector" in capsys.readouterr().err and state(det) == before

    def test_names_from_data_cannot_escape(self, tiny_model, root, tmp_path):
        from lake_interp.benchmark import BenchmarkSpec, run_benchmark

        for bad in ("..", "../x", "a/b", "", ".", MANIFEST, LOCK, "/etc"):
            with pytest.raises(OutputError, match="cannot be used as a file name"):
                safe_name(bad)
        spec = BenchmarkSpec("mvtec", str(root), "lake-tiny", None, categories=["../disc"], shots=[1], seeds=[0],
                             methods=["lake"], config={"k_neurons": 4})
        with pytest.raises(OutputError, match=r"category '\.\./disc'"):
            run_benchmark(tiny_model, spec, tmp_path / "b", progress=False)
        assert not (tmp_path / "b").exists()
        outside = tmp_path / "outside"
        outside.mkdir()
        out = tmp_path / "o"
        out.mkdir()
        (out / "maps").symlink_to(outside)
        with OutputFolder(out, "test") as o:
            with pytest.raises(OutputError, match="leads outside the output folder"):
                o.write_text("maps/x.png", "x")
        assert list(outside.iterdir()) == []

    def test_manifest_atomic_writes_and_ownership(self, tmp_path):
        out = tmp_path / "o"
        with OutputFolder(out, "test") as o:
            o.write_text("b.txt", "two")
            o.write_text("a/x.txt", "one")
            o.write_text("b.txt", "three")  # its own file: replaced
            assert o.owns("b.txt") and o.owns("a/x.txt")
        lines = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
        assert [e["path"] for e in lines] == ["a/x.txt", "b.txt"]
        assert lines[1]["sha256"] == hashlib.sha256(b"three").hexdigest() and lines[1]["size"] == 5
        assert not (out / LOCK).exists()
        (out / "b.txt").write_text("edited by the user")  # no longer what the manifest records: foreign
        (out / "c.txt").write_text("same")
        before = state(out)
        with OutputFolder(out, "test") as o:
            with pytest.raises(OutputError, match=r"did not write: b\.txt"):
                o.write_text("b.txt", "four")
            o.write_text("c.txt", "same")  # byte-identical: nothing to write, the file is left alone
            with pytest.raises(OutputError, match="c.txt"):
                o.write_text("c.txt", "other")
        assert state(out) == before

    def test_bench_json_refuses_a_foreign_file(self, tmp_path, capsys):
        target = tmp_path / "notes.json"
        target.write_text('{"mine": 1}')
        assert main(["bench", "--quick", "--json", str(target)]) == 2
        assert "not a result of lake-interp bench" in capsys.readouterr().err
        assert target.read_text() == '{"mine": 1}'
        assert main(["bench", "--quick", "--json", str(tmp_path)]) == 2
        assert "is a folder" in capsys.readouterr().err
        for arg in ("--batch", "--repeats", "--threads", "--metrics-n"):
            assert main(["bench", "--quick", arg, "0"]) == 2
            assert f"{arg} must be a positive integer, got 0" in capsys.readouterr().err


# ============================================================================ concurrency
class TestConcurrency:
    def test_second_run_into_the_same_out_is_refused(self, detector, images, tmp_path):
        """Two `score` runs into one --out at once: the second is refused (naming the first), the
        first finishes, and its files are those of a run alone."""
        out, ref = tmp_path / "s", tmp_path / "ref"
        args = ["score", "--detector", str(detector), "--images", str(images), "--out"]
        a = cli_process([*args, str(out)])
        assert wait_for(a, locked_by(out, a.pid)), a.communicate()
        os.kill(a.pid, signal.SIGSTOP)  # hold it inside its run, deterministically
        try:
            before = state(out)
            b = cli_process([*args, str(out)])
            _, err = b.communicate(timeout=120)
            assert b.returncode == 2, err
            assert f"is in use by another lake-interp run (pid {a.pid} on host" in err
            assert state(out) == before
        finally:
            os.kill(a.pid, signal.SIGCONT)
        _, err = a.communicate(timeout=120)
        assert a.returncode == 0, err
        assert main([*args, str(ref)]) == 0
        assert state(out) == state(ref)

    def test_two_different_benchmarks_at_once(self, root, tmp_path, capsys):
        out = tmp_path / "b"
        a = cli_process(bench_args(root, out, ["disc"]))
        assert wait_for(a, locked_by(out, a.pid)), a.communicate()
        os.kill(a.pid, signal.SIGSTOP)
        try:
            before = state(out)
            assert main(bench_args(root, out, ["grid"])) == 2  # another benchmark, in this process
            assert "is in use by another lake-interp run" in capsys.readouterr().err
            assert state(out) == before
        finally:
            os.kill(a.pid, signal.SIGCONT)
        assert a.wait(timeout=120) == 0


# ============================================================================ kill -9, then the same command
@pytest.fixture(scope="module")
def bench_reference(root, tmp_path_factory):
    """The benchmark run uninterrupted."""
    ref = tmp_path_factory.mktemp("ref") / "b"
    assert main(bench_args(root, ref)) == 0
    return state(ref)


class TestKillAndRerun:
    @pytest.mark.parametrize("point", ["locked", "run_json", "first_category"])
    def test_benchmark_killed(self, root, tmp_path, point, capsys, bench_reference):
        out = tmp_path / "b"
        proc = cli_process(bench_args(root, out))
        conditions = {
            "locked": locked_by(out, proc.pid),
            "run_json": lambda: (out / "run.json").is_file(),
            "first_category": lambda: (out / "categories" / "disc.csv").is_file(),
        }
        assert wait_for(proc, conditions[point]), proc.communicate()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert main(bench_args(root, out)) == 0  # the same command
        assert "taking over the stale lock" in capsys.readouterr().err
        assert state(out) == bench_reference  # byte-identical, manifest included; no temporary files left

    def test_score_killed_while_writing_maps(self, detector, images, tmp_path):
        out, ref = tmp_path / "s", tmp_path / "ref"
        args = ["score", "--detector", str(detector), "--images", str(images), "--out"]
        proc = cli_process([*args, str(out)])
        assert wait_for(proc, lambda: "maps/" in ((out / MANIFEST).read_text() if (out / MANIFEST).is_file() else "")), \
            proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "scores.csv").exists()
        assert main([*args, str(out)]) == 0
        assert main([*args, str(ref)]) == 0
        assert state(out) == state(ref)


# ============================================================================ disk full
@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the disk-full case needs one")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


class TestDiskFull:
    def test_full_disk_is_a_clean_error_and_the_rerun_works(self, root, small_tmpfs, capsys):
        det = small_tmpfs / "det"
        det.mkdir()
        (det / "notes.txt").write_text("keep me")
        filler = small_tmpfs / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(filler, filler.stat().st_size - 8192)  # room for the lock and the manifest, not the detector
        before = state(det)
        fit = ["fit", "--normal", str(root / "disc" / "train" / "good"), "--out", str(det), "--k-neurons", "4", *TINY]
        assert main(fit) == 2
        err = capsys.readouterr().err
        assert "writing" in err and "no space left on device" in err and "run the same command again" in err
        assert unchanged(before, det)
        assert not (det / "lake.json").exists()
        assert not [p for p in det.rglob("*") if p.name.startswith(TMP_MARK)]  # no partial file left behind
        filler.unlink()
        assert main(fit) == 0  # nothing blocks the rerun
        assert (det / "lake.json").is_file() and (det / "notes.txt").read_text() == "keep me"
