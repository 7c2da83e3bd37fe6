"""MVTec LOCO AD: <root>/<cat>/train/good, validation/good,
test/{good,logical_anomalies,structural_anomalies}, ground_truth/<type>/<stem>/<k>.png.

An anomalous image may have several masks (one per defect region); `Sample.mask` is their union.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lake_interp.data.io import list_images
from lake_interp.data.mvtec import MVTecLayout
from lake_interp.data.sample import DatasetError


def masks_in_stem_folder(gt_dir: Path) -> Callable[[Path, bool], tuple[Path, ...]]:
    """All mask images in `gt_dir/<stem>/`."""

    def find(image: Path, required: bool) -> tuple[Path, ...]:
        folder = gt_dir / image.stem
        masks = tuple(list_images(folder)) if folder.is_dir() else ()
        if required and not masks:
            raise DatasetError(f"no mask for anomalous image {image}: expected mask images in {folder}")
        return masks

    return find


class MVTecLOCO(MVTecLayout):
    """MVTec LOCO AD category, split "train", "validation" (normal only) or "test"."""

    splits = ("train", "validation", "test")
    find_masks = staticmethod(masks_in_stem_folder)
