"""Generic folders of images: brain MRI (BMAD), custom data, a folder of normal support images.

Direct use: FolderDataset(normal_dir, anomalous_dir, mask_dir) with any of them optional
(masks matched to anomalous images by stem: <stem>.<ext> or <stem>_mask.<ext>).

Convention of `FolderDataset.from_layout` (and of `load_dataset("folder", root, category, split)`):

    <root>/<category>/<split>/good/      normal images                  (BMAD: good/img/)
    <root>/<category>/<split>/anomaly/   anomalous images, optional     (BMAD: Ungood/img/)
    <root>/<category>/<split>/mask/      their masks by stem, optional  (BMAD: anomaly/label/, Ungood/label/)

with category=None meaning <root>/<split>/... directly; split is any folder name ("train", "test",
"valid", ...). Any other sub-folder of a split (e.g. MVTec's defect folders "hole/", "scratch/") is an
unknown layout, never silently skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from lake_interp.data.base import AnomalyDataset
from lake_interp.data.io import is_image, layout_error, list_images, require_dir, subdirs
from lake_interp.data.mvtec import masks_by_stem
from lake_interp.data.sample import NORMAL, DatasetError, Entry

PathLike = str | Path
#: Sub-folders a split of the layout may hold, and how the error describes them.
LAYOUT_FOLDERS = ("good", "anomaly", "mask", "Ungood")
LAYOUT = "good/ and/or anomaly/ (+ optional mask/), or BMAD's good/img, Ungood/img, Ungood/label"


class FolderDataset(AnomalyDataset):
    """Normal images from `normal_dir`, anomalous ones from `anomalous_dir` (either may be None).

    mask_dir: masks of the anomalous images, matched by stem; when given, every anomalous image must
    have one (else DatasetError), when None `Sample.mask` is None. category/defect: names given to
    the samples (normal ones get defect "good").

    >>> support = FolderDataset(normal_dir="brain/train/good").few_shot(k=4, seed=0)
    >>> test = FolderDataset("brain/test/good", "brain/test/Ungood", "brain/test/Ungood_masks", category="brain")
    """

    category_markers = ("train", "test", "valid", "validation")

    def __init__(self, normal_dir: PathLike | None = None, anomalous_dir: PathLike | None = None,
                 mask_dir: PathLike | None = None, *, category: str = "folder", defect: str = "anomaly",
                 split: str | None = None):
        if normal_dir is None and anomalous_dir is None:
            raise DatasetError("FolderDataset needs normal_dir and/or anomalous_dir")
        if mask_dir is not None and anomalous_dir is None:
            raise DatasetError(f"mask folder {mask_dir} given without anomalous_dir")
        entries = []
        if normal_dir is not None:
            normal = require_dir(Path(normal_dir), "normal images")
            entries += [Entry(p, 0, category, NORMAL) for p in list_images(normal)]
        if anomalous_dir is not None:
            anomalous = require_dir(Path(anomalous_dir), "anomalous images")
            find = masks_by_stem(require_dir(Path(mask_dir), "masks named like their images")) if mask_dir else None
            entries += [Entry(p, 1, category, defect, find(p, True) if find else ()) for p in list_images(anomalous)]
        dirs = [str(d) for d in (normal_dir, anomalous_dir) if d is not None]
        if not entries:
            raise DatasetError(f"no images found in {' or '.join(dirs)}: expected image files")
        super().__init__(entries, category=category, split=split, source=Path(normal_dir or anomalous_dir))

    @classmethod
    def from_split_dir(cls, split_dir: PathLike, category: str = "folder", split: str | None = None) -> "FolderDataset":
        """One split folder: `good/` (normal), optionally `anomaly/` and `mask/` (or BMAD's
        good/img, Ungood/img, Ungood/label); any other sub-folder is an unknown layout."""
        split_dir = require_dir(Path(split_dir), "good/ (normal images), optionally anomaly/ and mask/")
        if any(d.name not in LAYOUT_FOLDERS for d in subdirs(split_dir)):
            raise layout_error(split_dir, f"only {LAYOUT}", "folder ")

        def first(*names: str) -> Path | None:
            return next((split_dir / n for n in names if (split_dir / n).is_dir()), None)

        normal = first("good/img", "good")
        anomalous = first("anomaly/img", "anomaly", "Ungood/img", "Ungood")
        masks = first("mask", "anomaly/label", "Ungood/label")
        if normal is None and anomalous is None:
            raise layout_error(split_dir, LAYOUT, "folder ")
        return cls(normal, anomalous, masks if anomalous else None, category=category, split=split)

    @classmethod
    def from_layout(cls, root: PathLike, category: str | None = None, split: str = "test") -> "FolderDataset":
        """Load `<root>/<category>/<split>/{good,anomaly,mask}` (see the module docstring)."""
        base = cls.category_dir(root, category) if category else require_dir(Path(root), "split folders")
        return cls.from_split_dir(base / split, category=category or base.name, split=split)


def image_files(path: PathLike, recursive: bool = False, exclude: PathLike | None = None) -> list[Path]:
    """The images to score: `path` itself when it is an image file, else the image files in the
    folder `path` (with `recursive`, in its sub-folders too; hidden files and folders, symbolic
    links to folders and folders written by lake-interp (holding its manifest) skipped), sorted; anything under `exclude` (the output folder,
    when it lies inside `path`) is left out. Errors name `path`."""
    path = Path(path)
    if path.is_file():
        if not is_image(path):
            raise DatasetError(f"{path} is not an image file (expected one of .png .jpg .jpeg .bmp .tif .tiff) "
                               "or a folder of images")
        return [path]
    folder = require_dir(path, "images (or pass an image file)")
    if not recursive:
        found = list_images(folder)
    else:
        found = []
        from lake_interp.outputs import MANIFEST

        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and not (Path(dirpath) / d / MANIFEST).is_file())  # lake-interp's own outputs
            found += [p for p in (Path(dirpath) / f for f in filenames) if is_image(p)]
    if exclude is not None and Path(exclude).exists():
        skip = Path(os.path.realpath(exclude))
        found = [p for p in found if skip not in Path(os.path.realpath(p)).parents]
    return sorted(found)
