"""Base class of all datasets: a file list built eagerly, images loaded lazily, the few-shot protocol."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from lake_interp.data.io import IMAGE_EXTENSIONS, load_mask, load_rgb, require_dir, subdirs
from lake_interp.data.sample import DatasetError, Entry, Sample


class AnomalyDataset:
    """A list of `Entry` (found on disk in `__init__`) whose `Sample`s are loaded on `__getitem__`.

    Subclasses list their files and call `super().__init__(entries, ...)`. Indexing is in sorted
    path order. `paths`, `labels` and `defects` give metadata without reading any pixels.
    """

    #: Sub-folders that mark a directory under the dataset root as a category (see `categories`).
    category_markers: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, entries: Sequence[Entry], *, category: str, split: str | None, source: Path):
        self.category = category
        self.split = split
        self.source = Path(source)
        self.entries: list[Entry] = sorted(entries, key=lambda e: e.path)
        if not self.entries:
            exts = ", ".join(IMAGE_EXTENSIONS)
            raise DatasetError(f"no images found in {self.source}: expected image files ({exts})")

    # --- sequence protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        e = self.entries[index]
        image = load_rgb(e.path)
        mask = load_mask(e.mask_paths, image.size, e.path) if e.mask_paths else None
        return Sample(image=image, label=e.label, mask=mask, category=e.category, defect=e.defect, path=e.path)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        n_anom = int(self.labels.sum())
        return (f"{type(self).__name__}(category={self.category!r}, split={self.split!r}, "
                f"n={len(self)}, normal={len(self) - n_anom}, anomalous={n_anom}, source='{self.source}')")

    # --- metadata without loading images ---------------------------------------------------------
    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.entries]

    @property
    def labels(self) -> np.ndarray:
        """int64 array (N,), 0 normal / 1 anomalous."""
        return np.array([e.label for e in self.entries], dtype=np.int64)

    @property
    def defects(self) -> list[str]:
        return [e.defect for e in self.entries]

    # --- few-shot protocol -------------------------------------------------------------------
    def few_shot_indices(self, k: int, seed: int = 0) -> list[int]:
        """Indices of the `k` normal support images for `seed` (see `few_shot`)."""
        normal = [i for i, e in enumerate(self.entries) if e.label == 0]  # already sorted by path
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DatasetError(f"few_shot: k must be a positive integer, got {k!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise DatasetError(f"few_shot: seed must be an integer (the support set is drawn from it), got {seed!r}")
        if k > len(normal):
            raise DatasetError(
                f"few_shot(k={k}) needs {k} normal images but {self.source} has only {len(normal)}"
            )
        order = np.random.default_rng(seed).permutation(len(normal))
        return [normal[j] for j in order[:k]]

    def few_shot(self, k: int, seed: int = 0) -> list[Sample]:
        """The few-shot support set: `k` normal images drawn deterministically from this dataset.

        Protocol: the normal images are sorted by path, then the first `k` indices of
        `numpy.random.default_rng(seed).permutation(n_normal)` are taken, in that order. The set
        depends only on the file names, `k` and `seed` (not on filesystem order or on the method
        being evaluated), and for one seed the k-shot set is a prefix of the (k+1)-shot set. Call
        it on the train split (`split="train"`), so that the support never overlaps the test set.
        Raises DatasetError if `k` exceeds the number of normal images.
        """
        return [self[i] for i in self.few_shot_indices(k, seed)]

    # --- categories --------------------------------------------------------------------------
    @classmethod
    def categories(cls, root: str | Path) -> list[str]:
        """Names of the category folders under `root` (those holding one of `category_markers`)."""
        root = require_dir(Path(root), f"{cls.__name__} category folders")
        return [d.name for d in subdirs(root) if any((d / m).is_dir() for m in cls.category_markers)]

    @classmethod
    def check_category(cls, root: str | Path, category: str) -> str:
        """`category` if it is a folder name (a non-empty string), else a DatasetError listing those found."""
        if not isinstance(category, str) or not category:
            found = cls.categories(root) if Path(root).is_dir() else f"none ({root} is not a folder)"
            raise DatasetError(f"{cls.__name__} needs a category, the name of a folder under the dataset root, "
                               f"got {category!r}; categories found in {root}: {found}")
        return category

    @classmethod
    def category_dir(cls, root: str | Path, category: str) -> Path:
        """`root/category`, or a DatasetError listing the categories that do exist."""
        root = Path(root)
        cat_dir = root / cls.check_category(root, category)
        if not cat_dir.is_dir():
            known = cls.categories(root)
            raise DatasetError(
                f"unknown category {category!r}: no folder {cat_dir}; categories found in {root}: {known}"
            )
        return cat_dir


def check_split(split: str, allowed: Sequence[str], where: Path) -> str:
    if split not in allowed:
        raise DatasetError(f"unknown split {split!r} for {where}: expected one of {list(allowed)}")
    return split

