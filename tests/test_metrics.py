"""Tests of lake_interp.metrics against scikit-learn and slow, obviously correct references."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import lake_interp.metrics as M
from lake_interp.metrics import (
    UndefinedMetricWarning,
    aupro,
    aupro_200_thresholds,
    auroc,
    average_precision,
    f1_max,
    image_metrics,
    pixel_metrics,
    resize_maps_masks,
)
from lake_interp.metrics import pro as pro_module
from lake_interp.metrics import ranking as ranking_module

sklearn_metrics = pytest.importorskip("sklearn.metrics")

EIGHT = np.ones((3, 3), dtype=int)


# ----------------------------------------------------------------------------- data


def blob_masks(rng, n=6, h=24, w=24, speckle=True):
    """Random ellipse blobs on about half the images, plus speckle (diagonal contacts) on some."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if i % 2 == 0:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(1.0, h / 4), rng.uniform(1.0, w / 4)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if speckle and i % 3 == 0:
            masks[i] |= rng.random((h, w)) < 0.04
    masks[1, 0, 0] = True  # at least one anomalous pixel
    return masks


def blob_maps(rng, masks, ties=False):
    maps = rng.normal(size=masks.shape) + 1.2 * masks
    if ties:
        maps = np.round(maps * 2) / 2  # few distinct values, many ties across classes
    return maps.astype(np.float32)


# ----------------------------------------------------------------------------- references


def ref_f1_max(scores, labels):
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        fp = np.sum(pred & ~labels)
        fn = np.sum(~pred & labels)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def ref_aupro(maps, masks, lim=0.3):
    """Official MVTec AD AU-PRO, literally: loop over thresholds and regions."""
    regions = []
    for amap, mask in zip(maps, masks):
        lab, n = ndimage.label(mask, structure=EIGHT)
        regions += [amap[lab == r] for r in range(1, n + 1)]
    normal = maps[~masks]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(np.mean(normal >= t))
        ys.append(np.mean([np.mean(r >= t) for r in regions]))
    area = 0.0
    for i in range(1, len(xs)):
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        if x1 <= lim:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            y_lim = y0 + (y1 - y0) * (lim - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_lim) * (lim - x0)
            break
    return area / lim


def ref_aupro_200(maps, masks, lim=0.3, steps=200):
    """AnomalyCLIP's cal_pro_score, literally (scipy 8-connected labels instead of skimage)."""
    lo, hi = maps.min(), maps.max()
    pros, fprs = [], []
    for th in np.arange(lo, hi, (hi - lo) / steps):
        binary = maps > th
        pro = []
        for b, mask in zip(binary, masks):
            lab, n = ndimage.label(mask, structure=EIGHT)
            for r in range(1, n + 1):
                pro.append(b[lab == r].sum() / (lab == r).sum())
        fprs.append(np.logical_and(~masks, binary).sum() / (~masks).sum())
        pros.append(np.mean(pro))
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < lim
    f = fprs[keep]
    f = (f - f.min()) / (f.max() - f.min())
    return sklearn_metrics.auc(f, pros[keep])


# ----------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("kind", ["float64", "float32", "int_ties", "signed_zero_ties"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_ap_match_sklearn(kind, seed):
    rng = np.random.default_rng(seed)
    n = 500
    y = rng.random(n) < rng.uniform(0.1, 0.6)
    y[:2] = [True, False]
    if kind == "float64":
        s = rng.normal(size=n) + y
    elif kind == "float32":
        s = (rng.normal(size=n) + y).astype(np.float32)
    elif kind == "int_ties":
        s = rng.integers(0, 5, size=n) + y * rng.integers(0, 2, size=n)
    else:  # -0.0 and 0.0 must be one tie group
        s = rng.choice(np.array([-1.0, -0.0, 0.0, 0.5], dtype=np.float32), size=n) + np.float32(0.5) * y
    assert auroc(s, y) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-6)
    assert average_precision(s, y) == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_f1_max_matches_reference(ties):
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    s = rng.normal(size=400) + y
    if ties:
        s = np.round(s)
    assert f1_max(s, y) == pytest.approx(ref_f1_max(s, y), abs=1e-3)
    assert image_metrics(s, y)["f1_max"] == pytest.approx(ref_f1_max(s, y), abs=1e-3)


def test_image_metrics_keys_and_types():
    out = image_metrics([0.1, 0.9, 0.3, 0.8], [0, 1, 0, 1])
    assert set(out) == {"auroc", "ap", "f1_max"}
    assert all(type(v) is float for v in out.values())
    assert out == {"auroc": 1.0, "ap": 1.0, "f1_max": 1.0}
    assert image_metrics([0.1, 0.9], np.array([False, True])) == image_metrics([0.1, 0.9], [0.0, 1.0]) == out
    for bad in ([0, 2, 2, 0], [-1, 1, 1, -1], [0, 0.5, 1, 1]):
        with pytest.raises(ValueError, match="labels must be 0 .normal. or 1 .anomalous."):
            image_metrics([0.1, 0.9, 0.3, 0.8], bad)


def test_tie_groups_survive_chunk_boundaries():
    rng = np.random.default_rng(4)
    s = rng.integers(0, 6, size=300).astype(np.float32)
    y = rng.random(300) < 0.4
    keys = ranking_module.pack_keys(ranking_module.score_codes(s), y)
    keys.sort()
    whole = [np.concatenate(p) for p in zip(*[(tp, fp) for tp, fp, _ in ranking_module.iter_curve(keys)])]
    small = [np.concatenate(p) for p in zip(*[(tp, fp) for tp, fp, _ in ranking_module.iter_curve(keys, chunk=7)])]
    assert len(whole[0]) == len(np.unique(s))  # one point per distinct score
    for a, b in zip(whole, small):
        np.testing.assert_array_equal(a, b)


def test_chunks_inside_one_tie_group(monkeypatch):
    """Chunks that lie wholly inside a group of tied scores (binary or clipped maps) add no curve point."""
    monkeypatch.setattr(ranking_module, "CHUNK", 7)
    rng = np.random.default_rng(5)
    masks = blob_masks(rng)
    maps = np.where(rng.random(masks.shape) < 0.7, 0.0, rng.random(masks.shape) + masks).astype(np.float32)
    got = pixel_metrics(maps, masks)
    y, s = masks.ravel(), maps.ravel()
    assert got["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-9)
    assert got["ap"] == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-9)
    assert got["aupro"] == pytest.approx(ref_aupro(maps, masks, 0.3), abs=1e-3)
    binary = pixel_metrics(masks.astype(np.float32), masks)
    assert binary["auroc"] == binary["f1_max"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- pixel level / AUPRO


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("lim", [0.3, 0.05, 1.0])
def test_aupro_matches_reference(ties, lim):
    rng = np.random.default_rng(10 + ties)
    masks = blob_masks(rng)
    maps = blob_maps(rng, masks, ties=ties)
    assert aupro(maps, masks, fpr_limit=lim) == pytest.approx(ref_aupro(maps, masks, lim), abs=1e-3)


def test_aupro_region_labelling_across_image_chunks(monkeypatch):
    rng = np.random.default_rng(12)
    masks = blob_masks(rng, n=7)
    maps = blob_maps(rng, masks)
    monkeypatch.setattr(pro_module, "_LABEL_CHUNK_PIXELS", 2 * 24 * 24)  # 2 images per chunk
    assert aupro(maps, masks) == pytest.approx(ref_aupro(maps, masks), abs=1e-3)
    assert aupro_200_thresholds(maps, masks) == pytest.approx(ref_aupro_200(maps, masks), abs=1e-6)


def test_aupro_uses_eight_connectivity():
    # A diagonal chain of 3 pixels is ONE region with 8-connectivity (three with 4-connectivity);
    # plus a separate 1-pixel region. Scores 1 on the chain's first pixel and on the single pixel.
    masks = np.zeros((1, 6, 6), dtype=bool)
    maps = np.zeros((1, 6, 6), dtype=np.float32)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 3, 3] = masks[0, 5, 0] = True
    maps[0, 1, 1] = maps[0, 5, 0] = 1.0
    # Curve (0, 0) -> (0, p) -> (1, 1); 8-conn: p = mean(1/3, 1) = 2/3 (4-conn: mean(1, 0, 0, 1) = 1/2).
    p = 2 / 3
    expected = 0.5 * (p + p + (1 - p) * 0.3)  # trapezoid from 0 to 0.3, divided by 0.3
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("ties", [False, True])
def test_pixel_metrics_match_references(ties):
    rng = np.random.default_rng(20 + ties)
    masks = blob_masks(rng)
    maps = blob_maps(rng, masks, ties=ties)
    out = pixel_metrics(maps, masks)
    s, y = maps.ravel(), masks.ravel()
    assert set(out) == {"auroc", "ap", "f1_max", "aupro"}
    assert all(type(v) is float for v in out.values())
    assert out["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-6)
    assert out["ap"] == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-6)
    assert out["f1_max"] == pytest.approx(ref_f1_max(s, y), abs=1e-3)
    assert out["aupro"] == pytest.approx(ref_aupro(maps, masks), abs=1e-3)


@pytest.mark.parametrize("ties", [False, True])
def test_aupro_200_thresholds_matches_reference(ties):
    rng = np.random.default_rng(30 + ties)
    masks = blob_masks(rng)
    maps = blob_maps(rng, masks)
    if ties:
        # integers 0..200: thresholds are exactly 0, 1, ..., 199, so scores hit them (strict '>'),
        # and a few % of the pixels at the top scores keep the smallest kept FPR well above 0.
        maps = np.clip(np.round(maps * 25 + 100), 0, 200)
        top = rng.random(masks.shape)
        maps[top < 0.06] = 199
        maps[~masks & (top < 0.03)] = 200
        maps[0, 0, 0] = 0
    assert aupro_200_thresholds(maps, masks) == pytest.approx(ref_aupro_200(maps, masks), abs=1e-6)


# ----------------------------------------------------------------------------- edge cases


def test_all_normal_gives_nan_and_warning():
    with pytest.warns(UndefinedMetricWarning, match="no anomalous"):
        out = image_metrics([0.1, 0.5, 0.2], [0, 0, 0])
    assert all(math.isnan(v) for v in out.values())
    with pytest.warns(UndefinedMetricWarning, match="no anomalous"):
        out = pixel_metrics(np.random.rand(2, 8, 8), np.zeros((2, 8, 8), dtype=bool))
    assert set(out) == {"auroc", "ap", "f1_max", "aupro"} and all(math.isnan(v) for v in out.values())
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(aupro(np.random.rand(2, 8, 8), np.zeros((2, 8, 8))))
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(aupro_200_thresholds(np.random.rand(2, 8, 8), np.zeros((2, 8, 8))))


def test_all_anomalous_gives_nan_and_warning():
    with pytest.warns(UndefinedMetricWarning, match="no normal"):
        out = image_metrics([0.1, 0.5, 0.2], [1, 1, 1])
    assert all(math.isnan(v) for v in out.values())
    with pytest.warns(UndefinedMetricWarning, match="no normal"):
        assert math.isnan(auroc([0.3, 0.4], [True, True]))
    with pytest.warns(UndefinedMetricWarning, match="no normal"):
        out = pixel_metrics(np.random.rand(2, 8, 8), np.ones((2, 8, 8), dtype=bool))
    assert all(math.isnan(v) for v in out.values())


def test_perfect_and_inverted_separation():
    rng = np.random.default_rng(40)
    masks = blob_masks(rng, speckle=False)
    perfect = masks.astype(np.float32) + 0.1 * rng.random(masks.shape, dtype=np.float32)
    out = pixel_metrics(perfect, masks)
    assert out["auroc"] == 1.0 and out["ap"] == pytest.approx(1.0) and out["f1_max"] == pytest.approx(1.0)
    assert out["aupro"] == pytest.approx(1.0, abs=1e-9)
    inverted = pixel_metrics(-perfect, masks)
    assert inverted["auroc"] == 0.0
    assert inverted["aupro"] == pytest.approx(0.0, abs=1e-9)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    assert image_metrics(labels * 1.0, labels)["auroc"] == 1.0
    assert image_metrics(-1.0 * labels, labels)["auroc"] == 0.0


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, float("nan")], [0, 1])


# ----------------------------------------------------------------------------- resolution / inputs


def test_resolution_resizes_maps_and_masks():
    rng = np.random.default_rng(50)
    masks = blob_masks(rng, n=4, h=32, w=32, speckle=False)
    maps_small = masks.reshape(4, 16, 2, 16, 2).mean(axis=(2, 4)).astype(np.float32)  # 16x16 maps
    with pytest.raises(ValueError, match=r"\(4, 16, 16\).*\(4, 32, 32\)"):
        pixel_metrics(maps_small, masks)
    out = pixel_metrics(maps_small, masks, resolution=32)
    assert out["auroc"] > 0.95 and out["aupro"] > 0.8
    # both resized to a common third size
    assert pixel_metrics(maps_small, masks, resolution=(24, 24))["auroc"] > 0.95
    # resolution equal to the given size changes nothing
    assert pixel_metrics(maps_small.repeat(2, 1).repeat(2, 2), masks, resolution=32) == \
        pixel_metrics(maps_small.repeat(2, 1).repeat(2, 2), masks)


def test_resize_is_half_pixel_bilinear_and_nearest():
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]]], dtype=np.float32)
    masks = np.array([[[True, False], [False, False]]])
    m, g = resize_maps_masks(maps, masks, 4)
    # torch.nn.functional.interpolate(bilinear, align_corners=False) gives these values
    np.testing.assert_allclose(m[0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(m[0, :, 0], [0.0, 0.5, 1.5, 2.0], atol=1e-6)
    assert g.dtype == bool and g[0, :2, :2].all() and g[0].sum() == 4


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(60)
    masks = blob_masks(rng)
    maps = blob_maps(rng, masks)
    expected = pixel_metrics(maps, masks)
    got = pixel_metrics(torch.from_numpy(maps).requires_grad_(True), torch.from_numpy(masks))
    assert got == expected
    s = torch.tensor([0.2, 0.9, 0.4], dtype=torch.float64)
    assert image_metrics(s, torch.tensor([0, 1, 0]))["auroc"] == 1.0


def test_metrics_package_imports_only_numpy_scipy_stdlib():
    allowed = {"numpy", "scipy", "__future__", "collections", "math", "warnings", "typing"}
    for path in Path(M.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"
