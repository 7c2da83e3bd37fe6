"""Deterministic synthetic anomaly dataset in the MVTec-AD layout (numpy + PIL only).

Categories: textures "grid", "weave", "marble" and objects "disc", "bolt"; defects "scratch",
"hole", "stain", "missing_piece", "color_shift". Masks are exact: a mask is True exactly where the
defective image differs from the clean image it was made from (`synthesize` returns both).

With `defect_color`, every defect pixel of a category is painted with that pure RGB colour, and no
normal image (nor the normal part of a defective one) ever contains that colour.

Each image has its own random stream keyed by (seed, category, split/defect, index), so a category
looks the same whichever other categories are generated, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lake_interp.data.sample import DatasetError

CATEGORIES = ("grid", "weave", "marble", "disc", "bolt")
TEXTURES = ("grid", "weave", "marble")
DEFECTS = ("scratch", "hole", "stain", "missing_piece", "color_shift")
_KINDS = ("train", "good") + DEFECTS  # stream keys

RGB = tuple[int, int, int]


def _rng(seed: int, category: str, kind: str, index: int) -> np.random.Generator:
    if category not in CATEGORIES:
        raise DatasetError(f"unknown synthetic category {category!r}: expected one of {list(CATEGORIES)}")
    return np.random.default_rng([seed, CATEGORIES.index(category), _KINDS.index(kind), index])


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float64)  # (yy, xx)


def _mix(a: Sequence[float], b: Sequence[float], t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours a (t=0) and b (t=1): (H, W, 3) float."""
    return np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float)) * t[..., None]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinear value noise in [0, 1], (size, size)."""
    g = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i, f = t.astype(int), t - t.astype(int)
    f = f * f * (3 - 2 * f)
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def _normal(category: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A clean image (H, W, 3) float, its foreground (H, W) bool (all True for textures) and, for
    objects, the plain background (H, W, 3) float that shows where a piece goes missing."""
    yy, xx = _grid(size)
    s = size
    if category == "grid":
        period, width = s / rng.uniform(6, 9), max(1.0, s / 64)
        oy, ox = rng.uniform(0, period, 2)
        line = (((yy + oy) % period) < width) | (((xx + ox) % period) < width)
        img = _mix((150, 148, 140), (75, 75, 72), line.astype(float))
    elif category == "weave":
        period, ph = s / rng.uniform(10, 14), rng.uniform(0, 2 * np.pi, 2)
        horiz = 0.5 + 0.5 * np.sin(2 * np.pi * yy / period + ph[0])
        vert = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + ph[1])
        block = ((yy // (2 * period) + xx // (2 * period)) % 2).astype(bool)
        img = _mix((95, 110, 135), (170, 180, 200), np.where(block, horiz, vert))
    elif category == "marble":
        n = 0.7 * _smooth_noise(rng, s, 4) + 0.3 * _smooth_noise(rng, s, 12)
        veins = np.abs(np.sin((xx / s * 3 + yy / s + 3 * n) * np.pi + rng.uniform(0, np.pi))) ** 0.4
        img = _mix((115, 112, 108), (228, 225, 218), veins)
    elif category == "disc":
        cy, cx = s / 2 + rng.uniform(-0.05, 0.05, 2) * s
        r = np.hypot(yy - cy, xx - cx) / (s * rng.uniform(0.3, 0.36))
        fg = r <= 1
        bg = _mix((45, 45, 50), (70, 70, 78), yy / s)
        body = _mix((190, 168, 125), (140, 120, 85), r.clip(0, 1))
        body[np.abs(r - 0.55) < 0.05] = (110, 95, 70)  # engraved ring
        img = np.where(fg[..., None], body, bg)
        return img + rng.normal(0, 2.5, (s, s, 1)), fg, bg
    else:  # bolt
        cy = s / 2 + rng.uniform(-0.06, 0.06) * s
        x0, x1, half = 0.12 * s, rng.uniform(0.82, 0.88) * s, 0.09 * s
        shaft = (np.abs(yy - cy) <= half) & (xx >= x0) & (xx <= x1)
        head = (np.abs(yy - cy) <= 2.2 * half) & (xx >= x0) & (xx <= x0 + 0.16 * s)
        fg = shaft | head
        bg = _mix((205, 205, 210), (185, 185, 192), xx / s)
        thread = 0.5 + 0.5 * np.sin(2 * np.pi * xx / (0.035 * s) + rng.uniform(0, 2 * np.pi))
        body = _mix((135, 138, 145), (90, 93, 100), np.where(head, 0.2, thread))
        img = np.where(fg[..., None], body, bg)
        return img + rng.normal(0, 2.5, (s, s, 1)), fg, bg
    return img + rng.normal(0, 3.0, (s, s, 1)), np.ones((s, s), bool), None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _avoid(img: np.ndarray, colors: Sequence[RGB]) -> np.ndarray:
    """Nudge (red channel +-1) every pixel that happens to equal one of `colors`."""
    for _ in range(len(colors) + 1):
        hit = np.zeros(img.shape[:2], bool)
        for c in colors:
            eq = (img == np.asarray(c, np.uint8)).all(-1)
            img[eq, 0] = c[0] - 1 if c[0] > 0 else 1
            hit |= eq
        if not hit.any():
            break
    return img


def _segment_dist(yy, xx, p, q) -> np.ndarray:
    d = np.subtract(q, p)
    t = (((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-9)).clip(0, 1)
    return np.hypot(yy - p[0] - t * d[0], xx - p[1] - t * d[1])


def _region(defect: str, rng: np.random.Generator, fg: np.ndarray) -> np.ndarray:
    """Where a defect goes (H, W) bool, inside the foreground."""
    s = fg.shape[0]
    yy, xx = _grid(s)
    ys, xs = np.nonzero(fg)
    j = rng.integers(len(ys))
    c = np.array([ys[j], xs[j]], float)
    if defect == "scratch":
        pts = [c]
        for _ in range(2):
            a = rng.uniform(0, 2 * np.pi)
            pts.append(pts[-1] + rng.uniform(0.12, 0.22) * s * np.array([np.sin(a), np.cos(a)]))
        w = rng.uniform(0.6, 1.2) * max(1.0, s / 100)
        region = np.min([_segment_dist(yy, xx, p, q) for p, q in zip(pts, pts[1:])], axis=0) <= w
    elif defect == "hole":
        region = np.hypot(yy - c[0], xx - c[1]) <= rng.uniform(0.04, 0.07) * s
    else:  # stain, missing_piece, color_shift: a blob made of a few ellipses
        radius = (0.13 if defect == "missing_piece" else 0.08) * s
        region = np.zeros_like(fg)
        for _ in range(3):
            o = c + rng.normal(0, 0.4 * radius, 2)
            a, (ra, rb) = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0, 2) * radius
            u = (yy - o[0]) * np.cos(a) + (xx - o[1]) * np.sin(a)
            v = -(yy - o[0]) * np.sin(a) + (xx - o[1]) * np.cos(a)
            region |= (u / ra) ** 2 + (v / rb) ** 2 <= 1
    return region & fg


def _paint(defect: str, clean: np.ndarray, bg: np.ndarray | None, region: np.ndarray, color: RGB | None) -> np.ndarray:
    """The defective image (uint8): `clean` changed inside `region` only."""
    out = clean.astype(np.float64)
    if color is not None:
        out[region] = color
    elif defect == "scratch":  # light on dark, dark on light
        light = out[region].mean(-1, keepdims=True) < 128
        out[region] = np.where(light, (235, 235, 230), (30, 30, 35))
    elif defect == "hole":
        out[region] = (14, 12, 10)
    elif defect == "stain":
        out[region] = 0.3 * out[region] + 0.7 * np.array([120, 75, 30])
    elif defect == "missing_piece":  # object: the background shows; texture: a flat, unpatterned patch
        out[region] = bg[region] if bg is not None else out.reshape(-1, 3).mean(0)
    elif defect == "color_shift":
        out[region] = out[region][:, [2, 0, 1]] + np.array([-35, 45, -15])  # towards green
    return _to_uint8(out)


def _clean(category: str, kind: str, index: int, seed: int, size: int, avoid: Sequence[RGB]):
    """(rng, clean uint8 image free of the `avoid` colours, foreground, background) of one image."""
    rng = _rng(seed, category, kind, index)
    img, fg, bg = _normal(category, rng, size)
    return rng, _avoid(_to_uint8(img), avoid), fg, bg


def synthesize(category: str, defect: str | None = None, index: int = 0, *, seed: int = 0,
               image_size: int = 128, defect_color: RGB | None = None,
               avoid_colors: Sequence[RGB] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic sample: (clean, image, mask) = uint8 (H, W, 3), uint8 (H, W, 3), bool (H, W).

    defect=None gives a normal (test) image (image == clean, mask all False). `index` picks the
    image within its folder; `make_synthetic_dataset` writes exactly these arrays. Colours in
    `avoid_colors` (and `defect_color`) never occur in the clean image.
    """
    if defect is not None and defect not in DEFECTS:
        raise DatasetError(f"unknown synthetic defect {defect!r}: expected one of {list(DEFECTS)}")
    avoid = list(avoid_colors) + ([tuple(defect_color)] if defect_color is not None else [])
    rng, clean, fg, bg = _clean(category, defect or "good", index, seed, image_size, avoid)
    if defect is None:
        return clean, clean.copy(), np.zeros(clean.shape[:2], bool)
    min_px = max(4, image_size * image_size // 1000)
    for _ in range(50):
        image = _paint(defect, clean, bg, _region(defect, rng, fg), defect_color)
        mask = (image != clean).any(-1)
        if mask.sum() >= min_px:
            return clean, image, mask
    raise RuntimeError(f"could not place a {defect} on {category} (image_size={image_size} too small?)")


def _check_color(c) -> RGB:
    c = tuple(int(v) for v in c)
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise DatasetError(f"defect_color must be an (R, G, B) tuple of 0..255 ints, got {c!r}")
    return c


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def make_synthetic_dataset(
    out_dir: str | Path,
    categories: Sequence[str] = CATEGORIES,
    *,
    seed: int = 0,
    image_size: int = 128,
    n_train: int = 8,
    n_test_good: int = 4,
    n_test_defect: int = 2,
    defects: Sequence[str] = DEFECTS,
    defect_color: RGB | Mapping[str, RGB] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an MVTec-AD-layout tree and return `out_dir` (load it with `MVTecAD(out_dir, cat, split)`).

    Writes <out>/<cat>/train/good/000.png..., test/good/..., test/<defect>/..., and
    ground_truth/<defect>/<stem>_mask.png (0/255, "L"), all PNG, image_size x image_size RGB.

    categories: subset of CATEGORIES; defects: subset of DEFECTS, each with n_test_defect images;
    defect_color: an (R, G, B) colour for every category's defects, or {category: colour} for some
    of them; those defects are painted exactly that colour and normal images never contain it.
    overwrite: replace existing <out>/<cat> folders (else an existing non-empty one is an error).
    Same arguments -> byte-identical files.
    """
    out = Path(out_dir)
    unknown = [c for c in categories if c not in CATEGORIES] + [d for d in defects if d not in DEFECTS]
    if unknown:
        raise DatasetError(f"unknown synthetic categories/defects {unknown}: expected {list(CATEGORIES)} "
                           f"and {list(DEFECTS)}")
    if isinstance(defect_color, Mapping):
        colors = {c: _check_color(v) for c, v in defect_color.items()}
    else:
        colors = {c: _check_color(defect_color) for c in categories} if defect_color is not None else {}
    avoid = sorted(set(colors.values()))
    for cat in categories:
        cat_dir = out / cat
        if cat_dir.exists() and any(cat_dir.iterdir()):
            if not overwrite:
                raise DatasetError(f"{cat_dir} already exists and is not empty: pass overwrite=True to replace it")
            shutil.rmtree(cat_dir)
        kw = dict(seed=seed, image_size=image_size, defect_color=colors.get(cat), avoid_colors=avoid)
        for i in range(n_train):  # train images have their own streams, distinct from test/good
            _save(_clean(cat, "train", i, seed, image_size, avoid)[1], cat_dir / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _save(synthesize(cat, None, i, **kw)[1], cat_dir / "test" / "good" / f"{i:03d}.png")
        for d in defects:
            for i in range(n_test_defect):
                _, img, mask = synthesize(cat, d, i, **kw)
                _save(img, cat_dir / "test" / d / f"{i:03d}.png")
                _save(mask.astype(np.uint8) * 255, cat_dir / "ground_truth" / d / f"{i:03d}_mask.png")
    return out
