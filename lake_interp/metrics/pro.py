"""Per-region overlap (PRO) metrics and the single-sort pixel evaluation.

:func:`aupro` follows the official MVTec AD evaluation (``compute_pro`` in ``pro_curve_util.py``
and ``trapezoid`` in ``generic_util.py``):

* ground-truth regions are the connected components of every mask, 8-connectivity
  (``scipy.ndimage.label`` with a 3x3 structure of ones), never spanning two images;
* at every distinct score threshold t (pixels with score >= t are predicted anomalous):
  FPR = fraction of all normal pixels predicted anomalous, PRO = mean over *all* regions of the
  fraction of the region's pixels predicted anomalous; equal scores form one threshold;
* the curve starts at (0, 0) and is integrated with the trapezoidal rule up to ``fpr_limit``,
  interpolating linearly at ``fpr_limit``, then divided by ``fpr_limit``.

It is computed exactly, with no loop over thresholds: the PRO at t is the cumulative sum, over
pixels sorted by decreasing score, of ``1 / size(region of the pixel)`` (0 for normal pixels),
divided by the number of regions. Pixels are packed into uint64 keys ``score_code << 32 |
region_id`` and sorted once (O(P log P)); the same sorted keys give AUROC, AP and F1-max.

:func:`aupro_200_thresholds` is the coarser variant of many CLIP papers (AnomalyCLIP's
``cal_pro_score``, after CFlow-AD), for like-for-like comparison with their tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from ._inputs import class_counts, prepare_maps_masks
from .ranking import RANKING_KEYS, RankingAccumulator, iter_curve, pack_keys, score_codes

__all__ = ["aupro", "aupro_200_thresholds", "pixel_curve_metrics", "iter_regions"]

# 8-connectivity inside each image, no connection between images of the [N, H, W] stack.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True
_LABEL_CHUNK_PIXELS = 1 << 22  # pixels labelled / packed per chunk of images


def _check_limit(fpr_limit: float) -> float:
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return fpr_limit


def iter_regions(masks: np.ndarray) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Label ground-truth regions a chunk of images at a time.

    Yields ``(images, labels, sizes)``: the slice of images, their int32 labels (0 = normal,
    ids unique over the whole stack, numbered from 1 in order) and the pixel count of each
    new region (``sizes[k]`` belongs to the k-th id of this chunk).
    """
    n, h, w = masks.shape
    step = max(1, _LABEL_CHUNK_PIXELS // max(1, h * w))
    offset = 0
    for i in range(0, n, step):
        images = slice(i, min(i + step, n))
        labels, count = ndimage.label(masks[images], structure=_STRUCTURE)
        sizes = np.bincount(labels.reshape(-1), minlength=count + 1)[1:]
        if offset:
            np.add(labels, offset, out=labels, where=labels > 0)
        offset += count
        yield images, labels, sizes


class ProAccumulator:
    """Trapezoid of the (FPR, PRO) curve from (0, 0) up to ``fpr_limit`` (MVTec ``trapezoid``)."""

    def __init__(self, n_neg: int, n_regions: int, fpr_limit: float):
        self.n_neg, self.n_regions, self.limit = n_neg, n_regions, fpr_limit
        self._x, self._y = 0.0, 0.0
        self._area = 0.0
        self.done = False

    def update(self, fp: np.ndarray, wsum: np.ndarray) -> None:
        if self.done:
            return
        x = np.concatenate(([self._x], fp / self.n_neg))
        y = np.concatenate(([self._y], wsum / self.n_regions))
        k = int(np.searchsorted(x, self.limit, side="right"))  # x[:k] <= limit (x is sorted)
        self._area += float(np.sum(0.5 * (y[1:k] + y[: k - 1]) * np.diff(x[:k])))
        if k < x.size:  # crosses the limit between x[k-1] and x[k]: interpolate there
            x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
            y_lim = y0 + (y1 - y0) * (self.limit - x0) / (x1 - x0)
            self._area += 0.5 * (y_lim + y0) * (self.limit - x0)
            self.done = True
        else:
            self._x, self._y = float(x[-1]), float(y[-1])

    def result(self) -> float:
        return float(self._area / self.limit)


def _dense_codes(flat: np.ndarray) -> np.ndarray:
    """uint32 codes of float64 scores: code = number of distinct values above the score (equal scores
    equal codes, ascending code = descending score), exact at float64 precision. One argsort of the
    original values (no rounding); -0.0 and +0.0 are one value."""
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint32)
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    rank = np.empty(flat.size, dtype=np.uint32)
    new = np.empty(flat.size, dtype=np.uint32)
    new[0] = 0
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:], casting="unsafe")
    del ordered
    np.cumsum(new, out=new)  # dense rank in ascending order
    top = int(new[-1])
    np.subtract(np.uint32(top), new, out=new)
    rank[order] = new
    return rank


def pixel_curve_metrics(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3,
                        ranking: bool = True) -> dict[str, float]:
    """AUPRO (and, with ``ranking``, pixel AUROC/AP/F1-max) from a single sort of all pixels.

    ``maps``: float32 or float64 [N, H, W]; ``masks``: bool [N, H, W] (see ``prepare_maps_masks``).
    float32 maps are coded chunk by chunk from their bits; float64 maps (whose values are not all
    float32, see ``exact_float_dtype``) by their dense rank among all distinct values, so they are
    ranked exactly. Memory: one uint64 key per pixel plus chunk-sized temporaries (float64 maps:
    plus the sorted distinct values).
    """
    fpr_limit = _check_limit(fpr_limit)
    maps = np.asarray(maps)
    if maps.dtype != np.float64:
        maps = maps.astype(np.float32, copy=False)
    masks = np.asarray(masks, dtype=bool)
    names = (*RANKING_KEYS, "aupro") if ranking else ("aupro",)
    n_pos, n_neg, nan_result = class_counts(masks, names, "pixels")
    if nan_result is not None:
        return nan_result

    keys = np.empty(masks.size, dtype=np.uint64)
    flat = maps.reshape(-1)
    dense = None if maps.dtype == np.float32 else _dense_codes(flat)
    all_sizes = []
    for images, labels, sizes in iter_regions(masks):
        px = slice(images.start * maps[0].size, images.stop * maps[0].size)
        pack_keys(score_codes(flat[px]) if dense is None else dense[px], labels.reshape(-1), out=keys[px])
        all_sizes.append(sizes)
    sizes = np.concatenate(all_sizes)
    weights = np.concatenate(([0.0], 1.0 / sizes))
    keys.sort()

    pro = ProAccumulator(n_neg, sizes.size, fpr_limit)
    rank = RankingAccumulator(n_pos, n_neg) if ranking else None
    for tp, fp, wsum in iter_curve(keys, weights):
        pro.update(fp, wsum)
        if rank is not None:
            rank.update(tp, fp)
        elif pro.done:
            break
    out = rank.result() if rank is not None else {}
    out["aupro"] = pro.result()
    return out


def aupro(maps, masks, fpr_limit: float = 0.3, resolution=None) -> float:
    """Area under the PRO curve up to ``fpr_limit``, normalised by it (official MVTec AD AU-PRO).

    ``maps`` [N, H, W] anomaly maps, ``masks`` [N, H, W] ground truth (numpy or torch).
    NaN with an :class:`UndefinedMetricWarning` when there are no anomalous or no normal pixels.
    """
    maps, masks = prepare_maps_masks(maps, masks, resolution)
    return pixel_curve_metrics(maps, masks, fpr_limit, ranking=False)["aupro"]


def aupro_200_thresholds(maps, masks, fpr_limit: float = 0.3, resolution=None,
                         num_thresholds: int = 200) -> float:
    """AnomalyCLIP / CFlow-AD style AU-PRO ("cal_pro_score"), for comparison with CLIP papers.

    Thresholds ``np.arange(min, max, (max - min) / num_thresholds)`` over the map values; a pixel
    is predicted anomalous when ``score > threshold``; PRO = mean over all 8-connected regions of
    their overlap; FPR over normal pixels; points with FPR < ``fpr_limit`` are kept, their FPRs
    min-max rescaled to [0, 1] (as in AnomalyCLIP's code), and the trapezoidal area is returned.
    Unlike :func:`aupro` this is *not* normalised by an interpolated point at ``fpr_limit`` and
    depends on the score range; use :func:`aupro` for the official value.

    Computed without looping over thresholds: each pixel is binned by ``np.searchsorted`` and the
    per-region / normal-pixel counts per bin are accumulated with ``np.bincount``.
    """
    fpr_limit = _check_limit(fpr_limit)
    maps, masks = prepare_maps_masks(maps, masks, resolution)
    name = ("aupro_200_thresholds",)
    n_pos, n_neg, nan_result = class_counts(masks, name, "pixels")
    if nan_result is not None:
        return nan_result[name[0]]
    lo, hi = maps.min(), maps.max()
    if not hi > lo:
        raise ValueError("aupro_200_thresholds is undefined on constant anomaly maps (its thresholds span "
                         "[min, max) of the maps); use aupro, the official MVTec AU-PRO, which is defined there")
    thresholds = np.arange(lo, hi, (hi - lo) / num_thresholds)
    k = thresholds.size
    # bin b = number of thresholds strictly below the score: score > thresholds[j]  <=>  j < b
    neg_hist = np.zeros(k + 1, dtype=np.int64)
    region_hists, region_sizes = [], []
    n_seen = 0  # regions labelled in earlier chunks: this chunk's ids start at n_seen + 1
    for images, labels, sizes in iter_regions(masks):
        bins = np.searchsorted(thresholds, maps[images], side="left")
        neg_hist += np.bincount(bins[labels == 0], minlength=k + 1)
        inside = labels > 0
        flat = (labels[inside] - (n_seen + 1)).astype(np.int64) * (k + 1) + bins[inside]
        region_hists.append(np.bincount(flat, minlength=sizes.size * (k + 1)).reshape(sizes.size, k + 1))
        region_sizes.append(sizes)
        n_seen += sizes.size
    region_hist = np.concatenate(region_hists)
    sizes = np.concatenate(region_sizes)
    # counts above threshold j = sum of bins > j  (reverse cumulative sum, dropping bin 0)
    fp = np.cumsum(neg_hist[::-1])[::-1][1:]
    tp = np.cumsum(region_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    fprs = fp / n_neg
    pros = np.mean(tp / sizes[:, None], axis=0)
    keep = fprs < fpr_limit
    fprs, pros = fprs[keep], pros[keep]
    if fprs.size < 2 or not fprs.max() > fprs.min():
        n_distinct = np.unique(maps).size
        raise ValueError(
            f"aupro_200_thresholds is undefined here: its {num_thresholds} thresholds give fewer than two "
            f"distinct FPRs below fpr_limit={fpr_limit} (the maps hold {n_distinct} distinct values: binary or "
            "heavily tied maps), so its min-max rescaled curve has no width (AnomalyCLIP's code divides by "
            "zero there); use aupro, the official MVTec AU-PRO, which is defined on any maps")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    # FPR decreases with the threshold: the area is minus the trapezoid in threshold order.
    return float(-np.sum(0.5 * (pros[1:] + pros[:-1]) * np.diff(fprs)))
