"""The CLI and the benchmark harness on a small synthetic dataset with the tiny random model."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lake_interp.cli import main
from lake_interp.data import make_synthetic_dataset

TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc", "grid"], seed=1,
                                  image_size=64, n_train=4, n_test_good=2, n_test_defect=1)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_hooks_lists_every_hook(capsys):
    assert main(["hooks", *TINY, "--filter", "visual.blocks.3.mlp"]) == 0
    out = capsys.readouterr()
    assert "visual.blocks.3.mlp.hook_post" in out.out and "[1, 65, 256]" in out.out
    assert "RANDOM WEIGHTS" in out.err
    assert main(["hooks", *TINY, "--filter", "visual.block.3"]) == 2
    assert "no hook name starts with 'visual.block.3'" in capsys.readouterr().err


def test_benchmark_writes_tables_and_resumes(root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    args = ["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "2", "--seeds", "0", "1",
            "--out", str(out), "--k-neurons", "8", "--no-progress", *TINY]
    assert main(args) == 0
    rows = read_csv(out / "results.csv")
    from lake_interp.detectors.methods import default_methods

    methods = default_methods()  # every method of the table this installation has
    assert {"lake", "lake_random", "knn_all", "text_dense"} <= set(methods)
    assert len(rows) == 2 * len(methods) * 2 * 2  # categories x methods x shots x seeds
    assert {r["method"] for r in rows} == set(methods)
    assert all(0.0 <= float(r["pixel_auroc"]) <= 1.0 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| lake_random | 2 |" in summary and "RANDOM WEIGHTS" in summary
    assert (out / "categories" / "disc.csv").is_file()

    # resume: finished categories are read back, not recomputed
    for cell in (out / "cells").glob("mvtec__grid__*.json"):  # the cells of one category
        cell.unlink()
    import lake_interp.benchmark as bench

    computed = []
    original = bench._run_category
    monkeypatch.setattr(bench, "_run_category", lambda m, s, b, cat, *a: computed.append(cat) or original(m, s, b, cat, *a))
    assert main(args) == 0
    assert computed == ["grid"]
    assert len(read_csv(out / "results.csv")) == len(rows)

    # a different run into the same folder is refused, nothing is lost
    assert main([*args[:5], "--shots", "1", *args[8:]]) == 2
    assert "different benchmark run" in capsys.readouterr().err
    assert len(read_csv(out / "results.csv")) == len(rows)


def test_fit_then_score_writes_overlays_at_original_size(root, tmp_path):
    det, scored = tmp_path / "det", tmp_path / "scored"
    normal = root / "disc" / "train" / "good"
    assert main(["fit", "--normal", str(normal), "--class-name", "disc", "--out", str(det), "--k-neurons", "8", "--shots", "2", *TINY]) == 0
    meta = json.loads((det / "lake.json").read_text())
    assert meta["class_name"] == "disc" and meta["config"]["k_neurons"] == 8
    images = tmp_path / "to_score"
    images.mkdir()
    Image.new("RGB", (90, 50), (200, 30, 30)).save(images / "wide.png")
    Image.open(root / "disc" / "test" / "good" / "000.png").save(images / "good.png")
    assert main(["score", "--detector", str(det), "--images", str(images), "--out", str(scored)]) == 0
    rows = read_csv(scored / "scores.csv")
    assert [r["path"].split("/")[-1] for r in rows] == ["good.png", "wide.png"]
    assert Image.open(scored / "maps" / "wide_overlay.png").size == (90, 50)
    assert Image.open(scored / "maps" / "good_map.png").size == (64, 64)


def test_fit_in_fp16_scores_in_the_detectors_precision(root, tmp_path, capsys, recwarn):
    det = tmp_path / "det16"
    normal = root / "disc" / "train" / "good"
    assert main(["fit", "--normal", str(normal), "--out", str(det), "--k-neurons", "8", "--precision", "fp16", *TINY]) == 0
    assert json.loads((det / "lake.json").read_text())["model"]["dtype"] == "fp16"
    images = root / "disc" / "test" / "good"
    assert main(["score", "--detector", str(det), "--images", str(images), "--out", str(tmp_path / "s16")]) == 0
    assert not [w for w in recwarn if "fitted in fp16" in str(w.message)]  # scored in fp16, the detector's
    assert main(["fit", "--normal", str(normal), "--out", str(tmp_path / "det32"), "--k-neurons", "8", *TINY]) == 0
    assert main(["score", "--detector", str(tmp_path / "det32"), "--images", str(images), "--out", str(tmp_path / "s"),
                 "--precision", "bf16"]) == 2
    assert "--precision fp32" in capsys.readouterr().err
    assert len(read_csv(tmp_path / "s16" / "scores.csv")) == len(list(images.iterdir()))


def test_cli_bad_inputs_are_clear(root, tmp_path, capsys):
    assert main(["fit", "--normal", str(tmp_path / "nope"), "--out", str(tmp_path / "d"), *TINY]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--out", str(tmp_path / "d"), *TINY,
                 "--k-neurons", "100"]) == 2
    assert "k_neurons=100 is larger than the width 64" in capsys.readouterr().err
    assert main(["score", "--detector", str(tmp_path), "--images", str(root), "--out", str(tmp_path / "s")]) == 2
    assert "lake.json" in capsys.readouterr().err
    assert main(["benchmark", "--dataset", "mvtec", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "b"), *TINY]) == 2
    assert "none" in capsys.readouterr().err


def test_cli_keeps_earlier_outputs_and_names_damaged_files(root, tmp_path, capsys):
    """fit and score never write over an earlier detector or scoring run; damaged detector files,
    a malformed --config and an unusable --device are errors naming them."""
    det, normal = tmp_path / "det", root / "disc" / "train" / "good"
    fit = ["fit", "--normal", str(normal), "--out", str(det), "--k-neurons", "8", *TINY]
    assert main(fit) == 0
    saved = (det / "lake.json").read_bytes()
    assert main([*fit[:-len(TINY)], "--k-neurons", "4", *TINY]) == 2
    assert "already holds a detector" in capsys.readouterr().err and (det / "lake.json").read_bytes() == saved
    (tmp_path / "afile").write_text("x")
    assert main(["fit", "--normal", str(normal), "--out", str(tmp_path / "afile"), "--k-neurons", "8", *TINY]) == 2
    assert "afile is a file" in capsys.readouterr().err

    images = tmp_path / "same_stem"
    images.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(images / "a.png")
    Image.new("RGB", (50, 20), (200, 30, 30)).save(images / "a.jpg")
    out = tmp_path / "scored"
    assert main(["score", "--detector", str(det), "--images", str(images), "--out", str(out)]) == 0
    rows = read_csv(out / "scores.csv")
    assert sorted(r["maps"] for r in rows) == ["maps/a_jpg_map.png", "maps/a_png_map.png"]
    assert Image.open(out / "maps" / "a_jpg_overlay.png").size == (50, 20)
    assert Image.open(out / "maps" / "a_png_overlay.png").size == (40, 30)
    before = (out / "scores.csv").read_bytes()
    assert main(["score", "--detector", str(det), "--images", str(normal), "--out", str(out)]) == 2
    assert "earlier scoring run" in capsys.readouterr().err and (out / "scores.csv").read_bytes() == before

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "lake.json").write_bytes(saved)
    (broken / "tensors.safetensors").write_bytes((det / "tensors.safetensors").read_bytes()[:20])
    assert main(["score", "--detector", str(broken), "--images", str(images), "--out", str(tmp_path / "s1")]) == 2
    assert "tensors.safetensors cannot be read" in capsys.readouterr().err
    (broken / "lake.json").write_bytes(saved[:50])
    assert main(["score", "--detector", str(broken), "--images", str(images), "--out", str(tmp_path / "s2")]) == 2
    assert "lake.json is not valid JSON" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{k_neurons: 8}")
    assert main([*fit[:4], str(tmp_path / "d2"), "--config", str(tmp_path / "bad.json"), *TINY]) == 2
    assert "--config" in (err := capsys.readouterr().err) and "bad.json is not valid JSON" in err
    assert main(["hooks", "--model", "lake-tiny", "--pretrained", "none", "--device", "gpu"]) == 2
    assert "device 'gpu' is not a torch device" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_without_cuda_says_so(capsys):
    assert main(["hooks", "--model", "lake-tiny", "--pretrained", "none", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "could not load pretrained weights" not in err


def test_demo_writes_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--categories", "disc", *TINY]) == 0
    report = (out / "report.md").read_text()
    assert "RANDOM WEIGHTS" in report and "| disc |" in report
    page = (out / "report.html").read_text()
    assert "RANDOM WEIGHTS" in page and page.count("<tr>") == 2 and "<td>disc</td>" in page
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 6  # one per defect type and one normal image
    for png in pngs:
        assert f"images/{png.name}" in report and f"images/{png.name}" in page
        panel = np.asarray(Image.open(png))
        assert panel.shape[0] == 256 and panel.shape[1] > 3 * 256  # image | mask | map
        third = (panel.shape[1] - 8) // 3
        mask_tile = panel[:, third + 4 : 2 * third + 4]
        assert (mask_tile.max() == 255) == ("good" not in png.name)  # the ground truth is drawn


def test_benchmark_resumes_from_the_python_api_with_tuples(root, tmp_path, tiny_model):
    from lake_interp.benchmark import BenchmarkSpec, run_benchmark

    spec = BenchmarkSpec("mvtec", str(root), "lake-tiny", None, categories=("disc",), shots=(1,), seeds=(0,),
                         methods=("lake",), config={"k_neurons": 4, "layers": (0.5, 1.0)})
    first = run_benchmark(tiny_model, spec, tmp_path / "b", progress=False)
    again = run_benchmark(tiny_model, spec, tmp_path / "b", progress=False)
    assert first == again and len(first) == 1
    import copy

    other = copy.deepcopy(tiny_model)
    with __import__("torch").no_grad():
        other.visual.proj.add_(1.0)
    with pytest.raises(ValueError, match="weights_sha256"):
        run_benchmark(other, spec, tmp_path / "b", progress=False)


def test_a_failed_benchmark_start_does_not_block_the_corrected_run(root, tmp_path, tiny_model, monkeypatch):
    from lake_interp.benchmark import BenchmarkSpec, run_benchmark

    out = tmp_path / "b"
    spec = BenchmarkSpec("mvtec", str(root), "lake-tiny", None, categories=("disc",), shots=(1,), seeds=(0,),
                         methods=("lake",), config={"k_neurons": 100})
    with pytest.raises(ValueError, match="k_neurons=100 is larger than the width 64.*--k-neurons"):
        run_benchmark(tiny_model, spec, out, progress=False)
    fixed = BenchmarkSpec(**{**spec.__dict__, "config": {"k_neurons": 4}})
    with pytest.raises(Exception, match="nosuch"):
        run_benchmark(tiny_model, BenchmarkSpec(**{**fixed.__dict__, "categories": ("nosuch",)}), out, progress=False)
    assert not (out / "run.json").exists()
    assert len(run_benchmark(tiny_model, fixed, out, progress=False)) == 1
    # the same root written another way is the same run
    monkeypatch.chdir(root.parent)
    relative = BenchmarkSpec(**{**fixed.__dict__, "root": root.name + "/"})
    assert len(run_benchmark(tiny_model, relative, out, progress=False)) == 1


def test_output_names_are_distinct_and_stems_where_possible():
    from pathlib import Path

    from lake_interp.scoring import output_names

    assert output_names([Path("x/good.png"), Path("x/wide.jpg")]) == ["good", "wide"]
    for names in (["a.png", "a.jpg", "a_png.bmp", "a_png_0.gif"], ["x/a.png", "y/a.png", "a_png_1.png"],
                  ["a.png", "a_png_1.png", "a.jpg"]):
        got = output_names([Path(n) for n in names])
        assert len(set(got)) == len(got), (names, got)


# --- predict like a deployed detector: fit stores thresholds, score decides (tests/test_predict.py: the rules)

@pytest.fixture
def no_model(monkeypatch):
    """The CLI may not load a model: every cheap check must come first."""
    import lake_interp.cli as cli

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the cheap checks")

    monkeypatch.setattr(cli, "load_model", refuse)


@pytest.fixture(scope="module")
def fitted(root, tmp_path_factory):
    """A detector fitted by the CLI without --class-name, on 3 support images (thresholds: leave one out)."""
    import contextlib
    import io

    det = tmp_path_factory.mktemp("fitted") / "det"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--shots", "3", "--out", str(det),
                     "--k-neurons", "8", *TINY]) == 0
    return det, out.getvalue()


def test_fit_derives_the_class_name_and_stores_a_leave_one_out_threshold(fitted):
    det, stdout = fitted
    meta = json.loads((det / "lake.json").read_text())
    assert "class name 'disc' (from the folder name of" in stdout and meta["class_name"] == "disc"
    assert meta["threshold"]["method"] == "support_leave_one_out_quantile" and meta["threshold"]["details"]["n_normal"] == 3
    assert "thresholds image" in stdout and len(meta["support"]) == 3
    from lake_interp.cli import derive_class_name

    assert derive_class_name(Path("/data/metal_nut/train/good")) == "metal nut"
    assert derive_class_name(Path("/data/screws/images")) == "screws"


def test_fit_k_is_refused_with_the_hint(root, tmp_path, capsys, no_model):
    assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--k", "2", "--out", str(tmp_path / "d"),
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "--k was renamed --shots" in err and "--shots 2" in err and "--k-neurons" in err
    assert not (tmp_path / "d").exists()


def test_fit_on_a_labelled_validation_split_is_f1_optimal(root, tmp_path, capsys):
    import shutil

    val = tmp_path / "val"
    for d in ("good", "anomaly", "mask"):
        (val / d).mkdir(parents=True)
    for p in (root / "disc" / "test" / "good").glob("*.png"):
        shutil.copy(p, val / "good" / p.name)
    for defect in (d for d in (root / "disc" / "test").iterdir() if d.name != "good"):
        for p in defect.glob("*.png"):
            shutil.copy(p, val / "anomaly" / f"{defect.name}_{p.name}")
            shutil.copy(root / "disc" / "ground_truth" / defect.name / f"{p.stem}_mask.png",
                        val / "mask" / f"{defect.name}_{p.stem}_mask.png")
    det = tmp_path / "det"
    assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--shots", "1", "--validation", str(val),
                 "--out", str(det), "--k-neurons", "8", *TINY]) == 0
    t = json.loads((det / "lake.json").read_text())["threshold"]
    assert t["method"] == "validation_f1" and t["details"]["n_anomalous"] == len(list((val / "anomaly").iterdir()))
    assert "pixel_f1" in t["details"]
    # normal images only (MVTec LOCO validation/good): the quantile rule
    det2 = tmp_path / "det2"
    assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--shots", "1", "--validation",
                 str(val / "good"), "--out", str(det2), "--k-neurons", "8", *TINY]) == 0
    assert json.loads((det2 / "lake.json").read_text())["threshold"]["method"] == "validation_normal_quantile"
    # one support image and no validation: no threshold, said
    det3 = tmp_path / "det3"
    assert main(["fit", "--normal", str(root / "disc" / "train" / "good"), "--shots", "1", "--out", str(det3),
                 "--k-neurons", "8", *TINY]) == 0
    assert "no decision threshold stored" in capsys.readouterr().out
    assert json.loads((det3 / "lake.json").read_text())["threshold"] is None


def test_score_one_file_gives_label_mask_and_contour_overlay(root, fitted, tmp_path):
    from lake_interp.cli import load_model
    from lake_interp.lake import Lake
    from lake_interp.lake.inputs import resize_map
    from tests.test_predict import check_contour_overlay

    det, _ = fitted
    image_path = tmp_path / "one.png"
    Image.open(root / "disc" / "test" / "hole" / "000.png").resize((90, 50)).save(image_path)
    image = Image.open(image_path).convert("RGB")
    lake = Lake.load(det, load_model("lake-tiny", "none", "cpu"))
    r = lake.score([image])
    full = resize_map(r.maps[0], 50, 90)
    pixel_t = float(np.sort(full.ravel())[int(0.7 * full.size)])  # a value the map takes (>= vs >); ~30% masked
    image_t = float(r.image_scores[0]) + 1e-3  # just above the score: labelled normal
    out = tmp_path / "scored"
    assert main(["score", "--detector", str(det), "--images", str(image_path), "--out", str(out),
                 "--threshold", repr(image_t), "--pixel-threshold", repr(pixel_t)]) == 0
    [row] = read_csv(out / "scores.csv")
    assert row["label"] == "0" and float(row["image_score"]) == pytest.approx(float(r.image_scores[0]), rel=1e-6)
    mask = np.asarray(Image.open(out / row["mask"])) > 0
    expected = full >= pixel_t
    assert mask.shape == (50, 90) and 0.1 < expected.mean() < 0.5
    assert np.array_equal(mask, expected)
    assert float(row["anomalous_pixels"]) == pytest.approx(expected.mean())
    scale = dict(line.split() for line in (out / "colour_scale.txt").read_text().splitlines())
    check_contour_overlay(Image.open(out / row["overlay"]), image, full, expected, float(scale["vmin"]), float(scale["vmax"]))
    assert json.loads((out / "threshold.json").read_text())["method"] == "given"
    out2 = tmp_path / "scored_low"
    assert main(["score", "--detector", str(det), "--images", str(image_path), "--out", str(out2),
                 "--threshold", repr(image_t - 2e-3)]) == 0
    [row] = read_csv(out2 / "scores.csv")
    assert row["label"] == "1"  # and the pixel threshold defaults to the image one
    assert np.array_equal(np.asarray(Image.open(out2 / row["mask"])) > 0, full >= image_t - 2e-3)


def test_score_recursive_finds_nested_images_and_names_never_collide(root, fitted, tmp_path, capsys):
    det, _ = fitted
    src = Image.open(root / "disc" / "test" / "good" / "000.png")
    images = tmp_path / "imgs"
    for rel in ("x.png", "x.jpg", "a__x.png", "a/x.png", "a/b/x.png", "a/b/x_png.png", ".hidden/y.png"):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        src.save(images / rel)
    (images / "notes.txt").write_text("not an image")
    flat = tmp_path / "flat"
    assert main(["score", "--detector", str(det), "--images", str(images), "--out", str(flat)]) == 0
    assert len(read_csv(flat / "scores.csv")) == 3  # x.png, x.jpg, a__x.png: sub-folders need --recursive
    out = images / "scored"  # inside the scored folder: never read back as input
    assert main(["score", "--detector", str(det), "--images", str(images), "--recursive", "--out", str(out)]) == 0
    rows = read_csv(out / "scores.csv")
    assert sorted(r["path"] for r in rows) == sorted(str(images / p) for p in
                                                     ("x.png", "x.jpg", "a__x.png", "a/x.png", "a/b/x.png", "a/b/x_png.png"))
    for column in ("maps", "overlay", "mask"):
        files = [r[column] for r in rows]
        assert len(set(files)) == len(files)
        for f in files:
            assert (out / f).is_file() and (out / f).resolve().parent.parent == out.resolve()
    assert all(r["label"] in ("0", "1") for r in rows)
    by_path = {Path(r["path"]).relative_to(images).as_posix(): r["maps"] for r in rows}
    assert by_path["a/b/x.png"] == "maps/a__b__x_map.png" and by_path["x.jpg"] == "maps/x_jpg_map.png"
    assert by_path["a/x.png"] != by_path["a__x.png"]  # the same flattened name: told apart by their extension/counter
    # another run does not read the earlier output folder (a lake-interp manifest) as images to score
    assert main(["score", "--detector", str(det), "--images", str(images), "--recursive", "--out", str(tmp_path / "o2")]) == 0
    assert len(read_csv(tmp_path / "o2" / "scores.csv")) == len(rows)


def test_cheap_checks_come_before_the_model(root, fitted, tmp_path, capsys, no_model):
    det, _ = fitted
    normal = root / "disc" / "train" / "good"
    fit = ["fit", "--normal", str(normal), "--out", str(tmp_path / "d"), *TINY]
    cases = [
        (["fit", "--normal", str(tmp_path / "missing"), "--out", str(tmp_path / "d"), *TINY], "missing"),
        ([*fit, "--validation", str(tmp_path / "noval")], "noval"),
        ([*fit, "--validation", str(normal)], "holds support images"),
        ([*fit, "--shots", "99"], "needs 99 normal images"),
        ([*fit, "--threshold-quantile", "1.5"], "quantile"),
        (["fit", "--normal", str(normal), "--out", str(det), *TINY], "already holds a detector"),
        (["score", "--detector", str(det), "--images", str(tmp_path / "none.png"), "--out", str(tmp_path / "s")], "none.png"),
        (["score", "--detector", str(det), "--images", str(root / "disc" / "test"), "--out", str(tmp_path / "s")],
         "--recursive"),
        (["score", "--detector", str(tmp_path), "--images", str(normal), "--out", str(tmp_path / "s")], "lake.json"),
        (["demo", "--out", str(tmp_path / "demo"), "--categories", "nosuch", *TINY], "nosuch"),
        (["demo", "--out", str(tmp_path / "demo"), "--shots", "0", *TINY], "--shots"),
    ]
    (tmp_path / "notes.txt").write_text("x")
    cases.append((["score", "--detector", str(det), "--images", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "s")],
                  "not an image file"))
    old = tmp_path / "old_det"  # saved before thresholds: score says what to do
    old.mkdir()
    meta = json.loads((det / "lake.json").read_text())
    del meta["threshold"]
    (old / "lake.json").write_text(json.dumps(meta))
    (old / "tensors.safetensors").write_bytes((det / "tensors.safetensors").read_bytes())
    cases.append((["score", "--detector", str(old), "--images", str(normal), "--out", str(tmp_path / "s")],
                  "no decision threshold"))
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"model": "lake-tiny", "pretrained": None, "dataset": "mvtec",
                                 "root": str(tmp_path / "no_root"), "categories": ["disc"]}))
    cases.append((["figures", "--config", str(study), "--out", str(tmp_path / "fig")], "no_root"))
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, (argv, err)
    assert not (tmp_path / "s").exists() and not (tmp_path / "d").exists() and not (tmp_path / "fig").exists()

    import argparse

    from lake_interp.cli import check_benchmark_args

    def bench(**kw):
        base = dict(dataset="mvtec", root=root, categories=None, shots=[1], seeds=[0], out=tmp_path / "b",
                    config=None, k_neurons=None, text_weight=None)
        return check_benchmark_args(argparse.Namespace(**{**base, **kw}))

    assert bench() == {}
    with pytest.raises(ValueError, match="no_root"):
        bench(root=tmp_path / "no_root")
    with pytest.raises(ValueError, match="unknown category 'nosuch'"):
        bench(categories=["nosuch"])
    with pytest.raises(ValueError, match="--shots"):
        bench(shots=[0])
    with pytest.raises(ValueError, match="holds no mvtec category"):
        bench(root=root / "disc")
