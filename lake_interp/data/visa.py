"""VisA, in either of its two common layouts (detected automatically, see `VisA.layout`).

raw download: <root>/<cat>/Data/Images/{Normal,Anomaly}/*.JPG, <root>/<cat>/Data/Masks/Anomaly/*.png
    and the split file <root>/split_csv/1cls.csv with columns object,split,label,image,mask
    (paths relative to <root>, label "normal"/"anomaly").
converted (MVTec-like, as written by VisA's prepare_data.py): <root>/<cat>/{train,test}/{good,bad},
    <root>/<cat>/ground_truth/bad/<stem>.png; <root> may also be the folder holding "1cls/".

Masks store instance ids (1, 2, ...) and are binarised (any non-zero is anomalous). Anomalous images
get defect "bad" in both layouts, normal ones "good".
"""

from __future__ import annotations

import csv
from pathlib import Path

from lake_interp.data.base import AnomalyDataset, check_split
from lake_interp.data.io import require_dir
from lake_interp.data.mvtec import scan_mvtec_split
from lake_interp.data.sample import NORMAL, DatasetError, Entry

CSV_COLUMNS = ("object", "split", "label", "image", "mask")
ANOMALY = "bad"  # defect name of the converted layout, used for both layouts


def _check_file(path: Path, where: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"missing file {path} (listed in {where})")
    return path


def scan_visa_csv(root: Path, csv_path: Path, category: str, split: str, require_masks: bool) -> list[Entry]:
    """Entries of `category`/`split` listed in the VisA split csv (paths relative to `root`)."""
    if not csv_path.is_file():
        raise DatasetError(f"missing split file {csv_path}: the raw VisA layout needs split_csv/1cls.csv "
                           f"with columns {','.join(CSV_COLUMNS)}")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM
            rows = list(csv.DictReader(f, skipinitialspace=True))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{csv_path} is not UTF-8 text (byte {e.start}: {e.reason}); save the split file as "
                           "UTF-8") from e
    if rows and not set(CSV_COLUMNS) <= set(rows[0]):
        raise DatasetError(f"{csv_path} has columns {list(rows[0])}: expected {list(CSV_COLUMNS)}")
    entries = []
    for line, row in enumerate(rows, start=2):
        if row["object"] != category or row["split"] != split:
            continue
        where = f"{csv_path} line {line}"
        label = {"normal": 0, "anomaly": 1}.get(row["label"].strip().lower())
        if label is None:
            raise DatasetError(f"{where}: label {row['label']!r}, expected 'normal' or 'anomaly'")
        image = _check_file(root / row["image"], where)
        masks = (_check_file(root / row["mask"], where),) if (row["mask"] or "").strip() else ()
        if label == 1 and not masks and require_masks:
            raise DatasetError(f"no mask for anomalous image {image}: expected a path in column 'mask' of {where}")
        entries.append(Entry(image, label, category, ANOMALY if label else NORMAL, masks if label else ()))
    if not entries:
        raise DatasetError(f"{csv_path} lists no {split!r} images for object {category!r}")
    return entries


class VisA(AnomalyDataset):
    """VisA category (e.g. "candle"), split "train" or "test", raw or converted layout.

    split_csv: the split file of the raw layout (default <root>/split_csv/1cls.csv);
    require_masks: if True (default) an anomalous image without mask is a DatasetError.
    """

    splits = ("train", "test")
    category_markers = ("Data", "train", "test")

    def __init__(self, root: str | Path, category: str, split: str = "test", *,
                 split_csv: str | Path | None = None, require_masks: bool = True):
        root = require_dir(Path(root), "VisA category folders")
        if not (root / self.check_category(root, category)).is_dir() and (root / "1cls" / category).is_dir():
            root = root / "1cls"
        self.root = root
        cat_dir = self.category_dir(root, category)
        check_split(split, self.splits, cat_dir)
        if (cat_dir / "Data").is_dir():
            self.layout = "raw"
            source = Path(split_csv) if split_csv else root / "split_csv" / "1cls.csv"
            entries = scan_visa_csv(root, source, category, split, require_masks)
        elif any((cat_dir / s).is_dir() for s in self.splits):
            self.layout = "mvtec"
            source = cat_dir / split
            entries = scan_mvtec_split(cat_dir, category, split, require_masks=require_masks)
        else:
            raise DatasetError(
                f"unknown VisA layout in {cat_dir}: expected Data/Images/{{Normal,Anomaly}} (raw download, with "
                f"split_csv/1cls.csv at the root) or {{train,test}}/{{good,bad}} (converted MVTec-like layout)"
            )
        super().__init__(entries, category=category, split=split, source=source)

    @classmethod
    def categories(cls, root: str | Path) -> list[str]:
        cats = super().categories(root)
        if not cats and (Path(root) / "1cls").is_dir():
            cats = super().categories(Path(root) / "1cls")
        return cats
