"""MVTec-AD and the shared scanner of MVTec-style trees (also used by BTAD, MVTec LOCO and VisA).

Layout: <root>/<category>/{train,test}/<defect>/*.png, normal images under "good",
masks at <root>/<category>/ground_truth/<defect>/<stem>_mask.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from lake_interp.data.base import AnomalyDataset, check_split
from lake_interp.data.io import MaskIndex, layout_error, list_images, require_dir, subdirs
from lake_interp.data.sample import NORMAL, Entry

#: Given the ground-truth folder of one defect type, returns `find(image, required) -> mask paths`.
MaskFinder = Callable[[Path], Callable[[Path, bool], tuple[Path, ...]]]


def masks_by_stem(gt_dir: Path) -> Callable[[Path, bool], tuple[Path, ...]]:
    """One mask per image, named <stem>_mask.<ext> or <stem>.<ext> in `gt_dir` (any extension)."""
    index = MaskIndex(gt_dir)

    def find(image: Path, required: bool) -> tuple[Path, ...]:
        mask = index.require(image) if required else index.get(image)
        return (mask,) if mask else ()

    return find


def scan_mvtec_split(
    cat_dir: Path,
    category: str,
    split: str,
    *,
    normal_dir: str = "good",
    require_masks: bool = True,
    find_masks: MaskFinder = masks_by_stem,
) -> list[Entry]:
    """Entries of `cat_dir/split/<defect>/*`: images in `normal_dir` are normal (defect "good"),
    every other folder is a defect type whose masks are looked up in `cat_dir/ground_truth/<defect>`."""
    split_dir = require_dir(cat_dir / split, f"one folder per defect type ('{normal_dir}' for normal images)")
    folders = [d.name for d in subdirs(split_dir)]
    if normal_dir not in folders or (split != "test" and folders != [normal_dir]):
        expected = f"'{normal_dir}' and one folder per defect type" if split == "test" else f"only '{normal_dir}'"
        raise layout_error(split_dir, f"{expected} (normal images in '{normal_dir}')")
    entries = []
    for d in subdirs(split_dir):
        if d.name == normal_dir:
            entries += [Entry(p, 0, category, NORMAL) for p in list_images(d)]
            continue
        find = find_masks(cat_dir / "ground_truth" / d.name)
        entries += [Entry(p, 1, category, d.name, find(p, require_masks)) for p in list_images(d)]
    return entries


class MVTecLayout(AnomalyDataset):
    """Base of datasets stored as <root>/<category>/<split>/<defect>/ + ground_truth/<defect>/."""

    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    normal_dir: ClassVar[str] = "good"
    find_masks: ClassVar[MaskFinder] = staticmethod(masks_by_stem)

    def __init__(self, root: str | Path, category: str, split: str = "test", *, require_masks: bool = True):
        """root: dataset root (holding the category folders); category: e.g. "bottle";
        split: one of `splits`; require_masks: if True (default) an anomalous image without mask is a
        DatasetError, else its `Sample.mask` is None."""
        self.root = Path(root)
        cat_dir = self.category_dir(self.root, category)
        check_split(split, self.splits, cat_dir)
        entries = scan_mvtec_split(cat_dir, category, split, normal_dir=self.normal_dir,
                                   require_masks=require_masks, find_masks=type(self).find_masks)
        super().__init__(entries, category=category, split=split, source=cat_dir / split)


class MVTecAD(MVTecLayout):
    """MVTec-AD: <root>/<cat>/train/good, <cat>/test/{good,<defect>}, <cat>/ground_truth/<defect>/<stem>_mask.png.

    >>> test = MVTecAD(root, category="bottle", split="test")
    >>> support = MVTecAD(root, category="bottle", split="train").few_shot(k=1, seed=0)
    """
