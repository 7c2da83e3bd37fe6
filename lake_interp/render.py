"""Anomaly maps as images: a colour map and overlays on the original picture (numpy + PIL only)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# "jet"-like ramp: blue -> cyan -> yellow -> red, sampled at 5 stops
_STOPS = np.array([[0, 0, 128], [0, 128, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float32)


def colorize(m: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """[H, W] float -> [H, W, 3] uint8; vmin/vmax default to the map's own range."""
    vmin = float(np.min(m)) if vmin is None else vmin
    vmax = float(np.max(m)) if vmax is None else vmax
    t = np.clip((m - vmin) / max(vmax - vmin, 1e-12), 0, 1) * (len(_STOPS) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_STOPS) - 2)
    frac = (t - lo)[..., None]
    return ((1 - frac) * _STOPS[lo] + frac * _STOPS[lo + 1]).astype(np.uint8)


def overlay(image: Image.Image, m: np.ndarray, alpha: float = 0.5, vmin=None, vmax=None) -> Image.Image:
    """The map (already at the image's size) blended over the image."""
    heat = Image.fromarray(colorize(m, vmin, vmax))
    if heat.size != image.size:
        raise ValueError(f"map of size {heat.size} for an image of size {image.size}")
    return Image.blend(image.convert("RGB"), heat, alpha)


CONTOUR_RGB = (255, 255, 255)  # white: never produced by blending an image with the colour map (which has no white)


def contour(mask: np.ndarray) -> np.ndarray:
    """The inner boundary of a bool mask [H, W]: mask pixels with a 4-neighbour outside the mask
    (or on the image border)."""
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def contour_overlay(image: Image.Image, m: np.ndarray, mask: np.ndarray, alpha: float = 0.5, vmin=None,
                    vmax=None) -> Image.Image:
    """`overlay` of the map with the contour of `mask` (same size) drawn in CONTOUR_RGB."""
    out = np.array(overlay(image, m, alpha, vmin, vmax))
    if np.asarray(mask).shape != out.shape[:2]:
        raise ValueError(f"mask of shape {np.asarray(mask).shape} for an image of size {image.size}")
    out[contour(mask)] = CONTOUR_RGB
    return Image.fromarray(out)


def panel(image: Image.Image, mask: np.ndarray | None, heat: Image.Image, height: int = 256) -> Image.Image:
    """image | ground-truth mask (black where none) | heat, side by side, scaled to `height` pixels."""
    w, h = image.size
    gt = np.zeros((h, w), dtype=np.uint8) if mask is None else np.asarray(mask, dtype=np.uint8) * 255
    tiles = [image.convert("RGB"), Image.fromarray(gt).convert("RGB"), heat.convert("RGB")]
    size = (round(w * height / h), height)
    tiles = [t.resize(size, Image.NEAREST) for t in tiles]
    gap = 4
    out = Image.new("RGB", (3 * size[0] + 2 * gap, height), "white")
    for i, t in enumerate(tiles):
        out.paste(t, (i * (size[0] + gap), 0))
    return out
