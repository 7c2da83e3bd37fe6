"""sPRO / AUsPRO of MVTec LOCO AD against the official evaluation, re-implemented here from its published
description, and the LOCO loader's defect regions.

Reference: Bergmann et al., "Beyond Dents and Scratches: Logical Constraints in Unsupervised Anomaly
Detection and Localization", IJCV 2022, and its evaluation code
``mvtec_loco_ad_evaluation``: ``src/image.py`` (``DefectConfig``, ``GroundTruthChannel.get_saturation_area``:
``int(thr * area)`` relative, ``min(thr, area)`` absolute; one channel per mask PNG), ``src/metrics.py``
(``get_spro``: ``min(tp / saturation_area, 1)`` with the prediction ``score > threshold``; FPR over the
pixels outside every channel of every image, ``get_fp_areas_for_thresholds`` / ``get_fp_rates``),
``src/aggregation.py`` (mean sPRO over all channels, ``get_mean_spros``), ``src/util.py``
(``get_auc_for_max_fpr``, ``trapz`` with the interpolated point at the limit) and
``evaluate_experiment.py`` (``MAX_FPRS`` 0.01 .. 1; per category: good images + each test subfolder, and
the mean of the two). The reference below loops over every threshold directly and shares no code with
``lake_interp.metrics.spro``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lake_interp.data import MVTecLOCO
from lake_interp.data.loco import LocoSample
from lake_interp.data.sample import DatasetError, Sample
from lake_interp.detectors.protocol import DetectionResult
from lake_interp.evaluation import SPRO_METRICS, evaluate
from lake_interp.metrics import (
    SaturatedRegion, UndefinedMetricWarning, aupro, auspro, auspro_by_defect_type, spro_curve, spro_metrics,
)

LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)


# --- the official evaluation, re-implemented from its description -----------------------------------


class Channel:
    """One ground-truth channel (one mask PNG): bool array and its defect's saturation settings."""

    def __init__(self, mask, threshold, relative):
        self.mask, self.threshold, self.relative = np.asarray(mask, bool), threshold, relative

    def saturation_area(self):
        area = np.sum(self.mask)
        return int(self.threshold * area) if self.relative else np.minimum(self.threshold, area)


# the official trapezoid with its interpolated end point (MVTec's generic_util.trapezoid), written once
# for the test suite in test_safety_metrics.py
from tests.test_safety_metrics import official_trapezoid as official_trapz  # noqa: E402


def official_curve(maps, channels):
    """(fprs, mean sPROs) at every threshold, highest first: max + 1, every distinct score, min - 1."""
    maps = np.asarray(maps, np.float64)
    thresholds = np.concatenate(([maps.max() + 1], np.unique(maps)[::-1], [maps.min() - 1]))
    defect_free = np.ones(maps.shape, bool)
    for i, chans in enumerate(channels):
        for c in chans:
            defect_free[i] &= ~c.mask
    fprs, spros = [], []
    for t in thresholds:
        predicted = maps > t
        fprs.append(np.sum(predicted & defect_free) / np.sum(defect_free))
        spros.append(np.mean([min(np.sum(predicted[i] & c.mask) / c.saturation_area(), 1.0)
                              for i, chans in enumerate(channels) for c in chans]))
    return np.array(fprs), np.array(spros)


def official_auspro(maps, channels, limits=LIMITS):
    fprs, spros = official_curve(maps, channels)
    assert fprs[0] == 0 and fprs[-1] == 1
    return {limit: official_trapz(fprs, spros, limit) / limit for limit in limits}


def official_by_subdir(maps, channels, subdirs):
    """get_auc_spros_per_subdir(add_good_images=True) and the mean over the subdirectories."""
    good = [i for i, s in enumerate(subdirs) if s == "good"]
    out = {}
    for sub in sorted(set(subdirs) - {"good"}):
        idx = sorted(good + [i for i, s in enumerate(subdirs) if s == sub])
        out[sub] = official_auspro(np.asarray(maps)[idx], [channels[i] for i in idx])
    out["mean"] = {limit: np.mean([out[s][limit] for s in out]) for limit in LIMITS}
    return out


# --- generated cases ----------------------------------------------------------------------------------


def blob(rng, h, w):
    """A random rectangle, sometimes with a hole or a second part (a region need not be connected)."""
    m = np.zeros((h, w), bool)
    y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
    m[y:y + rng.integers(1, h // 2), x:x + rng.integers(1, w // 2)] = True
    if rng.random() < 0.3:
        y2, x2 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        m[y2:y2 + 2, x2:x2 + 2] = True
    return m


def generated_case(seed, n_good=3, n_anom=5, h=14, w=12, ties=False):
    """Random maps (brighter on defects), several regions per anomalous image (overlaps allowed), absolute
    and relative saturation thresholds (some larger than the region), good images, two subfolders."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n_good + n_anom, h, w))
    channels, subdirs = [[] for _ in range(n_good)], ["good"] * n_good
    for i in range(n_good, n_good + n_anom):
        chans = []
        for _ in range(rng.integers(1, 4)):
            m = blob(rng, h, w)
            if rng.random() < 0.5:
                c = Channel(m, float(rng.choice([1.0, 0.5, 0.77, 0.3])), True)
            else:
                c = Channel(m, int(rng.choice([1, 3, 7, 20, 500])), False)
            if c.saturation_area() == 0:
                c = Channel(m, 1.0, True)
            chans.append(c)
            maps[i][m] += rng.random() * 0.8
        channels.append(chans)
        subdirs.append("logical_anomalies" if rng.random() < 0.5 else "structural_anomalies")
    subdirs[-1], subdirs[-2] = "logical_anomalies", "structural_anomalies"
    if ties:
        maps = np.round(maps * 4) / 4  # few distinct scores: ties inside regions and with defect-free pixels
    return maps.astype(np.float32), channels, subdirs


def as_regions(channels):
    """The channels as the LOCO loader's regions are read: mask + saturation threshold + relative flag."""

    class Region:
        def __init__(self, c):
            self.mask, self.saturation_threshold, self.relative_saturation = c.mask, c.threshold, c.relative

    return [[Region(c) for c in chans] for chans in channels]


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True), (3, True), (4, False)])
def test_auspro_equals_the_official_evaluation_on_generated_cases(seed, ties):
    maps, channels, subdirs = generated_case(seed, ties=ties)
    got = auspro(maps, as_regions(channels))
    want = official_auspro(maps, channels)
    assert got.keys() == want.keys()
    for limit in LIMITS:
        assert got[limit] == pytest.approx(want[limit], abs=1e-12), limit
    # the whole curve: the official points (one per threshold, duplicates where nothing changes) are ours
    fprs, spros = spro_curve(maps, as_regions(channels))
    ref_f, ref_s = official_curve(maps, channels)
    ours = {(round(f, 12), round(s, 12)) for f, s in zip(fprs, spros)}
    assert ours == {(round(f, 12), round(s, 12)) for f, s in zip(ref_f, ref_s)}
    # per subfolder with the good images, and the mean (the official per-category numbers)
    by_type = auspro_by_defect_type(maps, as_regions(channels), subdirs)
    ref = official_by_subdir(maps, channels, subdirs)
    assert by_type.keys() == ref.keys() == {"logical_anomalies", "structural_anomalies", "mean"}
    for key in ref:
        for limit in LIMITS:
            assert by_type[key][limit] == pytest.approx(ref[key][limit], abs=1e-12), (key, limit)
    assert spro_metrics(maps, as_regions(channels), subdirs) == {f"auspro_{lim:g}": by_type["mean"][lim] for lim in LIMITS}


def test_float64_maps_are_ranked_exactly():
    maps, channels, _ = generated_case(5)
    maps = maps.astype(np.float64) + np.linspace(0, 1e-12, maps.size).reshape(maps.shape)  # below float32
    got, want = auspro(maps, as_regions(channels)), official_auspro(maps, channels)
    assert all(got[lim] == pytest.approx(want[lim], abs=1e-12) for lim in LIMITS)


def test_saturation_makes_a_difference_and_a_region_smaller_than_its_threshold_is_plain_overlap():
    """A region smaller than its absolute threshold saturates at its own area: sPRO = the covered fraction,
    i.e. the official AU-PRO when each region is one connected component; a small threshold saturates early."""
    rng = np.random.default_rng(7)
    maps = rng.random((4, 16, 16)).astype(np.float32)
    masks = np.zeros((4, 16, 16), bool)
    masks[1, 2:6, 3:9] = True
    masks[2, 9:15, 1:4] = True
    masks[3, 0:3, 10:16] = True
    maps[masks] += 0.3
    big = [[SaturatedRegion(m, float(m.sum()))] if m.any() else [] for m in masks]
    loco = [[r for r in rs] for rs in as_regions([[Channel(m, 10_000, False)] if m.any() else [] for m in masks])]
    for limit in (0.05, 0.3, 1.0):
        assert auspro(maps, loco, limit)[limit] == pytest.approx(aupro(maps, masks, limit), abs=1e-12)
        assert auspro(maps, big, limit)[limit] == pytest.approx(aupro(maps, masks, limit), abs=1e-12)
    early = as_regions([[Channel(m, 2, False)] if m.any() else [] for m in masks])
    assert all(auspro(maps, early)[lim] > auspro(maps, loco)[lim] for lim in (0.05, 0.3))


def test_masks_at_the_images_own_size_keep_their_saturated_fraction():
    """Regions at twice the maps' size (block-constant): equal to the official evaluation of the maps
    upsampled by nearest neighbour, absolute thresholds counting pixels at the large size."""
    maps, channels, subdirs = generated_case(11, h=10, w=8)
    big_channels = [[Channel(np.kron(c.mask, np.ones((2, 2), bool)), c.threshold, c.relative) for c in chans]
                    for chans in channels]
    big_maps = np.kron(maps, np.ones((1, 2, 2), np.float32))
    got = auspro(maps, as_regions(big_channels))
    want = official_auspro(big_maps, big_channels)
    assert all(got[lim] == pytest.approx(want[lim], abs=1e-12) for lim in LIMITS)
    # the same at an evaluation resolution: maps resized to it, regions to it
    at_res = auspro(big_maps, as_regions(big_channels), resolution=(10, 8))
    want_small = auspro(maps, as_regions(big_channels))
    assert at_res.keys() == want_small.keys()
    with pytest.raises(ValueError, match="one entry per map"):
        auspro(maps, as_regions(big_channels)[:-1])


def test_a_region_that_vanishes_at_the_evaluation_size_is_left_out_with_a_warning():
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    tiny = np.zeros((32, 32), bool)
    tiny[0, 1] = True  # one pixel at 32x32: nearest sampling to 8x8 reads rows/cols 2, 6, ...
    big = np.zeros((32, 32), bool)
    big[8:24, 8:24] = True
    regions = as_regions([[], [Channel(tiny, 1.0, True), Channel(big, 1.0, True)]])
    with pytest.warns(UserWarning, match="1 defect regions vanish"):
        got = auspro(maps, regions)
    only_big = auspro(maps, as_regions([[], [Channel(big, 1.0, True)]]))
    assert got == only_big


def test_undefined_cases():
    maps = np.random.default_rng(0).random((3, 6, 6)).astype(np.float32)
    with pytest.warns(UndefinedMetricWarning, match="no defect regions"):
        got = auspro(maps, [[], None, []])
    assert all(np.isnan(v) for v in got.values())
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(spro_metrics(maps, [[], [], []], ["good"] * 3)["auspro_0.3"])
    full = np.ones((6, 6), bool)
    with pytest.warns(UndefinedMetricWarning, match="no defect-free pixels"):
        assert np.isnan(auspro(maps[:1], as_regions([[Channel(full, 1.0, True)]]))[0.3])
    one = np.zeros((6, 6), bool)
    one[0, 0] = True
    with pytest.raises(ValueError, match=r"int\(0.5 \* 1\) = 0"):
        auspro(maps[:1], as_regions([[Channel(one, 0.5, True)]]))
    with pytest.raises(ValueError, match="fpr_limit"):
        auspro(maps[:1], as_regions([[Channel(one, 1.0, True)]]), fpr_limits=(0.0,))


# --- the LOCO loader: defects_config.json and one region per mask image --------------------------------

S = 16


def _img(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, box, value: int, size=S) -> np.ndarray:
    a = np.zeros((size, size), np.uint8)
    a[box[0]:box[1], box[2]:box[3]] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return a > 0


CONFIG = [
    {"defect_name": "missing_part", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "extra_part", "pixel_value": 254, "saturation_threshold": 6, "relative_saturation": False},
    {"defect_name": "scratch", "pixel_value": 100, "saturation_threshold": 0.5, "relative_saturation": True},
]


def loco_tree(root: Path, config=CONFIG) -> dict:
    """A LOCO category: train/validation good images, test good + logical (two masks in one image) +
    structural anomalies; returns the expected masks by image."""
    c = root / "juice_bottle"
    for split in ("train", "validation"):
        for i in range(3):
            _img(c / split / "good" / f"{i:03d}.png", 10 + i)
    for i in range(3):
        _img(c / "test" / "good" / f"{i:03d}.png", 20 + i)
    gt = c / "ground_truth"
    expected = {}
    for i, boxes in enumerate([[((0, 4, 0, 4), 255), ((8, 12, 8, 16), 254)], [((2, 8, 2, 6), 255)]]):
        _img(c / "test" / "logical_anomalies" / f"{i:03d}.png", 30 + i)
        expected[f"logical_anomalies/{i:03d}"] = [
            (_mask(gt / "logical_anomalies" / f"{i:03d}" / f"{k:03d}.png", box, v), v) for k, (box, v) in enumerate(boxes)]
    for i, (box, v) in enumerate([((4, 6, 0, 16), 100), ((2, 14, 2, 4), 254)]):
        _img(c / "test" / "structural_anomalies" / f"{i:03d}.png", 40 + i)
        expected[f"structural_anomalies/{i:03d}"] = [(_mask(gt / "structural_anomalies" / f"{i:03d}" / "000.png", box, v), v)]
    if config is not None:
        (c / "defects_config.json").write_text(json.dumps(config))
    return expected


def test_loco_loader_reads_one_region_per_mask_with_its_defect_config(tmp_path):
    expected = loco_tree(tmp_path)
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    assert test.defects_config[254].defect_name == "extra_part" and test.spro_missing is None
    by_value = {c["pixel_value"]: c for c in CONFIG}
    for s in test:
        assert isinstance(s, LocoSample) and s.regions_missing is None
        key = f"{s.path.parent.name}/{s.path.stem}"
        if s.label == 0:
            assert s.regions == () and s.mask is None
            continue
        want = expected[key]
        assert len(s.regions) == len(want)
        for r, (m, v) in zip(s.regions, want):
            assert np.array_equal(r.mask, m) and r.defect.pixel_value == v
            assert r.defect.defect_name == by_value[v]["defect_name"]
            assert (r.saturation_threshold, r.relative_saturation) == (by_value[v]["saturation_threshold"],
                                                                       by_value[v]["relative_saturation"])
        assert np.array_equal(s.mask, np.logical_or.reduce([m for m, _ in want]))
    assert isinstance(test[0:2][1], LocoSample)


def test_loco_without_defects_config_says_why_and_keeps_the_union_masks(tmp_path):
    loco_tree(tmp_path, config=None)
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    assert test.defects_config is None and "defects_config.json" in test.spro_missing
    s = test[3]
    assert s.regions is None and s.regions_missing == test.spro_missing and s.mask is not None


def test_loco_bad_defect_configs_are_errors_naming_the_file(tmp_path):
    loco_tree(tmp_path, config=CONFIG[:2])  # no entry for pixel value 100
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    config = tmp_path / "juice_bottle" / "defects_config.json"
    i = [e.defect for e in test.entries].index("structural_anomalies")
    with pytest.raises(DatasetError, match="no entry for pixel_value 100") as e:
        test[i]
    assert str(config) in str(e.value) and "structural_anomalies/000/000.png" in str(e.value)
    for bad, match in [([{**CONFIG[0], "saturation_threshold": 1.5}], "fraction in"),
                       ([{k: v for k, v in CONFIG[1].items() if k != "pixel_value"}], "missing.*pixel_value"),
                       ({"a": 1}, "JSON list"), ([{**CONFIG[1], "saturation_threshold": 0}], "pixels > 0")]:
        config.write_text(json.dumps(bad))
        with pytest.raises(DatasetError, match=match) as e:
            MVTecLOCO(tmp_path, "juice_bottle", "test")
        assert str(config) in str(e.value)
    config.write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        MVTecLOCO(tmp_path, "juice_bottle", "test")


def test_loco_masks_with_two_values_or_another_size_are_refused(tmp_path):
    loco_tree(tmp_path)
    gt = tmp_path / "juice_bottle" / "ground_truth" / "structural_anomalies" / "000" / "000.png"
    a = np.zeros((S, S), np.uint8)
    a[0, 0], a[1, 1] = 255, 254
    Image.fromarray(a).save(gt)
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    i = [e.defect for e in test.entries].index("structural_anomalies")
    with pytest.raises(DatasetError, match="several defect values"):
        test[i]
    _mask(gt, (0, 4, 0, 4), 255, size=2 * S)
    with pytest.raises(DatasetError, match="32x32 but its image is 16x16"):
        test[i]


# --- evaluation: a tiny detector on a generated LOCO folder --------------------------------------------


class Brightness:
    """A tiny detector: the map is the image's red channel at 8x8 (block means), the score its max."""

    def fit(self, support):
        return self

    def score(self, images):
        maps = torch.stack([torch.from_numpy(np.asarray(s.image, np.float32)[..., 0].reshape(8, 2, 8, 2).mean((1, 3)))
                            for s in images])
        return DetectionResult(maps.flatten(1).max(1).values, maps)


def test_evaluate_reports_auspro_when_the_split_has_defect_configs(tmp_path):
    loco_tree(tmp_path)
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    values, result = evaluate(Brightness(), test, batch_size=3)
    assert set(SPRO_METRICS) <= values.keys()
    assert SPRO_METRICS == ("pixel_auspro_0.01", "pixel_auspro_0.05", "pixel_auspro_0.1", "pixel_auspro_0.3",
                            "pixel_auspro_1")
    samples = list(test)
    # evaluate scores at the maps' size (8x8); the masks of this tree are 2x2-block-constant, so that is
    # exactly the official evaluation (at the images' 16x16) of the maps upsampled by nearest neighbour
    big = np.kron(result.maps.numpy(), np.ones((1, 2, 2), np.float32))
    chans = [[Channel(r.mask, r.saturation_threshold, r.relative_saturation) for r in s.regions] for s in samples]
    subdirs = [s.path.parent.name for s in samples]
    ref = official_by_subdir(big, chans, subdirs)
    for limit, key in zip(LIMITS, SPRO_METRICS):
        assert values[key] == pytest.approx(ref["mean"][limit], abs=1e-12)


def test_evaluate_without_defect_configs_reports_nan_with_the_reason(tmp_path):
    loco_tree(tmp_path, config=None)
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    with pytest.warns(UndefinedMetricWarning, match="sPRO not computed: no .*defects_config.json"):
        values, _ = evaluate(Brightness(), test)
    assert all(np.isnan(values[k]) for k in SPRO_METRICS)
    assert not np.isnan(values["pixel_aupro"])
    plain_samples = [Sample(**{f.name: getattr(x, f.name) for f in fields(Sample)}) for x in test]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # samples without regions (MVTec AD, ...): no sPRO, nothing to warn about
        plain, _ = evaluate(Brightness(), plain_samples)
    assert not set(SPRO_METRICS) & plain.keys() and plain["pixel_aupro"] == values["pixel_aupro"]


# --- the LOCO benchmark -------------------------------------------------------------------------------


@pytest.mark.parametrize("with_config", [True, False])
def test_loco_benchmark_reports_auspro(tmp_path, tiny_model, with_config):
    """results.csv and summary.md carry the AUsPRO columns for MVTec LOCO: values where the category has
    its defects_config.json (LAKE's fast path and a detector scored through the protocol alike), NaN
    ("n/a") with the reason warned where it has none."""
    import csv

    from lake_interp.benchmark import BenchmarkSpec, run_benchmark

    loco_tree(tmp_path / "data", config=CONFIG if with_config else None)
    spec = BenchmarkSpec("mvtec_loco", str(tmp_path / "data"), "lake-tiny", None, ["juice_bottle"], (1,), (0,),
                         methods=("lake", "patchcore"), config={"k_neurons": 4})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = run_benchmark(tiny_model, spec, tmp_path / "bench", progress=False)
    with open(tmp_path / "bench" / "results.csv") as f:
        saved = list(csv.DictReader(f))
    summary = (tmp_path / "bench" / "summary.md").read_text()
    assert len(rows) == len(saved) == 2
    for row, line in zip(rows, saved):
        for key in SPRO_METRICS:
            assert key in line and key in summary
            if with_config:
                assert 0.0 <= row[key] <= 1.0 and float(line[key]) == pytest.approx(row[key])
            else:
                assert np.isnan(row[key]) and line[key] == "nan"
    reasons = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert any("sPRO not computed" in r and "defects_config.json" in r for r in reasons) == (not with_config)
