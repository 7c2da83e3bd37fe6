"""The method table (honest names, old records refused), the evaluation layer, the paired bootstrap in
summary.md, pixel_metrics on dataset masks, one preprocessing path and streamed Lake.score."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lake_interp.benchmark import BenchmarkSpec, paired_difference, run_benchmark, summary_markdown
from lake_interp.cli import build_parser, main
from lake_interp.data import MVTecAD, make_synthetic_dataset
from lake_interp.detectors.methods import METHODS, METHODS_VERSION, RENAMED, default_methods, get_method
from lake_interp.lake import Lake, LakeConfig
from lake_interp.metrics import pixel_metrics

TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]
ALL = ["lake", "lake_random", "lake_attr", "knn_all", "text_dense", "winclip", "winclip_plus", "patchcore"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc"], seed=2, image_size=64,
                                  n_train=3, n_test_good=2, n_test_defect=2)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- the method table -------------------------------------------------------------------------------------

def test_the_table_defines_every_method_with_its_description():
    assert list(METHODS) == ALL
    for name, m in METHODS.items():
        assert m.name == name and m.computes and m.reference and m.checked
    assert METHODS["knn_all"].lake == {"criterion": "all", "text_weight": 0.0}
    assert METHODS["text_dense"].lake == {"text_weight": 1.0} and METHODS["text_dense"].zero_shot
    for name in ("winclip", "winclip_plus", "patchcore"):  # the faithful ones: detectors of their own modules
        assert not METHODS[name].lake_family and METHODS[name].target.startswith("lake_interp.detectors.")
    with pytest.raises(ValueError, match="unknown method 'lake2'.*knn_all"):
        get_method("lake2")


def test_a_missing_detector_module_is_a_clear_error(monkeypatch):
    import dataclasses

    missing = dataclasses.replace(METHODS["patchcore"], target="lake_interp.detectors.nosuch:PatchCore")
    monkeypatch.setitem(METHODS, "patchcore", missing)
    assert not missing.available and "patchcore" not in default_methods()
    with pytest.raises(NotImplementedError, match="'patchcore' needs lake_interp.detectors.nosuch.PatchCore"):
        missing.build(None)


def test_cli_method_choices_come_from_the_table(capsys):
    parser = build_parser()
    bench = next(a for a in parser._subparsers._group_actions[0].choices["benchmark"]._actions if a.dest == "methods")
    assert bench.choices == list(METHODS) and bench.default == default_methods()
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--dataset", "mvtec", "--root", ".", "--out", "o", "--methods", "lake2"])
    assert "invalid choice: 'lake2'" in capsys.readouterr().err
    args = parser.parse_args(["benchmark", "--dataset", "mvtec", "--root", ".", "--out", "o", "--methods", "knn_all", "patchcore"])
    assert args.methods == ["knn_all", "patchcore"]  # a new request for patchcore: the faithful one


# --- old records ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_run_recorded_with_old_method_names_is_refused_with_the_new_name(root, tmp_path, tiny_model, old):
    out = tmp_path / "b"
    spec = BenchmarkSpec("mvtec", str(root), "lake-tiny", None, ["disc"], (1,), (0,), methods=("lake",),
                         config={"k_neurons": 4})
    run_benchmark(tiny_model, spec, out, progress=False)
    record = json.loads((out / "run.json").read_text())
    assert record["methods_version"] == METHODS_VERSION == 2
    # what the previous version wrote: no methods_version, the old name in its methods
    old_record = {k: v for k, v in record.items() if k != "methods_version"}
    (out / "run.json").write_text(json.dumps({**old_record, "methods": ["lake", old]}))
    new = RENAMED[old][0]
    with pytest.raises(ValueError, match=rf"earlier lake_interp.*'{old}'.*is now called '{new}'"):
        run_benchmark(tiny_model, BenchmarkSpec(**{**spec.__dict__, "methods": ("lake", old)}), out, progress=False)
    # nothing silently mapped: asking for the new name does not resume the old record either
    with pytest.raises(ValueError, match=rf"is now called '{new}'"):
        run_benchmark(tiny_model, BenchmarkSpec(**{**spec.__dict__, "methods": ("lake", new)}), out, progress=False)
    # an old record without the renamed methods still resumes (lake means what it meant)
    (out / "run.json").write_text(json.dumps(old_record))
    run_benchmark(tiny_model, spec, out, progress=False)
    assert json.loads((out / "run.json").read_text())["methods_version"] == 2


def test_cli_says_the_new_name_for_an_old_run_folder(root, tmp_path, capsys):
    out = tmp_path / "b"
    args = ["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "--seeds", "0", "--out", str(out),
            "--k-neurons", "4", "--no-progress", *TINY]
    assert main([*args, "--methods", "lake"]) == 0
    record = json.loads((out / "run.json").read_text())
    del record["methods_version"]
    (out / "run.json").write_text(json.dumps({**record, "methods": ["lake", "winclip"]}))
    assert main([*args, "--methods", "lake", "winclip"]) == 2
    err = capsys.readouterr().err
    assert "'winclip' (the prompt ensemble on every projected patch token) is now called 'text_dense'" in err


# --- the benchmark runs every method ----------------------------------------------------------------------

def _folder_dataset(root, out):
    """The synthetic images as a `folder` dataset of JPEGs at other, non-square sizes (PNG masks)."""
    for split, kind in (("train", "good"), ("test", "good"), ("test", "anomaly")):
        src = MVTecAD(root, "disc", split)
        (out / "parts" / split / kind).mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(x for x in src if (x.label == 1) == (kind == "anomaly")):
            size = (80 + 8 * i, 56)
            s.image.resize(size).save(out / "parts" / split / kind / f"{i:03d}.jpg", quality=90)
            if kind == "anomaly":
                (out / "parts" / split / "mask").mkdir(exist_ok=True)
                Image.fromarray(s.mask).resize(size, Image.NEAREST).save(out / "parts" / split / "mask" / f"{i:03d}.png")
    return out


@pytest.mark.parametrize("dataset", ["mvtec", "folder"])
def test_benchmark_runs_every_method_of_the_table(root, tmp_path, dataset):
    data = root if dataset == "mvtec" else _folder_dataset(root, tmp_path / "folder")
    out = tmp_path / "bench"
    assert main(["benchmark", "--dataset", dataset, "--root", str(data), "--shots", "1", "2", "--seeds", "0", "1",
                 "--out", str(out), "--k-neurons", "4", "--no-progress", "--methods", *ALL, *TINY]) == 0
    rows = read_csv(out / "results.csv")
    assert len(rows) == len(ALL) * 2 * 2
    assert [r["method"] for r in rows[: len(ALL)]] == ALL
    for r in rows:
        assert 0.0 <= float(r["image_auroc"]) <= 1.0 and 0.0 <= float(r["pixel_auroc"]) <= 1.0
    scores = read_csv(out / "scores" / f"{rows[0]['category']}.csv")
    assert {f"{m}_2shot_seed1" for m in ALL} <= set(scores[0])
    # zero-shot methods do not depend on the support: the same scores for every shot and seed
    for m in ("winclip", "text_dense"):
        assert len({tuple(x[f"{m}_{k}shot_seed{s}"] for x in scores) for k in (1, 2) for s in (0, 1)}) == 1
    summary = (out / "summary.md").read_text()
    assert "Protocol: 1, 2-shot; seeds [0, 1]" in summary and "test split is never seen" in summary
    for m in ALL[1:]:
        assert f"| lake vs {m} | 4 |" in summary


def test_benchmark_without_k_neurons_runs_on_a_narrow_model(root, tmp_path, capsys):
    """The issue's command, without --k-neurons, on lake-tiny (64 channels): K is a quarter of the
    channels (said on stdout, recorded in run.json), not the paper's 100 that the tower cannot hold."""
    out = tmp_path / "bench"
    assert main(["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "--seeds", "0",
                 "--out", str(out), "--no-progress", "--methods", "lake", "knn_all", *TINY]) == 0
    assert "k_neurons 16 (a quarter of the 64 channels" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["config"]["k_neurons"] == 16
    again = tmp_path / "bench_k"
    assert main(["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "--seeds", "0",
                 "--out", str(again), "--no-progress", "--methods", "lake", "--k-neurons", "8", *TINY]) == 0
    assert json.loads((again / "run.json").read_text())["config"]["k_neurons"] == 8


# --- the paired bootstrap of summary.md -------------------------------------------------------------------

def test_paired_difference_matches_an_independent_bootstrap():
    rng = np.random.default_rng(5)
    metric_names = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro")
    rows = [{"category": c, "method": m, "shots": k, "seed": s, **{x: float(rng.random()) for x in metric_names}}
            for c in ("a", "b") for m in ("lake", "knn_all") for k in (1, 2, 4) for s in (0, 1, 2)]
    got = paired_difference(rows, "lake", "knn_all", "image_auroc", n_boot=2000, seed=3)
    # independently: per (shots, seed) the mean over categories, paired, resampled with replacement
    value = {(m, k, s): np.mean([r["image_auroc"] for r in rows if (r["method"], r["shots"], r["seed"]) == (m, k, s)])
             for m in ("lake", "knn_all") for k in (1, 2, 4) for s in (0, 1, 2)}
    d = np.array([value["lake", k, s] - value["knn_all", k, s] for k in (1, 2, 4) for s in (0, 1, 2)])
    gen = np.random.default_rng(3)
    boot = np.array([d[gen.integers(0, 9, 9)].mean() for _ in range(2000)])
    assert got["n"] == 9 and got["mean"] == pytest.approx(d.mean())
    assert got["low"] == pytest.approx(np.quantile(boot, 0.025)) and got["high"] == pytest.approx(np.quantile(boot, 0.975))
    assert got["low"] < got["mean"] < got["high"]
    spec = BenchmarkSpec("mvtec", ".", "m", "openai", ["a", "b"], (1, 2, 4), (0, 1, 2), methods=("lake", "knn_all"))
    line = next(x for x in summary_markdown(rows, spec).splitlines() if x.startswith("| lake vs knn_all |"))
    full = paired_difference(rows, "lake", "knn_all", "image_auroc")
    assert line.startswith(f"| lake vs knn_all | 9 | {full['mean'] * 100:+.1f} [{full['low'] * 100:+.1f}, {full['high'] * 100:+.1f}] |")


# --- pixel_metrics on what the datasets give ---------------------------------------------------------------

def test_pixel_metrics_takes_none_masks_and_masks_at_the_images_sizes():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 32, 32)).astype(np.float32)
    masks = [None, rng.random((50, 70)) > 0.7, None, rng.random((20, 15)) > 0.5]
    masks[1][:5] = False

    def nearest(m, size):  # scipy's half-pixel nearest neighbour: an independent implementation
        out = np.empty((size, size), np.uint8)
        ndimage.zoom(m.astype(np.uint8), (size / m.shape[0], size / m.shape[1]), output=out, order=0,
                     mode="nearest", grid_mode=True)
        return out.astype(bool)

    explicit = np.stack([np.zeros((32, 32), bool) if m is None else nearest(m, 32) for m in masks])
    assert pixel_metrics(maps, masks) == pixel_metrics(maps, explicit)
    # with an evaluation resolution the masks go straight from their own size to it
    explicit64 = np.stack([np.zeros((64, 64), bool) if m is None else nearest(m, 64) for m in masks])
    from lake_interp.metrics import resize_maps_masks

    maps64, _ = resize_maps_masks(maps, explicit, 64)
    assert pixel_metrics(maps, masks, resolution=64) == pixel_metrics(maps64, explicit64)
    with pytest.raises(ValueError, match="4 images.*3 masks|maps .* 3 masks"):
        pixel_metrics(maps, masks[:3])


# --- one preprocessing path --------------------------------------------------------------------------------

def _pictures():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((50, 90), (64, 64), (200, 130))]


def test_lake_preprocessing_is_open_clips_squash_transform(tiny_model):
    from lake_interp.lake.inputs import preprocess_image, squash_transform, to_batch

    transform = squash_transform(tiny_model)
    for picture in _pictures():
        assert torch.equal(preprocess_image(picture, tiny_model), transform(picture))
    assert torch.equal(to_batch(_pictures(), tiny_model), torch.stack([transform(p) for p in _pictures()]))


def test_model_preprocess_is_lakes_preprocessing(tiny_model):
    """run_with_cache(model.preprocess(x)) sees the image as LAKE does: its patch positions line up
    with LAKE's maps (squash, no crop), and both equal open_clip's squash transform."""
    from lake_interp.lake.inputs import squash_transform, to_batch

    for picture in _pictures():
        assert torch.equal(tiny_model.preprocess(picture), to_batch(picture, tiny_model)[0])
        assert torch.equal(tiny_model.preprocess(picture), squash_transform(tiny_model)(picture))


# --- streamed scoring and the evaluation layer ----------------------------------------------------------------

def test_lake_score_in_batches_equals_scoring_at_once(root, tiny_model):
    test = MVTecAD(root, "disc", "test")
    support = MVTecAD(root, "disc", "train").few_shot(2, 0)
    lake = Lake(tiny_model, LakeConfig(k_neurons=4), "disc").fit(support)
    small = Lake(tiny_model, LakeConfig(k_neurons=4, batch_size=5), "disc").fit(support)
    at_once = lake.score(list(test))
    n = len(test)
    assert n % 5
    streamed = small.score(iter(test))  # a generator, in batches of 5
    for name in ("image_scores", "maps", "visual_maps", "semantic_maps"):
        assert torch.allclose(getattr(streamed, name), getattr(at_once, name), atol=1e-6), name

    calls = []
    original = small.score_activations
    small.score_activations = lambda acts: calls.append(next(iter(acts.values())).shape[0]) or original(acts)
    small.score(list(test))
    assert calls == [5] * (n // 5) + [n % 5]  # never more than one batch of activations at a time


def test_evaluation_takes_any_detector_or_a_method_name(root, tiny_model):
    from lake_interp.evaluation import cache_test_set, evaluate, fit_and_evaluate, metrics

    test = MVTecAD(root, "disc", "test")
    support = MVTecAD(root, "disc", "train").few_shot(2, 0)
    base = LakeConfig(k_neurons=4)
    lake = get_method("knn_all").build(tiny_model, base, "disc").fit(support)
    got, result = evaluate(lake, test)
    acts, masks, labels = cache_test_set(lake, test, lake.required_hooks)
    assert got == metrics(lake.score_activations(acts), labels, masks)  # the fast path gives the same numbers
    assert got["pixel_auroc"] == pytest.approx(pixel_metrics(result.maps, [s.mask for s in test])["auroc"])
    by_name, _ = fit_and_evaluate(tiny_model, "knn_all", support, test, class_name="disc", base=base)
    assert by_name == got
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zero, _ = fit_and_evaluate(tiny_model, "winclip", support, test, class_name="disc")
        plus, plus_result = fit_and_evaluate(tiny_model, "winclip_plus", support, test, class_name="disc")
    assert set(zero) == set(plus) == set(got)
    assert plus_result.maps.shape == (len(test), tiny_model.image_size, tiny_model.image_size)


def test_ablation_effect_takes_any_detector(root, tiny_model):
    from lake_interp.interp import ablation_effect

    test = list(MVTecAD(root, "disc", "test"))
    support = MVTecAD(root, "disc", "train").few_shot(2, 0)
    neurons = [("visual.blocks.1.hook_resid_post", 3), ("visual.blocks.2.hook_resid_post", 5)]
    labels, masks = [s.label for s in test], [s.mask for s in test]
    effect = ablation_effect("patchcore", neurons, support, test, labels, masks, n_random=1, model=tiny_model,
                             class_name="disc")
    assert set(effect.clean) >= {"image_auroc", "pixel_aupro", "mean_score_anomalous"}
    assert effect.map_change > 0  # the ablation reaches the detector
