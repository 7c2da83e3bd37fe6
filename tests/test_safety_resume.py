"""Safety, class "resume": run.json records every input file per category (size, mtime); a resume
recomputes exactly the categories whose inputs changed, saying so, and the result is the one a
fresh run gives; empty roots and damaged records are clear errors that change nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import lake_interp.benchmark as bench
from lake_interp.benchmark import BenchmarkSpec, run_benchmark
from lake_interp.data import make_synthetic_dataset


def state(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc", "grid"], seed=6, image_size=64,
                                  n_train=2, n_test_good=1, n_test_defect=1, defects=["hole"])


@pytest.fixture
def root(pristine, tmp_path):
    dest = tmp_path / "data"
    shutil.copytree(pristine, dest)  # copy2: same mtimes in every copy
    return dest


def spec(root, **kw):
    return BenchmarkSpec("mvtec", str(root), "lake-tiny", None, **{"categories": None, "shots": (1,), "seeds": (0,),
                                                                    "methods": ("lake",), "config": {"k_neurons": 4}, **kw})


@pytest.fixture
def computed(monkeypatch):
    seen = []
    original = bench._run_category

    def spy(model, spec, base, category, *rest):
        seen.append(category)
        return original(model, spec, base, category, *rest)

    monkeypatch.setattr(bench, "_run_category", spy)
    return seen


class TestResumeVerification:
    def test_run_json_records_inputs(self, root, tiny_model, tmp_path):
        out = tmp_path / "b"
        run_benchmark(tiny_model, spec(root), out, progress=False)
        inputs = json.loads((out / "run.json").read_text())["inputs"]
        assert sorted(inputs) == ["disc", "grid"]
        expected = sorted(p for p in (root / "disc").rglob("*.png"))
        assert [r[0] for r in inputs["disc"]] == [p.relative_to(root).as_posix() for p in expected]
        assert all(r[1] == os.stat(root / r[0]).st_size and r[2] == os.stat(root / r[0]).st_mtime_ns
                   for r in inputs["disc"])

    @pytest.mark.parametrize("change", ["modified", "added", "removed", "mask_modified"])
    def test_changed_category_is_recomputed_and_said(self, root, tiny_model, tmp_path, computed, capsys, change):
        out = tmp_path / "b"
        run_benchmark(tiny_model, spec(root), out, progress=False)
        assert computed == ["disc", "grid"]
        computed.clear()
        good = sorted((root / "grid" / "test" / "good").glob("*.png"))
        if change == "modified":
            img = np.asarray(Image.open(good[0]))
            Image.fromarray(np.ascontiguousarray(img[::-1])).save(good[0])
        elif change == "added":
            shutil.copy(good[0], good[0].with_name("900.png"))
        elif change == "removed":
            shutil.copy(good[0], good[0].with_name("900.png"))  # keep a normal test image
            good[0].unlink()
        else:
            mask = sorted((root / "grid" / "ground_truth").rglob("*.png"))[0]
            m = np.asarray(Image.open(mask)).copy()
            m[:8, :8] = 255
            Image.fromarray(m).save(mask)
        run_benchmark(tiny_model, spec(root), out, progress=False)
        assert computed == ["grid"]  # only the changed category
        err = capsys.readouterr().err
        assert "input files of category 'grid' changed" in err and "recomputing it" in err
        fresh = tmp_path / "fresh"
        run_benchmark(tiny_model, spec(root), fresh, progress=False)
        assert state(out) == state(fresh)  # the resumed folder is what a fresh run writes

    def test_unchanged_inputs_resume_without_recomputing(self, root, tiny_model, tmp_path, computed):
        out = tmp_path / "b"
        first = run_benchmark(tiny_model, spec(root), out, progress=False)
        computed.clear()
        assert run_benchmark(tiny_model, spec(root), out, progress=False) == first
        assert computed == []

    def test_empty_root_and_root_too_deep_are_errors(self, root, tiny_model, tmp_path):
        empty = tmp_path / "empty"
        empty.mkdir()
        for bad in (empty, root / "disc"):
            with pytest.raises(ValueError, match="no mvtec categories under --root"):
                run_benchmark(tiny_model, spec(bad), tmp_path / "b", progress=False)
            assert not (tmp_path / "b").exists()

    @pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
    def test_damaged_run_json_is_named(self, root, tiny_model, tmp_path, content):
        out = tmp_path / "b"
        run_benchmark(tiny_model, spec(root), out, progress=False)
        (out / "run.json").write_text(content)
        before = state(out)
        with pytest.raises(ValueError, match=r"run\.json is not a (readable )?run record"):
            run_benchmark(tiny_model, spec(root), out, progress=False)
        assert state(out) == before
