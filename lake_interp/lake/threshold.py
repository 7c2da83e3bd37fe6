"""Decision thresholds of a detector: chosen on data the detector may see, stored with it.

A score is anomalous when it is >= the threshold (images: the image score; pixels: the map value).
Two sources, each recorded in `Threshold.method`:

* **A validation split** (`from_validation`; `lake-interp fit --validation DIR`, e.g. MVTec LOCO's
  `validation/`): with normal *and* anomalous images, the image threshold is the F1-optimal one
  (`f1_optimal`: the best of every distinct score as a cut); the pixel threshold is F1-optimal over
  the pixels of the images whose masks are known (normal images count as all-normal pixels,
  anomalous images without a mask are left out). With normal images only (MVTec LOCO's
  `validation/good`), no F1 exists; the rule is then a quantile `q` (default 1.0: the highest value
  any normal image reached) of the normal images' image scores, and the same quantile of their
  map maxima for pixels, so that (with q = 1.0) no validation normal gets a pixel flagged and, for
  `image_score="max"`, an image is labelled anomalous exactly when its mask is non-empty.
* **The support itself, leave one out** (`Lake.calibrate_support`, the default of `lake-interp fit`
  without `--validation`): scoring a support image against a bank holding its own patches gives
  distance 0 at every patch (its nearest neighbour is itself), so such scores say nothing. Each
  support image is scored instead against the bank of the *other* support images (same neurons,
  same text features; the neurons were selected on all of them), and the normal-only quantile rule
  above is applied to those k scores. The bank of k - 1 images is smaller than the real one, so
  these scores are somewhat higher than a new normal image would get: the threshold errs towards
  fewer false alarms. It needs k >= 2 support images.

`Threshold.image`/`.pixel` are floats in the units of the detector's scores and maps; `to_dict`
and `from_dict` are the JSON form stored in `lake.json` (field "threshold", `VERSION`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

#: Version of the stored form (lake.json field "threshold"); detectors saved before it have none.
VERSION = 1
#: Default quantile of the normal-only rule: the highest normal score (nothing seen is flagged).
DEFAULT_QUANTILE = 1.0
METHODS = ("validation_f1", "validation_normal_quantile", "support_leave_one_out_quantile", "given")

NO_THRESHOLD = ("has no decision threshold (saved before detectors stored one, or fitted without one): refit with "
                "`lake-interp fit` (it stores one: --validation DIR, or leave-one-out on >= 2 support images), or "
                "call lake.calibrate(...) / lake.calibrate_support(...) in Python, or pass one: "
                "--threshold T (and --pixel-threshold P) / predict(threshold=T)")


@dataclass
class Threshold:
    """Image and pixel decision thresholds (score >= threshold: anomalous) and how they were chosen."""

    image: float
    pixel: float
    method: str
    details: dict = field(default_factory=dict)  # n images, quantile, F1 reached, ...

    def __post_init__(self):
        for name in ("image", "pixel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
                raise ValueError(f"Threshold.{name}={v!r}; expected a finite number")
            setattr(self, name, float(v))
        if self.method not in METHODS:
            raise ValueError(f"Threshold.method={self.method!r}; expected one of {METHODS}")
        if not isinstance(self.details, dict):
            raise ValueError(f"Threshold.details must be an object, got {type(self.details).__name__}")

    def to_dict(self) -> dict:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "threshold") -> "Threshold":
        """The stored form back; errors name `where` (e.g. "lake.json: field 'threshold'")."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object with image, pixel, method, got {type(d).__name__}")
        if d.get("version") != VERSION:
            raise ValueError(f"{where}: version {d.get('version')!r}, this lake_interp reads version {VERSION}; "
                             "refit (or pass --threshold)")
        missing = [k for k in ("image", "pixel", "method") if k not in d]
        if missing:
            raise ValueError(f"{where} lacks {missing}; refit (or pass --threshold)")
        try:
            return cls(d["image"], d["pixel"], d["method"], d.get("details") or {})
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e

    @classmethod
    def given(cls, image: float, pixel: Optional[float] = None) -> "Threshold":
        """Thresholds passed by hand; the pixel threshold defaults to the image one (for
        image_score="max": an image is anomalous exactly when its mask is non-empty)."""
        return cls(image, image if pixel is None else pixel, "given")


def f1_optimal(scores, labels) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `scores >= threshold` against binary `labels`, over every
    distinct score as the cut; among equal F1, the highest threshold. Needs a positive label."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("F1-optimal threshold needs at least one anomalous label")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # the end of each group of equal scores: the cut s >= that value
    f1 = 2.0 * tp[last] / (tp[last] + fp[last] + n_pos)
    best = int(np.argmax(f1))  # first maximum in descending order: the highest threshold
    return float(s[last][best]), float(f1[best])


def normal_quantile(values, q: float = DEFAULT_QUANTILE) -> float:
    """The `q` quantile of normal images' values (numpy's linear interpolation; q=1: their maximum)."""
    check_quantile(q)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no normal scores to take a quantile of")
    return float(np.quantile(v, q))


def check_quantile(q) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) <= 1.0:
        raise ValueError(f"threshold quantile {q!r}; expected a number in (0, 1] (1: the highest normal score)")
    return float(q)


def from_validation(image_scores, maps, labels: Optional[Sequence[int]] = None,
                    masks: Optional[Sequence[Any]] = None, q: float = DEFAULT_QUANTILE,
                    method_if_normal: str = "validation_normal_quantile") -> Threshold:
    """Thresholds from scored validation images (see the module docstring).

    image_scores [N]; maps [N, S, S]; labels [N] (None: all normal); masks: per image None or a bool
    array of the maps' size (only anomalous images' masks are read; normal images are all-normal)."""
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] != scores.size:
        raise ValueError(f"maps of shape {maps.shape} for {scores.size} image scores; expected [N, S, S]")
    y = np.zeros(scores.size, dtype=bool) if labels is None else np.asarray(labels).astype(bool).ravel()
    if y.size != scores.size:
        raise ValueError(f"{y.size} labels for {scores.size} images")
    check_quantile(q)
    normal = ~y
    if not normal.any():
        raise ValueError("the validation images hold no normal image: a threshold needs normal images")
    if not y.any():  # normal only: a quantile of what normal images reach
        maxima = maps.reshape(maps.shape[0], -1).max(axis=1)
        return Threshold(normal_quantile(scores, q), normal_quantile(maxima, q), method_if_normal,
                         {"n_normal": int(normal.sum()), "n_anomalous": 0, "quantile": q,
                          "rule": "quantile of the normal images' image scores; pixels: of their map maxima"})
    image_t, image_f1 = f1_optimal(scores, y)
    details = {"n_normal": int(normal.sum()), "n_anomalous": int(y.sum()), "image_f1": image_f1}
    with_mask = [i for i in range(scores.size) if not y[i] or (masks is not None and masks[i] is not None)]
    anomalous_with_mask = [i for i in with_mask if y[i]]
    if anomalous_with_mask:
        truth = np.stack([np.zeros(maps.shape[1:], bool) if not y[i] else _mask(masks[i], maps.shape[1:])
                          for i in with_mask])
        if truth.any():
            pixel_t, pixel_f1 = f1_optimal(maps[with_mask], truth)
            details.update(pixel_f1=pixel_f1, n_pixel_images=len(with_mask),
                           rule="F1-optimal image score; pixels: F1-optimal over the images with known masks")
            return Threshold(image_t, pixel_t, "validation_f1", details)
    maxima = maps[normal].reshape(int(normal.sum()), -1).max(axis=1)
    details.update(quantile=q, rule="F1-optimal image score; pixels (no anomalous pixel in the masks): quantile "
                                    "of the normal images' map maxima")
    return Threshold(image_t, normal_quantile(maxima, q), "validation_f1", details)


def _mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != tuple(shape):
        raise ValueError(f"mask of shape {m.shape} for maps of shape {tuple(shape)}: resize masks to the maps' size "
                         "(lake_interp.lake.inputs.resize_mask)")
    return m


@dataclass
class Prediction:
    """Decisions on a batch of images, at the model input size S (on the CPU)."""

    image_scores: Any  # torch.Tensor [B]
    labels: Any  # torch.Tensor [B] bool: image_scores >= threshold.image
    maps: Any  # torch.Tensor [B, S, S]
    masks: Any  # torch.Tensor [B, S, S] bool: maps >= threshold.pixel
    threshold: Threshold

    def full_size(self, i: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i's map resized to (height, width) (bilinear, `inputs.resize_map`) and its mask
        there: that map >= the pixel threshold (thresholded after resizing, not a resized mask)."""
        from lake_interp.lake.inputs import resize_map

        full = resize_map(self.maps[i], height, width)
        return full, full >= self.threshold.pixel

    def overlay(self, i: int, image, vmin: Optional[float] = None, vmax: Optional[float] = None):
        """The map over `image` (PIL, at its own size) with the mask's contour drawn (`render.contour_overlay`)."""
        from lake_interp.render import contour_overlay

        full, mask = self.full_size(i, *image.size)
        return contour_overlay(image, full, mask, vmin=vmin, vmax=vmax)


def predict_from(result, threshold: Threshold) -> Prediction:
    """A detector's result (image_scores [B], maps [B, S, S]) decided at `threshold`."""
    import torch

    scores = torch.as_tensor(result.image_scores).detach().float().cpu()
    maps = torch.as_tensor(result.maps).detach().float().cpu()
    # compared in float64: a threshold given by hand is not rounded to the maps' float32
    return Prediction(scores, scores.double() >= threshold.image, maps, maps.double() >= threshold.pixel, threshold)
