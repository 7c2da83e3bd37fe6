"""Saturated per-region overlap (sPRO) and its area (AUsPRO): the localisation metric of MVTec LOCO AD.

The definition is that of the official MVTec LOCO AD evaluation (Bergmann et al., "Beyond Dents and
Scratches: Logical Constraints in Unsupervised Anomaly Detection and Localization", IJCV 2022; code
``mvtec_loco_ad_evaluation``: ``src/image.py``, ``src/metrics.py``, ``src/aggregation.py``,
``src/util.py``, ``evaluate_experiment.py``):

* a ground-truth region is one mask image (``ground_truth/<type>/<stem>/NNN.png``; ``GroundTruthChannel``),
  never split into connected components and never merged with the other masks of its image; its
  non-zero value is the defect's ``pixel_value`` in ``<category>/defects_config.json``;
* its saturation area (``GroundTruthChannel.get_saturation_area``), for a region of A pixels:
  ``min(saturation_threshold, A)`` for an absolute threshold, ``int(saturation_threshold * A)`` for a
  relative one (``relative_saturation``): :func:`saturation_area`;
* at a threshold t a pixel is predicted anomalous when its score is > t (``AnomalyMap.get_binary_images``);
  the sPRO of a region is ``min(1, |predicted & region| / saturation area)`` (``get_spro``); the curve's
  y is the mean over all regions of all images (``ThresholdMetrics.get_mean_spros``), its x the FPR over
  every pixel outside all regions of its image -- good images and the defect-free pixels of anomalous
  images alike (``get_fp_areas_for_thresholds``, ``get_fp_rates``);
* AUsPRO: the trapezoid from (0, 0) up to the FPR limit, interpolated linearly there, divided by the
  limit (``util.get_auc_for_max_fpr``, ``util.trapz``), at the limits 0.01, 0.05, 0.1, 0.3 and 1
  (``MAX_FPRS``): :func:`auspro`;
* per category the script reports it on the good images plus the logical anomalies, on the good images
  plus the structural anomalies, and the mean of the two (``get_auc_spro_results``,
  ``get_auc_spros_per_subdir``): :func:`auspro_by_defect_type`.

Exact: every distinct score is a threshold. (The official script picks thresholds adaptively until
neighbouring curve points are at most ``--curve_max_distance`` = 0.01 apart, ``MetricsAggregator.run``;
its values approximate these.) It is one sort of pixels, as the AU-PRO of :mod:`.pro`: a key per
defect-free pixel (group 0) and one per (region, pixel) pair (a pixel in two overlapping regions counts
for both, as in the official per-channel true positives). Sorted by decreasing score, the k-th pixel of
a region with saturation area s raises that region's sPRO by ``min(1, k/s) - min(1, (k-1)/s)``: 1/s
for its first floor(s) pixels, ``(s - floor(s)) / s`` for the next one, 0 after. Each pixel gets the
group id of its weight (the order of tied pixels within a region does not change the sum at the end of
the tie), and the cumulative weight sums at every distinct threshold give the curve.

Resolution: a saturation threshold counts pixels of the mask at its image's own size (the official
evaluation takes anomaly maps at that size). At another evaluation size a region's mask is resized by
nearest neighbour (``resize_mask``) and its saturation area scaled by the ratio of the region's areas,
so the saturated *fraction* of each region is kept (:func:`region_at_size`): at the image's size the
values are the official ones, and at a size it divides exactly (block-constant masks) they equal the
official values of the maps upsampled by nearest neighbour. A region that vanishes at the evaluation
size is left out, with a warning (evaluate at a larger size for the official value).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ._inputs import _size_hw, _to_nhw, as_numpy, prepare_maps_masks, resize_mask, undefined
from .pro import ProAccumulator, _check_limit, _dense_codes
from .ranking import iter_curve, score_codes

__all__ = [
    "AUSPRO_FPR_LIMITS",
    "SaturatedRegion",
    "saturation_area",
    "region_at_size",
    "spro_curve",
    "auspro",
    "auspro_by_defect_type",
]

#: The integration limits of the official evaluation (``MAX_FPRS`` of ``evaluate_experiment.py``).
AUSPRO_FPR_LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)


class SaturatedRegion(NamedTuple):
    """One defect region with its saturation area at the size of its mask.

    mask: bool [H, W]; saturation_area: pixels at that size (> 0, at most the region's area; may be
    fractional after a resize); name: what messages call it (e.g. the mask file).
    """

    mask: np.ndarray
    saturation_area: float
    name: str = ""


def saturation_area(area: int, saturation_threshold: float, relative_saturation: bool) -> float:
    """The official saturation area of a region of ``area`` pixels (``get_saturation_area``):
    ``int(saturation_threshold * area)`` if ``relative_saturation`` (threshold in (0, 1]), else
    ``min(saturation_threshold, area)`` (threshold in pixels, > 0)."""
    t = saturation_threshold
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not math.isfinite(t):
        raise ValueError(f"saturation_threshold must be a finite number, got {t!r}")
    if relative_saturation:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"a relative saturation_threshold must be in (0, 1], got {t!r}")
        return int(t * area)
    if not t > 0:
        raise ValueError(f"an absolute saturation_threshold (pixels) must be > 0, got {t!r}")
    return min(t, area)


def region_at_size(region: Any, size) -> SaturatedRegion:
    """``region`` as a :class:`SaturatedRegion` at ``size`` (int or (H, W)).

    ``region``: a SaturatedRegion, or a defect region as the MVTec LOCO loader gives it (anything with
    ``mask`` at its image's own size, ``saturation_threshold`` and ``relative_saturation``; ``path``
    names it). Its saturation area at its own size is the official one (:func:`saturation_area`);
    at ``size`` the mask is resized by nearest neighbour and the saturation area scaled by the ratio
    of the region's areas (the saturated fraction is kept). A region that vanishes at ``size`` comes
    back empty (saturation area 0)."""
    mask = as_numpy(region.mask)
    if mask.ndim != 2:
        raise ValueError(f"a region mask must be [H, W]; got shape {mask.shape}")
    mask = mask if mask.dtype == np.bool_ else mask != 0
    name = str(getattr(region, "name", "") or getattr(region, "path", "") or "a region")
    area = int(np.count_nonzero(mask))
    if area == 0:
        raise ValueError(f"{name}: empty defect region (no pixel set); an sPRO region needs pixels")
    if isinstance(region, SaturatedRegion):
        sat = float(region.saturation_area)
        if not 0 < sat <= area:
            raise ValueError(f"{name}: saturation area {sat} must be in (0, {area}] (the region's area)")
    else:
        sat = saturation_area(area, region.saturation_threshold, bool(region.relative_saturation))
        if sat <= 0:
            raise ValueError(
                f"{name}: saturation area int({region.saturation_threshold} * {area}) = 0 for a region of {area} "
                "pixels (relative saturation); the official sPRO divides by it, so it is undefined here")
    out = resize_mask(mask, size)
    new_area = int(np.count_nonzero(out))
    # exact when the area is unchanged: (sat * area) / area of integers below 2**53
    return SaturatedRegion(out, sat * new_area / area if new_area != area else sat, name)


def _prepare(maps, regions, resolution):
    """(maps [N, H, W] float32/float64 at the evaluation size, per image a list of non-empty
    SaturatedRegions there, union of the regions [N, H, W] bool)."""
    m = _to_nhw(as_numpy(maps), "maps")
    if not isinstance(regions, (list, tuple)) or len(regions) != m.shape[0]:
        n = len(regions) if isinstance(regions, (list, tuple)) else type(regions).__name__
        raise ValueError(f"regions must be a list with one entry per map (a list of regions, empty or None for "
                         f"an image without defects): {m.shape[0]} maps, {n} region entries")
    size = m.shape[1:] if resolution is None else _size_hw(resolution)
    per_image, vanished = [], []
    for rs in regions:
        kept = []
        for r in rs or ():
            r = region_at_size(r, size)
            (kept if r.saturation_area > 0 else vanished).append(r)
        per_image.append(kept)
    if vanished:
        warnings.warn(f"{len(vanished)} defect regions vanish at the evaluation size {size[0]}x{size[1]} (nearest "
                      f"resize) and are left out of the sPRO (e.g. {vanished[0].name}); evaluate at a larger size "
                      "(the images' own size gives the official value)", UserWarning, stacklevel=3)
    union = np.zeros((m.shape[0], *size), bool)
    for i, rs in enumerate(per_image):
        for r in rs:
            union[i] |= r.mask
    m, union = prepare_maps_masks(m, union, resolution)
    return m, per_image, union


def _curve_points(maps: np.ndarray, regions: list[list[SaturatedRegion]], union: np.ndarray):
    """(n_neg, n_regions, iterator of (fp, wsum)) over the distinct thresholds, highest first: fp =
    defect-free pixels with score >= threshold, wsum = sum of the regions' sPROs there."""
    n_img, h, w = maps.shape
    flat = maps.reshape(-1)
    codes = score_codes(flat) if maps.dtype == np.float32 else _dense_codes(flat)
    neg = ~union.reshape(-1)
    n_neg = int(np.count_nonzero(neg))
    flat_regions = [(i, r) for i, rs in enumerate(regions) for r in rs]
    n_regions = len(flat_regions)
    if n_neg == 0 or n_regions == 0:
        return n_neg, n_regions, iter(())
    areas = [int(np.count_nonzero(r.mask)) for _, r in flat_regions]
    keys = np.empty(n_neg + sum(areas), dtype=np.uint64)
    keys[:n_neg] = codes[neg].astype(np.uint64) << np.uint64(32)
    zero_id = 2 * n_regions + 1
    weights = np.zeros(2 * n_regions + 2)
    pos = n_neg
    for j, ((i, r), area) in enumerate(zip(flat_regions, areas)):
        s = float(r.saturation_area)
        full = min(int(math.floor(s)), area)
        weights[1 + j] = 1.0 / s
        weights[1 + n_regions + j] = (s - full) / s
        c = codes[i * h * w + np.flatnonzero(r.mask)]
        order = np.argsort(c, kind="stable")  # ascending code = descending score
        gid = np.full(area, zero_id, dtype=np.uint64)
        gid[order[:full]] = 1 + j
        if full < area and s > full:
            gid[order[full]] = 1 + n_regions + j
        keys[pos:pos + area] = (c.astype(np.uint64) << np.uint64(32)) | gid
        pos += area
    keys.sort()
    return n_neg, n_regions, ((fp, wsum) for _, fp, wsum in iter_curve(keys, weights))


def _auspro_prepared(maps, regions, union, limits: Sequence[float]) -> dict[float, float]:
    n_neg, n_regions, points = _curve_points(maps, regions, union)
    keys = [f"auspro_{limit:g}" for limit in limits]
    if n_regions == 0 or n_neg == 0:
        what = "defect regions" if n_regions == 0 else "defect-free pixels"
        nan = undefined(keys, f"sPRO: no {what} among {maps.shape[0]} images", stacklevel=4)
        return {limit: nan[k] for limit, k in zip(limits, keys)}
    accs = [ProAccumulator(n_neg, n_regions, limit) for limit in limits]
    for fp, wsum in points:
        for acc in accs:
            acc.update(fp, wsum)
        if all(acc.done for acc in accs):
            break
    return {limit: acc.result() for limit, acc in zip(limits, accs)}


def _limits(fpr_limits) -> tuple[float, ...]:
    limits = tuple(_check_limit(x) for x in (fpr_limits if isinstance(fpr_limits, (list, tuple)) else [fpr_limits]))
    if not limits:
        raise ValueError("fpr_limits is empty: give at least one FPR limit in (0, 1]")
    return limits


def spro_curve(maps, regions, resolution=None) -> tuple[np.ndarray, np.ndarray]:
    """The exact sPRO curve: (FPRs, mean sPROs), float64, from (0, 0) to (1, 1), one point per distinct
    score (highest first). ``maps`` [N, H, W]; ``regions``: per image a list of regions (see
    :func:`auspro`). Holds the whole curve in memory (up to one point per pixel)."""
    maps, regions, union = _prepare(maps, regions, resolution)
    n_neg, n_regions, points = _curve_points(maps, regions, union)
    if n_regions == 0 or n_neg == 0:
        raise ValueError(f"the sPRO curve needs defect regions and defect-free pixels; got {n_regions} regions "
                         f"and {n_neg} defect-free pixels")
    fprs, spros = [np.zeros(1)], [np.zeros(1)]
    for fp, wsum in points:
        fprs.append(fp / n_neg)
        spros.append(wsum / n_regions)
    return np.concatenate(fprs), np.concatenate(spros)


def auspro(maps, regions, fpr_limits=AUSPRO_FPR_LIMITS, resolution=None) -> dict[float, float]:
    """Area under the sPRO curve up to each FPR limit, divided by it: ``{limit: AUsPRO}`` over all images.

    ``maps`` [N, H, W] anomaly maps (numpy or torch). ``regions``: a list with one entry per image, the
    list of its defect regions (empty or None for a good image): :class:`SaturatedRegion`, or the
    regions of the MVTec LOCO loader (``Sample.regions``: mask at the image's own size, the defect's
    saturation threshold). ``resolution``: None (evaluate at the maps' size) or int / (H, W): maps
    resized bilinearly to it. Region masks are resized to the evaluation size (:func:`region_at_size`).
    NaN (with an ``UndefinedMetricWarning``) without regions or without defect-free pixels.
    """
    limits = _limits(fpr_limits)
    maps, regions, union = _prepare(maps, regions, resolution)
    return _auspro_prepared(maps, regions, union, limits)


def auspro_by_defect_type(maps, regions, defects: Sequence[str], fpr_limits=AUSPRO_FPR_LIMITS,
                          resolution=None) -> dict[str, dict[float, float]]:
    """AUsPRO per defect type and their mean, as the official script reports a category.

    For each defect type (``defects[i]`` of the images that have regions, e.g. "logical_anomalies",
    "structural_anomalies") the curve of those images together with every image without regions (the
    good images), as ``get_auc_spros_per_subdir(add_good_images=True)``; ``"mean"``: the mean over the
    types (the official headline value with its two types). Returns ``{type: {limit: AUsPRO}, ...,
    "mean": {limit: ...}}``. Other arguments as :func:`auspro`.
    """
    limits = _limits(fpr_limits)
    maps, regions, union = _prepare(maps, regions, resolution)
    if len(defects) != maps.shape[0]:
        raise ValueError(f"defects must name the defect type of every image: {maps.shape[0]} maps, {len(defects)} defects")
    good = [i for i, rs in enumerate(regions) if not rs]
    types = sorted({str(defects[i]) for i, rs in enumerate(regions) if rs})
    if "mean" in types:
        raise ValueError("a defect type may not be called 'mean' (the key of the mean over the types)")
    out: dict[str, dict[float, float]] = {}
    for t in types:
        idx = sorted(good + [i for i, rs in enumerate(regions) if rs and str(defects[i]) == t])
        out[t] = _auspro_prepared(maps[idx], [regions[i] for i in idx], union[idx], limits)
    if not types:
        out["mean"] = _auspro_prepared(maps, regions, union, limits)  # NaN, with the warning
    else:
        out["mean"] = {limit: float(np.mean([out[t][limit] for t in types])) for limit in limits}
    return out
