"""Input handling shared by the metrics: conversion, validation, resizing, NaN warnings.

numpy + scipy only: torch tensors are accepted by duck typing (``.detach().cpu()``)
without importing torch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

__all__ = [
    "UndefinedMetricWarning",
    "as_numpy",
    "prepare_scores_labels",
    "prepare_maps_masks",
    "resize_maps_masks",
    "resize_mask",
    "stack_masks",
    "undefined",
    "class_counts",
    "exact_float_dtype",
]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined (e.g. no anomalous or no normal samples); NaN is returned."""


def undefined(keys, reason: str, stacklevel: int = 3) -> dict[str, float]:
    """Warn once and return ``{key: nan}`` for every key."""
    warnings.warn(f"{reason}; returning NaN for {', '.join(keys)}", UndefinedMetricWarning, stacklevel=stacklevel)
    return {k: math.nan for k in keys}


def class_counts(labels: np.ndarray, keys, what: str) -> tuple[int, int, dict[str, float] | None]:
    """``(n_pos, n_neg, nan_result)``; ``nan_result`` (NaN for all ``keys``, after a warning) is
    not None when the labels hold only one class."""
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if n_pos and n_neg:
        return n_pos, n_neg, None
    which = "anomalous" if n_pos == 0 else "normal"
    return n_pos, n_neg, undefined(keys, f"no {which} {what} among {labels.size}", stacklevel=4)


def as_numpy(x) -> np.ndarray:
    """numpy view of an array-like or a torch tensor (detached, moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    try:
        return np.asarray(x)
    except TypeError:  # e.g. a bfloat16 tensor, which numpy cannot represent
        return np.asarray(x.float())


def _as_bool(x: np.ndarray) -> np.ndarray:
    """Ground truth as bool: bool as is, otherwise ``x > 0.5`` (works for 0/1 and 0/255)."""
    return x if x.dtype == np.bool_ else x > 0.5


def _check_numeric(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as a real numeric array (bool, int, float), refusing anything else by name."""
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric (bool, int or float); got dtype {x.dtype}")
    return x


def _check_finite(x: np.ndarray, what: str) -> None:
    _check_numeric(x, what)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            n_nan = int(np.isnan(x).sum())
            raise ValueError(f"{what} must be finite: {n_nan} NaN and {int(bad.sum()) - n_nan} infinite "
                             f"values among {x.size}")


def exact_float_dtype(x: np.ndarray) -> np.dtype:
    """float32 where every value of ``x`` is exactly a float32 (so ranking in float32 loses nothing),
    float64 otherwise: maps that differ only below float32 precision keep their order."""
    if x.dtype in (np.float32, np.float16, np.bool_, np.int8, np.uint8, np.int16, np.uint16):
        return np.dtype(np.float32)
    x32 = x.astype(np.float32)
    if np.array_equal(x32.astype(x.dtype), x):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def prepare_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """1-D scores (dtype kept) and 1-D bool labels (0/1 or bool, anything else refused) of the same length."""
    s = as_numpy(scores).reshape(-1)
    raw = _check_numeric(as_numpy(labels).reshape(-1), "labels")
    if raw.dtype != np.bool_ and not np.isin(raw, (0, 1)).all():
        bad = np.unique(raw[~np.isin(raw, (0, 1))])[:5].tolist()
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), or bool; got {bad}")
    y = raw.astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.shape} vs {y.shape}")
    _check_finite(s, "scores")
    return s, y


def _to_nhw(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{what} must be [N, H, W] (or [H, W], [N, 1, H, W]); got shape {x.shape}")
    return x


def _size_hw(resolution) -> tuple[int, int]:
    if isinstance(resolution, (int, np.integer)):
        return int(resolution), int(resolution)
    h, w = resolution
    return int(h), int(w)


def resize_mask(mask, size) -> np.ndarray:
    """One mask [H, W] (bool, 0/1 or 0/255; None: a normal image, all False) to ``size`` (int or
    (H, W)) as bool, nearest neighbour with pixel centres aligned (output pixel i reads input pixel
    floor((i + 0.5) * H / h)): the same sampling as ``resize_maps_masks`` and torch's
    ``nearest-exact``. The one mask resize of the package (benchmark, interp tools, metrics)."""
    h, w = _size_hw(size)
    if mask is None:
        return np.zeros((h, w), bool)
    m = _as_bool(as_numpy(mask))
    if m.ndim != 2:
        raise ValueError(f"a mask must be [H, W]; got shape {m.shape}")
    if m.shape == (h, w):
        return np.ascontiguousarray(m)
    rows = np.minimum(((np.arange(h) + 0.5) * (m.shape[0] / h)).astype(np.int64), m.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (m.shape[1] / w)).astype(np.int64), m.shape[1] - 1)
    return np.ascontiguousarray(m[rows[:, None], cols[None, :]])


def stack_masks(masks, size) -> np.ndarray:
    """A list of masks as the datasets give them (None for normal images, each at its image's own
    size) to one bool array [N, H, W] at ``size``, each resized with ``resize_mask``."""
    return np.stack([resize_mask(m, size) for m in masks]) if len(masks) else np.zeros((0, *_size_hw(size)), bool)


def _is_mask_list(masks) -> bool:
    """A list/tuple of per-image masks (None entries, any sizes), not one array."""
    return isinstance(masks, (list, tuple))


def resize_maps_masks(maps: np.ndarray, masks: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Resize [N, H, W] maps bilinearly and masks by nearest neighbour to ``size`` (int or (H, W)).

    Uses ``scipy.ndimage.zoom`` image by image with ``grid_mode=True, mode="nearest"``: pixel
    centres at half-integer positions and clamped edges, i.e. the same sampling as
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` (no antialiasing)
    for the maps (order=1) and as ``mode="nearest-exact"`` for the masks (order=0).
    """
    h, w = _size_hw(size)
    out_maps = maps
    if maps.shape[1:] != (h, w):
        out_maps = np.empty((maps.shape[0], h, w), dtype=np.float64 if maps.dtype == np.float64 else np.float32)
        zoom = (h / maps.shape[1], w / maps.shape[2])
        for i in range(maps.shape[0]):
            ndimage.zoom(maps[i], zoom, output=out_maps[i], order=1, mode="nearest", grid_mode=True)
    out_masks = masks
    if masks.shape[1:] != (h, w):
        out_masks = np.empty((masks.shape[0], h, w), dtype=np.uint8)
        zoom = (h / masks.shape[1], w / masks.shape[2])
        for i in range(masks.shape[0]):
            ndimage.zoom(masks[i].view(np.uint8), zoom, output=out_masks[i], order=0, mode="nearest",
                         grid_mode=True)
        out_masks = out_masks.view(np.bool_)
    return out_maps, out_masks


def prepare_maps_masks(maps, masks, resolution=None) -> tuple[np.ndarray, np.ndarray]:
    """C-contiguous float maps and bool masks, both [N, H, W] of the same shape.

    Maps are float32 where that is exact, float64 otherwise (``exact_float_dtype``): no two
    different scores are ever made equal. They must be numeric and finite (ValueError otherwise).

    ``resolution`` (int or (H, W)) resizes both to that size first; without it, maps and masks
    of different sizes raise ValueError. ``masks`` may also be a list as the datasets give it:
    None for a normal image, each mask at its image's own size; each is then resized (nearest,
    ``resize_mask``) straight to the evaluation size: ``resolution``, or the maps' size.
    """
    m = _to_nhw(as_numpy(maps), "maps")
    if _is_mask_list(masks):
        if len(masks) != m.shape[0]:
            raise ValueError(f"maps and masks hold different numbers of images: maps {m.shape}, {len(masks)} masks")
        masks = stack_masks(masks, m.shape[1:] if resolution is None else resolution)
    g = _to_nhw(_as_bool(_check_numeric(as_numpy(masks), "masks")), "masks")
    if m.shape[0] != g.shape[0]:
        raise ValueError(f"maps and masks hold different numbers of images: maps {m.shape}, masks {g.shape}")
    _check_finite(m, "maps")
    m = np.ascontiguousarray(m, dtype=exact_float_dtype(m))
    g = np.ascontiguousarray(g)
    if resolution is not None:
        m, g = resize_maps_masks(m, g, resolution)
    elif m.shape != g.shape:
        raise ValueError(
            f"maps shape {m.shape} and masks shape {g.shape} differ; pass resolution=(H, W) "
            "(or an int) to resize both to a common evaluation size"
        )
    return m, g
