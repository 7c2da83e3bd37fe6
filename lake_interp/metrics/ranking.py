"""Threshold-free ranking metrics (AUROC, AP, F1-max) from one sort, numpy only.

The shared machinery, also used by the AUPRO in :mod:`lake_interp.metrics.pro`:

* :func:`score_codes` maps scores to uint32 codes whose ascending order is the *descending*
  order of the scores, equal scores getting equal codes (float32: an order-preserving bit
  trick; other dtypes: dense ranks via ``np.unique``).
* A sample is packed into one uint64 key ``code << 32 | group`` (group 0 = normal, otherwise
  anomalous: 1, or the id of its ground-truth region) and all keys are sorted with one
  ``ndarray.sort`` -- far faster and leaner than ``argsort`` + gathers on 10^8 pixels.
* :func:`iter_curve` walks the sorted keys in chunks and yields the cumulative counts
  (TP, FP and optionally a weight sum) at the last sample of every group of tied scores,
  i.e. one curve point per distinct threshold, in order of decreasing threshold.
* :class:`RankingAccumulator` turns these points into AUROC, AP and F1-max on the fly, so
  no curve of length #thresholds is ever materialised.

Tie handling and the resulting values are those of scikit-learn's ``roc_auc_score`` and
``average_precision_score``; F1-max is the max of ``2PR / (P + R)`` over the PR-curve points
(as in anomalib / AnomalyCLIP), computed as ``2 TP / (TP + FP + #positives)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._inputs import class_counts, prepare_scores_labels

__all__ = [
    "auroc",
    "average_precision",
    "f1_max",
    "ranking_metrics",
    "score_codes",
    "pack_keys",
    "iter_curve",
    "RankingAccumulator",
]

RANKING_KEYS = ("auroc", "ap", "f1_max")
CHUNK = 1 << 22  # samples per chunk in iter_curve (bounds the temporaries to ~100 MB)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def score_codes(scores: np.ndarray) -> np.ndarray:
    """uint32 codes, ascending in *decreasing* score; equal scores <-> equal codes.

    float32 (and float16) scores use their bit pattern, so this works chunk by chunk; any other
    dtype is ranked as a whole with ``np.unique`` (exact, no precision loss for float64).
    """
    s = np.asarray(scores).reshape(-1)
    if s.dtype in (np.float32, np.float16):
        u = (s.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # +0.0 turns -0.0 into +0.0
        # non-negative floats (sign bit 0): flip the 31 value bits; negative ones: keep as is.
        flip = ((u >> np.uint32(31)) ^ np.uint32(1)) * np.uint32(0x7FFFFFFF)
        return u ^ flip
    _, ranks = np.unique(s, return_inverse=True)
    ranks = ranks.reshape(-1)
    return (ranks.max(initial=0) - ranks).astype(np.uint32)


def pack_keys(codes: np.ndarray, groups: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint64 keys ``code << 32 | group`` (written into ``out`` if given)."""
    if out is None:
        out = np.empty(codes.shape, dtype=np.uint64)
    np.left_shift(codes.astype(np.uint64), _SHIFT, out=out)
    np.bitwise_or(out, np.asarray(groups).astype(np.uint64, copy=False), out=out)
    return out


def iter_curve(sorted_keys: np.ndarray, weights: np.ndarray | None = None,
               chunk: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Yield ``(tp, fp, wsum)`` at every distinct threshold, highest threshold first.

    ``tp``/``fp`` (int64): number of anomalous / normal samples with score >= threshold;
    ``wsum`` (float64, only with ``weights``): sum of ``weights[group]`` over those samples
    (``weights[0]`` must be 0). Arrays are cumulative over the whole sequence, one chunk at a time
    (``chunk`` samples, default ``CHUNK``); a chunk inside one group of tied scores yields nothing.
    """
    chunk = chunk or CHUNK
    n = sorted_keys.size
    tp_run, w_run = 0, 0.0
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        seg = sorted_keys[a:b]
        code = seg >> _SHIFT
        last = np.empty(b - a, dtype=bool)  # last sample of its group of tied scores?
        np.not_equal(code[1:], code[:-1], out=last[:-1])
        last[-1] = b == n or (sorted_keys[b] >> _SHIFT) != code[-1]
        del code
        group = seg & _LOW32
        idx = np.flatnonzero(last)
        tp = np.cumsum(group != 0, dtype=np.int64)
        tp += tp_run
        tp_run = int(tp[-1])
        tp = tp[idx]
        fp = idx + (a + 1) - tp
        wsum = None
        if weights is not None:
            w = np.cumsum(weights[group])
            w += w_run
            w_run = float(w[-1])
            wsum = w[idx]
        if idx.size:
            yield tp, fp, wsum


def _with_prev(prev, x: np.ndarray) -> np.ndarray:
    """``[prev, x[0], ..., x[-2]]``: the previous curve point of every point."""
    out = np.empty_like(x)
    out[0] = prev
    out[1:] = x[:-1]
    return out


class RankingAccumulator:
    """Accumulates AUROC (exact integer trapezoid), AP and F1-max over the curve points."""

    def __init__(self, n_pos: int, n_neg: int):
        self.n_pos, self.n_neg = int(n_pos), int(n_neg)
        self._tp, self._fp = 0, 0
        self._roc2 = 0  # 2 * area under the (FP, TP) count curve, exact python int
        self._ap = 0.0  # sum of dTP * precision
        self._f1 = 0.0

    def update(self, tp: np.ndarray, fp: np.ndarray) -> None:
        tp_prev, fp_prev = _with_prev(self._tp, tp), _with_prev(self._fp, fp)
        self._roc2 += int(np.sum((fp - fp_prev) * (tp + tp_prev)))  # <= 2*P*N < 2^63
        self._ap += float(np.sum((tp - tp_prev) * (tp / (tp + fp))))
        self._f1 = max(self._f1, float(np.max(2.0 * tp / (tp + fp + self.n_pos))))
        self._tp, self._fp = int(tp[-1]), int(fp[-1])

    def result(self) -> dict[str, float]:
        return {
            "auroc": self._roc2 / (2.0 * self.n_pos * self.n_neg),
            "ap": self._ap / self.n_pos,
            "f1_max": self._f1,
        }


def ranking_metrics(scores, labels) -> dict[str, float]:
    """``{"auroc", "ap", "f1_max"}`` of scores [N] against binary labels [N] (1 = anomalous).

    NaN for all three, with an :class:`UndefinedMetricWarning`, when only one class is present.
    """
    s, y = prepare_scores_labels(scores, labels)
    n_pos, n_neg, nan_result = class_counts(y, RANKING_KEYS, "samples")
    if nan_result is not None:
        return nan_result
    keys = pack_keys(score_codes(s), y)
    keys.sort()
    acc = RankingAccumulator(n_pos, n_neg)
    for tp, fp, _ in iter_curve(keys):
        acc.update(tp, fp)
    return acc.result()


def auroc(scores, labels) -> float:
    """Area under the ROC curve (as ``sklearn.metrics.roc_auc_score``)."""
    return ranking_metrics(scores, labels)["auroc"]


def average_precision(scores, labels) -> float:
    """Average precision (as ``sklearn.metrics.average_precision_score``)."""
    return ranking_metrics(scores, labels)["ap"]


def f1_max(scores, labels) -> float:
    """Maximum F1 over all thresholds of the precision-recall curve."""
    return ranking_metrics(scores, labels)["f1_max"]
