"""The sample record every dataset yields, and the one error type of `lake_interp.data`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: `Sample.defect` of every normal image, whatever the dataset calls its normal folder ("good", "ok", ...).
NORMAL = "good"


class DatasetError(ValueError):
    """A dataset on disk is not what the loader expected (missing folder, unknown layout or
    category, unreadable image, anomalous image without mask, ...). The message names the path."""


@dataclass(frozen=True)
class Entry:
    """One image as listed on disk (no pixels loaded).

    path: the image file; label: 0 normal / 1 anomalous; mask_paths: mask files whose union is the
    ground truth (empty for normal images, or for anomalous images of a dataset without masks).
    """

    path: Path
    label: int
    category: str
    defect: str
    mask_paths: tuple[Path, ...] = ()


@dataclass
class Sample:
    """One loaded image.

    image: PIL RGB image (W x H); label: 0 normal / 1 anomalous; mask: bool numpy array (H, W) at the
    image resolution, True = anomalous pixel, None for normal images or when the dataset has no mask;
    category: e.g. "bottle"; defect: defect type, "good" for normal images; path: the image file.
    """

    image: Image.Image
    label: int
    mask: np.ndarray | None
    category: str
    defect: str
    path: Path
