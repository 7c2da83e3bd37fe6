"""Safety, class "metrics": exact ranking at any dtype, binary / tied maps, numeric and finite inputs.

The reference AU-PRO below is the official MVTec AD computation (``compute_pro`` of
``pro_curve_util.py`` and ``trapezoid`` of ``generic_util.py``), written out here independently of
``lake_interp.metrics``: per-pixel FP / PRO increments, one argsort of the float64 scores, cumulative
sums, one point per distinct score, (0, 0) and (1, 1) appended, trapezoid up to FPR 0.3 with
linear interpolation there, divided by 0.3.
"""

from __future__ import annotations

from bisect import bisect

import numpy as np
import pytest
from scipy import ndimage
from sklearn import metrics as skm

from lake_interp.metrics import aupro, aupro_200_thresholds, image_metrics, pixel_metrics


def official_trapezoid(x, y, x_max):
    x, y = np.asarray(x, float), np.asarray(y, float)
    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def official_aupro(anomaly_maps, ground_truth_maps, limit=0.3):
    structure = np.ones((3, 3), dtype=int)
    n_ok, n_regions = 0, 0
    fp_changes = np.zeros(anomaly_maps.shape, dtype=np.float64)
    pro_changes = np.zeros(anomaly_maps.shape, dtype=np.float64)
    for i, gt in enumerate(ground_truth_maps):
        labeled, n = ndimage.label(gt, structure)
        n_regions += n
        ok = labeled == 0
        n_ok += ok.sum()
        fp_changes[i, ok] = 1
        for k in range(n):
            region = labeled == k + 1
            pro_changes[i, region] = 1.0 / region.sum()
    scores = np.array(anomaly_maps).ravel()  # dtype kept: float64 stays float64
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]) / n_ok
    pros = np.cumsum(pro_changes.ravel()[order]) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs = np.concatenate(([0.0], np.clip(fprs[keep], None, 1.0), [1.0]))
    pros = np.concatenate(([0.0], np.clip(pros[keep], None, 1.0), [1.0]))
    return official_trapezoid(fprs, pros, limit) / limit


def blob_case(seed=0, n=6, size=32):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(1, n):
        r, c = rng.integers(4, size - 10, 2)
        masks[i, r:r + rng.integers(3, 8), c:c + rng.integers(3, 8)] = True
    return rng, masks


def offset_case(seed=0):
    """The issue's case: a large offset plus variations far below float32 precision at that offset
    (float32 spacing at 1000 is 6e-5; the variations are ~1e-6)."""
    rng, masks = blob_case(seed)
    maps = 1000.0 + 1e-6 * (rng.random(masks.shape) + 1.2 * masks)
    return maps, masks


class TestExactRanking:
    def test_offset_case_matches_official_aupro(self):
        maps, masks = offset_case()
        official = official_aupro(maps, masks)
        assert official > 0.9  # the maps do separate the regions ...
        # ... but rounded to float32 they are one constant: the old result (0.15) is the tie curve
        assert official_aupro(maps.astype(np.float32), masks) == pytest.approx(0.15, abs=1e-9)
        assert aupro(maps, masks) == pytest.approx(official, abs=1e-9)
        out = pixel_metrics(maps, masks)
        assert out["aupro"] == pytest.approx(official, abs=1e-9)
        assert out["auroc"] == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
        assert out["ap"] == pytest.approx(skm.average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)

    def test_offset_case_with_resolution_keeps_float64(self):
        maps, masks = offset_case(1)
        out = pixel_metrics(maps, masks, resolution=32)  # same size: no resize, still exact
        assert out["aupro"] == pytest.approx(official_aupro(maps, masks), abs=1e-9)
        up = pixel_metrics(maps, masks, resolution=48)["aupro"]
        assert up > 0.9  # resized in float64: the variations survive the resize

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_float32_and_exact_float64_agree(self, seed):
        rng, masks = blob_case(seed)
        maps32 = (rng.random(masks.shape) + masks).astype(np.float32)
        ref = official_aupro(maps32.astype(np.float64), masks)
        assert aupro(maps32, masks) == pytest.approx(ref, abs=1e-9)
        assert aupro(maps32.astype(np.float64), masks) == pytest.approx(ref, abs=1e-9)

    def test_image_scores_offset_exact(self):
        rng = np.random.default_rng(3)
        labels = rng.random(200) < 0.4
        scores = 1e6 + 1e-7 * (rng.random(200) + labels)
        assert image_metrics(scores, labels)["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)

    def test_int64_scores_beyond_float32(self):
        _, masks = blob_case(4)
        maps = (1 << 40) + np.arange(masks.size, dtype=np.int64).reshape(masks.shape) % 7 + 3 * masks
        assert aupro(maps, masks) == pytest.approx(official_aupro(maps.astype(np.float64), masks), abs=1e-9)


class TestBinaryAndTiedMaps:
    def test_binary_maps_every_variant(self):
        _, masks = blob_case(5)
        binary = masks.copy()
        binary[0, :3, :3] = True  # a few false positives
        ref = official_aupro(binary.astype(np.float64), masks)
        assert aupro(binary, masks) == pytest.approx(ref, abs=1e-9)
        out = pixel_metrics(binary.astype(np.float32), masks)
        assert all(np.isfinite(v) for v in out.values())
        assert out["auroc"] == pytest.approx(skm.roc_auc_score(masks.ravel(), binary.ravel()), abs=1e-12)
        with pytest.raises(ValueError, match="aupro_200_thresholds is undefined.*binary.*use aupro"):
            aupro_200_thresholds(binary, masks)

    def test_constant_maps(self):
        _, masks = blob_case(6)
        const = np.full(masks.shape, 0.7)
        assert aupro(const, masks) == pytest.approx(official_aupro(const, masks), abs=1e-12)
        assert aupro(const, masks) == pytest.approx(0.15, abs=1e-12)
        with pytest.raises(ValueError, match="constant anomaly maps"):
            aupro_200_thresholds(const, masks)


class TestNumericFiniteInputs:
    @pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
    def test_non_finite_maps_and_scores(self, bad):
        _, masks = blob_case(7)
        maps = np.random.default_rng(0).random(masks.shape)
        maps[1, 2, 3] = bad
        with pytest.raises(ValueError, match="maps must be finite"):
            pixel_metrics(maps, masks)
        with pytest.raises(ValueError, match="maps must be finite"):
            aupro(maps, masks)
        with pytest.raises(ValueError, match="scores must be finite"):
            image_metrics([0.1, bad, 0.3], [0, 1, 1])

    def test_non_numeric(self):
        with pytest.raises(TypeError, match="scores must be numeric"):
            image_metrics(np.array(["a", "b"]), [0, 1])
        with pytest.raises(TypeError, match="labels must be numeric"):
            image_metrics([0.1, 0.2], np.array(["0", "1"]))
        with pytest.raises(TypeError, match="maps must be numeric"):
            pixel_metrics(np.array([[["x"]]], dtype=object), np.ones((1, 1, 1), bool))
        with pytest.raises(TypeError, match="masks must be numeric"):
            pixel_metrics(np.zeros((1, 2, 2)), np.array([[["a", "b"], ["c", "d"]]]))
