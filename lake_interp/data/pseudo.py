"""Pseudo-anomalies made from normal images alone, with exact masks (no real anomaly is used).

Three kinds, each placed at a random spot of the image (seeded, deterministic):

- "stamp": a defect of the synthetic generator (`lake_interp.data.synthetic`: scratch, hole or
  stain, chosen at random) painted on the image;
- "cutpaste": a rectangle cut from elsewhere in the same image, flipped or rotated, pasted
  (CutPaste, Li et al., CVPR 2021), optionally with a brightness jitter;
- "color_shift": the synthetic generator's colour shift (channels permuted and offset) on a blob.

The mask is True exactly where the pseudo-anomalous image differs from the normal one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from lake_interp.data.synthetic import _paint, _region

KINDS = ("stamp", "cutpaste", "color_shift")
STAMPS = ("scratch", "hole", "stain")


@dataclass
class PseudoAnomaly:
    image: Image.Image  # RGB
    mask: np.ndarray  # [H, W] bool
    kind: str
    source: int  # index of the normal image it was made from


def _as_array(item: Any) -> np.ndarray:
    """A normal image (PIL, path, Sample with .image / .path, or uint8 array [H, W, 3]) as uint8 RGB."""
    if isinstance(item, np.ndarray):
        return item.astype(np.uint8)
    image = getattr(item, "image", None)
    if image is None and hasattr(item, "path"):
        image = item.path
    if image is None:
        image = item
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    return np.asarray(image.convert("RGB")).copy()


def _cutpaste(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = (max(2, int(rng.uniform(0.1, 0.25) * s)) for s in (h, w))
    y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = img[y0 : y0 + ph, x0 : x0 + pw].astype(np.float64)
    patch = [patch[::-1], patch[:, ::-1], patch[::-1, ::-1]][rng.integers(3)]
    patch = np.clip(patch * rng.uniform(0.7, 1.3), 0, 255)
    for _ in range(20):  # paste away from where it was cut
        y1, x1 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        if abs(int(y1) - int(y0)) >= ph // 2 or abs(int(x1) - int(x0)) >= pw // 2:
            break
    out = img.copy()
    out[y1 : y1 + ph, x1 : x1 + pw] = np.round(patch).astype(np.uint8)
    return out


def pseudo_anomaly(image: Any, kind: str, seed: int = 0, index: int = 0) -> PseudoAnomaly:
    """One pseudo-anomaly of `kind` made from one normal image (deterministic for seed and index)."""
    if kind not in KINDS:
        raise ValueError(f"unknown pseudo-anomaly kind {kind!r}; expected one of {KINDS}")
    clean = _as_array(image)
    h, w = clean.shape[:2]
    if h != w:  # the defect painters work on square images; the model squashes every image to a square anyway
        side = max(h, w)
        clean = np.asarray(Image.fromarray(clean).resize((side, side), Image.BICUBIC)).copy()
    rng = np.random.default_rng([seed, index, KINDS.index(kind)])
    fg = np.ones(clean.shape[:2], bool)
    for _ in range(20):
        if kind == "cutpaste":
            out = _cutpaste(clean, rng)
        else:
            defect = STAMPS[rng.integers(len(STAMPS))] if kind == "stamp" else "color_shift"
            out = _paint(defect, clean, None, _region(defect, rng, fg), None)
        mask = (out != clean).any(-1)
        if mask.sum() >= max(4, mask.size // 1000):
            return PseudoAnomaly(Image.fromarray(out), mask, kind, index)
    raise RuntimeError(f"could not make a {kind} pseudo-anomaly on an image of size {clean.shape[:2]}")


def pseudo_anomalies(images: Sequence[Any], kinds: Sequence[str] = KINDS, per_image: int = 1,
                     seed: int = 0) -> list[PseudoAnomaly]:
    """`per_image` pseudo-anomalies of every kind from every normal image, in order (image, kind, repeat)."""
    out = []
    for i, image in enumerate(images):
        for kind in kinds:
            for r in range(per_image):
                p = pseudo_anomaly(image, kind, seed, index=i * per_image + r)
                p.source = i
                out.append(p)
    return out
