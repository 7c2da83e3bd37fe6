"""Anomaly-detection datasets: MVTec-AD, VisA, BTAD, MVTec LOCO AD, generic folders, synthetic data.

Every dataset lists its files on construction (missing folders fail early) and loads a `Sample`
(PIL RGB image, label, bool mask or None, category, defect, path) on indexing.

>>> test = MVTecAD(root, category="bottle", split="test")
>>> support = MVTecAD(root, category="bottle", split="train").few_shot(k=1, seed=0)
>>> load_dataset("folder", root, "brain", "test")  # see lake_interp.data.folder for the convention
"""

from __future__ import annotations

from pathlib import Path

from lake_interp.data.base import AnomalyDataset
from lake_interp.data.btad import BTAD
from lake_interp.data.folder import FolderDataset
from lake_interp.data.io import IMAGE_EXTENSIONS, load_mask, load_rgb
from lake_interp.data.loco import MVTecLOCO
from lake_interp.data.mvtec import MVTecAD
from lake_interp.data.sample import DatasetError, Sample
from lake_interp.data.synthetic import make_synthetic_dataset
from lake_interp.data.visa import VisA

#: Dataset classes by the name the CLI uses (`--dataset`).
DATASETS: dict[str, type[AnomalyDataset]] = {
    "mvtec": MVTecAD,
    "visa": VisA,
    "btad": BTAD,
    "mvtec_loco": MVTecLOCO,
    "folder": FolderDataset,
}


def load_dataset(name: str, root: str | Path, category: str | None = None, split: str = "test",
                 **kwargs) -> AnomalyDataset:
    """`DATASETS[name](root, category, split, **kwargs)`; for "folder", `FolderDataset.from_layout`
    (<root>/<category>/<split>/{good,anomaly,mask}, see `lake_interp.data.folder`)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}")
    if name == "folder":
        return FolderDataset.from_layout(root, category, split, **kwargs)
    if category is None:
        raise DatasetError(f"dataset {name!r} needs a category; found in {root}: {DATASETS[name].categories(root)}")
    return DATASETS[name](root, category, split, **kwargs)


__all__ = [
    "AnomalyDataset", "BTAD", "DATASETS", "DatasetError", "FolderDataset", "IMAGE_EXTENSIONS", "MVTecAD",
    "MVTecLOCO", "Sample", "VisA", "load_dataset", "load_mask", "load_rgb", "make_synthetic_dataset",
]
