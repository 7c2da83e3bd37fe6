"""File helpers shared by all loaders: listing images, matching masks by stem, reading images
as RGB and masks as bool arrays."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lake_interp.data.sample import DatasetError

#: Image file extensions the loaders pick up (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Suffixes a mask's stem may carry on top of its image's stem ("000_mask.png" for "000.png").
MASK_SUFFIXES = ("_mask",)


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a directory, else raise a DatasetError saying it should hold `what`."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"missing folder {path}: expected it to contain {what}")
    return path


def is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def read_json_object(path, label: str = "") -> dict:
    """A JSON file holding an object (config, record), with errors naming it (`label`: e.g. "--config ")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{label}{path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{label}{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{label}{path}: expected a JSON object of fields, got {type(data).__name__}")
    return data


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted (hidden and non-image files are skipped)."""
    return sorted(p for p in Path(folder).iterdir() if is_image(p))


def subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def layout_error(folder: Path, expected: str, kind: str = "") -> DatasetError:
    """The "unknown layout" error of `folder`: what a loader `expected` there and the folders it found."""
    found = [d.name for d in subdirs(folder)] if Path(folder).is_dir() else []
    return DatasetError(f"unknown {kind}layout in {folder}: expected {expected}, found folders {found}")


class MaskIndex:
    """Masks of one folder, looked up by the stem of their image: "<stem>_mask.<ext>" or "<stem>.<ext>".

    Matching is by name, never by sorted position, so image and mask extensions may differ.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._by_stem: dict[str, list[Path]] = {}
        for p in list_images(self.folder) if self.folder.is_dir() else []:
            self._by_stem.setdefault(p.stem, []).append(p)

    def get(self, image: Path) -> Path | None:
        for key in [image.stem + s for s in MASK_SUFFIXES] + [image.stem]:
            found = self._by_stem.get(key, [])
            if len(found) > 1:
                raise DatasetError(f"ambiguous masks for {image}: {[str(p) for p in found]}")
            if found:
                return found[0]
        return None

    def require(self, image: Path) -> Path:
        """The mask of `image`, or a DatasetError naming the image and where its mask was expected."""
        mask = self.get(image)
        if mask is None:
            raise DatasetError(
                f"no mask for anomalous image {image}: expected {image.stem}_mask.<ext> or "
                f"{image.stem}.<ext> in {self.folder}"
                + ("" if self.folder.is_dir() else " (folder missing)")
            )
        return mask


class MaskWarning(UserWarning):
    """A mask file looks wrong (non-binary values, lossy JPEG, empty, or covering almost everything)."""


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image with its EXIF orientation applied (as viewers display it, so a
    mask drawn on the displayed image lines up), turning any decoding failure into a DatasetError."""
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            fmt = im.format
            out = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im.copy()
            out.format = fmt
            return out
    except Image.DecompressionBombError as e:
        raise DatasetError(f"refusing to open {path}: {e} (a decompression bomb, or an image far larger than "
                           "any model input: resize it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it)") from e
    except FileNotFoundError as e:
        raise DatasetError(f"missing file {path}: expected an image") from e
    except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise DatasetError(f"cannot read {path}: expected a PNG/JPEG/BMP/TIFF image ({e})") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    L/1/P/CMYK/... use PIL's conversion; alpha (RGBA, LA, P with transparency) is dropped, as
    `convert("RGB")` does everywhere else. 16-bit images (I;16*, and 16-bit PNGs, which Pillow < 13
    opens as mode I) are scaled 0..65535 -> 0..255; other 32-bit int/float images (I, F) are min-max
    stretched to 0..255 per image.
    """
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):  # PNG has no 32-bit mode
        a = np.asarray(im).astype(np.float64) / 257.0
        return Image.fromarray(np.round(a).astype(np.uint8)).convert("RGB")
    if im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(a).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Read an image file as a PIL RGB image (see `to_rgb` for the conversions)."""
    return to_rgb(_open(Path(path)))


def _binarise(im: Image.Image, path=None) -> np.ndarray:
    """The mask as bool (any channel, palette colours looked up).

    Masks of instance ids or 0/1 (maximum below half the range, e.g. VisA's 1, 2, ...): every non-zero
    value counts. Masks drawn as 0/255 (maximum at least half the range): thresholded at half the
    range, so faint values (antialiasing, JPEG artefacts) do not grow the defect; such values and
    lossy JPEG masks are warned about (MaskWarning), naming the file."""
    if im.mode == "1":
        return np.asarray(im).astype(bool)
    if im.mode in ("L", "I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im)
    else:
        a = np.asarray(im.convert("RGB")).max(axis=-1)
    full = 65535 if (im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255)) else 255
    if im.format == "JPEG" or str(path).lower().endswith((".jpg", ".jpeg")):
        warnings.warn(f"mask {path} is a lossy JPEG: its compression artefacts make it non-binary; thresholded at "
                      f"half the range; store masks as PNG", MaskWarning, stacklevel=3)
    levels = np.unique(a[a != 0]) if a.size else a[:0]
    if levels.size > 1 and levels.max() >= full / 2:  # a 0/255 drawing with other values: not binary
        faint = np.count_nonzero((a > 0) & (a < levels.max()))
        if im.format != "JPEG":
            warnings.warn(f"mask {path} is not binary: {faint} pixels hold values between 0 and {levels.max()} "
                          f"({levels.size} non-zero levels); thresholded at {full // 2 + 1}", MaskWarning, stacklevel=3)
        return a > full // 2
    return a != 0


def load_mask(paths: Sequence[Path], size: tuple[int, int], image: Path | None = None) -> np.ndarray:
    """Union of the binarised masks in `paths` as a bool array (H, W) for an image of `size` = (W, H).

    Any non-zero value counts as anomalous (VisA stores instance ids 1, 2, ...). A mask of another
    size is resized with nearest neighbour, with a warning.
    """
    w, h = size
    out = np.zeros((h, w), dtype=bool)
    for p in paths:
        m = _binarise(_open(Path(p)), p)
        if m.shape != (h, w):
            of = f"its image {image}" if image else "the image"
            warnings.warn(f"mask {p} is {m.shape[1]}x{m.shape[0]} but {of} is {w}x{h}; resized with nearest "
                          "neighbour", UserWarning, stacklevel=2)
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
        out |= m
    names = ", ".join(str(p) for p in paths)
    if paths and not out.any():
        warnings.warn(f"mask {names} of anomalous image {image} is all zero: the image counts as anomalous but no "
                      "pixel does (empty or wrong mask?)", MaskWarning, stacklevel=2)
    elif paths and out.mean() > 0.9:
        warnings.warn(f"mask {names} of {image} marks {100 * out.mean():.0f}% of the image as anomalous "
                      "(inverted mask?)", MaskWarning, stacklevel=2)
    return out
