"""Guards of the long-running commands: bad input fails before any work or record, a resumed or
re-run command into the same folder never mixes or loses runs, per-image scores are kept."""

import csv
import json
import shutil
import warnings
from dataclasses import asdict

import pytest

from lake_interp.benchmark import BenchmarkSpec, run_benchmark
from lake_interp.cli import main
from lake_interp.data import BTAD, DatasetError, MVTecAD, MVTecLOCO, VisA, load_dataset, make_synthetic_dataset
from lake_interp.lake import LakeConfig

TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc"], seed=2, image_size=64,
                                  n_train=2, n_test_good=1, n_test_defect=1, defects=["hole", "stain"])


def spec(root, **kw):
    kw = {"categories": ["disc"], "shots": (1,), "seeds": (0,), "methods": ("lake",), "config": {"k_neurons": 4},
          **kw}
    return BenchmarkSpec("mvtec", str(root), "lake-tiny", None, **kw)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- data: unknown folders and missing categories ------------------------------------------------------

def test_folder_layout_refuses_unknown_subfolders(root):
    with pytest.raises(DatasetError, match="unknown folder layout") as e:
        load_dataset("folder", root, "disc", "test")  # an MVTec tree: hole/, stain/ are no folder-layout names
    msg = str(e.value)
    assert str(root / "disc" / "test") in msg and "'hole'" in msg and "anomaly/" in msg


@pytest.mark.parametrize("cls", [MVTecAD, VisA, BTAD, MVTecLOCO])
def test_a_missing_category_is_a_clear_error(cls, root):
    with pytest.raises(DatasetError, match="needs a category.*None.*'disc'"):
        cls(root, category=None)


# --- benchmark: up-front checks ---------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["anomaly", "good"])
def test_benchmark_refuses_a_one_class_test_split(root, tmp_path, tiny_model, missing):
    cat = tmp_path / "data" / "brain"
    for split, folder in (("train", "good"), ("test", "good"), ("test", "anomaly")):
        (cat / split / folder).mkdir(parents=True)
        shutil.copy(root / "disc" / "train" / "good" / "000.png", cat / split / folder / "0.png")
    shutil.rmtree(cat / "test" / missing)
    bad = BenchmarkSpec("folder", str(tmp_path / "data"), "lake-tiny", None, shots=(1,), seeds=(0,),
                        methods=("lake",), config={"k_neurons": 4})
    kind = "anomalous" if missing == "anomaly" else "normal"
    with pytest.raises(ValueError, match=f"category 'brain'.*{cat / 'test'}.*no {kind} images"):
        run_benchmark(tiny_model, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "run.json").exists() and not (tmp_path / "out" / "categories").exists()


@pytest.mark.parametrize("resolution", [0, -3, 2.5, True])
def test_benchmark_refuses_a_bad_resolution(root, tmp_path, tiny_model, resolution):
    with pytest.raises(ValueError, match=r"resolution \(--resolution\) must be a positive integer"):
        run_benchmark(tiny_model, spec(root, resolution=resolution), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, values", [("seeds", [0, 0]), ("shots", [1, 1]), ("methods", ["lake", "lake"])])
def test_benchmark_refuses_a_value_listed_twice(root, tmp_path, tiny_model, field, values):
    with pytest.raises(ValueError, match=rf"{field} \(--{field}\) lists a value twice"):
        run_benchmark(tiny_model, spec(root, **{field: values}), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_resolution_zero_fails_cleanly(root, tmp_path, capsys):
    args = ["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "--seeds", "0", "--methods",
            "lake", "--k-neurons", "4", "--resolution", "0", "--no-progress", "--out", str(tmp_path / "b"), *TINY]
    assert main(args) == 2
    assert "resolution (--resolution)" in capsys.readouterr().err
    assert not (tmp_path / "b" / "categories").exists()


# --- benchmark: resume guard compares the resolved run -------------------------------------------------

def test_resume_compares_the_resolved_run(root, tmp_path, tiny_model, monkeypatch):
    import lake_interp.benchmark as bench

    out = tmp_path / "b"
    first = run_benchmark(tiny_model, spec(root, categories=None), out, progress=False)
    monkeypatch.setattr(bench, "_run_category", lambda *a: pytest.fail("a finished category was recomputed"))
    # the default spelled out, the category list that `None` resolves to: the same run
    same = spec(root, categories=["disc"], config={"k_neurons": 4, "text_weight": 0.3})
    assert run_benchmark(tiny_model, same, out, progress=False) == first
    record = json.loads((out / "run.json").read_text())
    assert record["config"] == json.loads(json.dumps(LakeConfig(k_neurons=4).to_dict()))
    assert record["categories"] == ["disc"]
    # a record of the previous version: overrides only, categories null, no dtype
    old = {**record, "config": {"k_neurons": 4}, "categories": None}
    del old["dtype"]
    (out / "run.json").write_text(json.dumps(old))
    assert run_benchmark(tiny_model, same, out, progress=False) == first
    # a run recorded under other defaults (here: sigma) is not resumed silently
    (out / "run.json").write_text(json.dumps({**record, "config": {**record["config"], "sigma": 2.0}}))
    with pytest.raises(ValueError, match=r"different benchmark run.*config\.sigma"):
        run_benchmark(tiny_model, same, out, progress=False)
    with pytest.raises(ValueError, match=r"different benchmark run.*config\.text_weight"):
        run_benchmark(tiny_model, spec(root, config={"k_neurons": 4, "text_weight": 0.5}), out, progress=False)


def test_benchmark_writes_per_image_scores(root, tmp_path, tiny_model):
    out = tmp_path / "b"
    rows = run_benchmark(tiny_model, spec(root, seeds=(0, 1), methods=("lake", "text_dense")), out, progress=False)
    scores = read_csv(out / "scores" / "disc.csv")
    test = MVTecAD(root, "disc", "test")
    assert [r["path"] for r in scores] == [p.relative_to(root).as_posix() for p in test.paths]
    assert [int(r["label"]) for r in scores] == test.labels.tolist()
    columns = ["lake_1shot_seed0", "text_dense_1shot_seed0", "lake_1shot_seed1", "text_dense_1shot_seed1"]
    assert list(scores[0]) == ["path", "label", "defect", *columns]
    from lake_interp.metrics import image_metrics

    for r in rows:  # the scores are those behind results.csv
        s = [float(x[f"{r['method']}_1shot_seed{r['seed']}"]) for x in scores]
        assert image_metrics(s, test.labels)["auroc"] == pytest.approx(r["image_auroc"])


# --- figures: validate everything, then claim the folder --------------------------------------------------

def study(**kw):
    from lake_interp.study import StudyConfig

    return StudyConfig(**{"model": "lake-tiny", "pretrained": None, "categories": ["disc"], "shots": [1],
                          "seeds": [0], "k_values": [4], "text_weights": [0.0, 1.0], "lake": {"k_neurons": 4},
                          "synthetic": {"image_size": 64, "n_train": 2}, **kw})


def test_figures_validate_before_writing_and_refuse_another_study(root, tmp_path, tiny_model, monkeypatch):
    import lake_interp.study as st

    out = tmp_path / "figs"
    out.mkdir()
    earlier = json.dumps(asdict(study()), indent=1)
    (out / "study_config.json").write_text(earlier)
    for bad, field in ((study(k_values=[4, 500]), "k_values"), (study(text_weights=[0.5, 1.5]), "text_weights"),
                       (study(dataset="mvtec_loco"), "root"), (study(dataset="imagenet"), "dataset"),
                       (study(categories=["nosuch"]), "categories"), (study(lake={"k_neuron": 4}), "lake"),
                       (study(shots=[1, 3]), "shots"), (study(shots=[1, 1]), "shots"),
                       (study(seeds=[-1]), "seeds")):
        with pytest.raises(ValueError) as e:
            st.run_study(tiny_model, bad, out)
        assert (out / "study_config.json").read_text() == earlier, field
        assert f"'{field}'" in str(e.value)
    with pytest.raises(DatasetError, match="nosuch"):
        st.run_study(tiny_model, study(dataset="mvtec", root=str(root), categories=["nosuch"]), out)
    with pytest.raises(ValueError, match=f"{out} holds the figures of a different study.*k_values.*another --out"):
        st.run_study(tiny_model, study(k_values=[4, 8]), out)
    assert (out / "study_config.json").read_text() == earlier

    class Started(Exception):
        pass

    def started(*a, **k):
        raise Started

    monkeypatch.setattr(st, "run_benchmark", started)
    with pytest.raises(Started):  # the same study resumes
        st.run_study(tiny_model, study(), out)
    with pytest.raises(Started):  # a new folder is claimed
        st.run_study(tiny_model, study(dataset="mvtec", root=str(root)), tmp_path / "new")
    assert json.loads((tmp_path / "new" / "study_config.json").read_text())["root"] == str(root)


def test_depth_probe_does_not_warn_about_k1(root, tiny_model):
    from lake_interp.study import _depth_figure

    support = MVTecAD(root, "disc", "train").few_shot(1, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _depth_figure(tiny_model, LakeConfig(k_neurons=4), support, "disc")
    assert not [w for w in caught if "compares only signs" in str(w.message)]


# --- demo: regenerates its data when categories or seed change ----------------------------------------------

def test_demo_regenerates_its_data_when_the_request_changes(tmp_path, capsys):
    out = tmp_path / "demo"
    run = ["demo", "--out", str(out), "--shots", "1", "--k-neurons", "4", *TINY]
    assert main([*run, "--categories", "disc"]) == 0
    first = (out / "data" / "disc" / "train" / "good" / "000.png").read_bytes()
    assert main([*run, "--categories", "disc", "bolt"]) == 0
    assert "| bolt |" in (out / "report.md").read_text()
    assert main([*run, "--categories", "disc", "--seed", "1"]) == 0
    assert (out / "data" / "disc" / "train" / "good" / "000.png").read_bytes() != first
    assert not (out / "data" / "bolt").exists()
    # a data folder the demo did not write (no record) is never deleted, even one named like its
    # categories (MVTec AD has a real "grid"): refused, kept as it was
    (out / "data" / "demo_data.json").unlink()
    (out / "data" / "grid" / "train" / "good").mkdir(parents=True)
    (out / "data" / "grid" / "train" / "good" / "mine.png").write_bytes(b"user data")
    assert main([*run, "--categories", "disc"]) == 2
    assert "not written by this demo" in capsys.readouterr().err
    assert (out / "data" / "grid" / "train" / "good" / "mine.png").read_bytes() == b"user data"
    assert (out / "data" / "disc" / "train" / "good" / "000.png").exists()

