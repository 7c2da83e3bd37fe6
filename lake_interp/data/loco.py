"""MVTec LOCO AD: <root>/<cat>/train/good, validation/good,
test/{good,logical_anomalies,structural_anomalies}, ground_truth/<type>/<stem>/<k>.png, defects_config.json.

An anomalous image may have several masks (one per defect region); `Sample.mask` is their union.
Each mask image is one defect: its non-zero pixels hold the defect's `pixel_value`, which
`<cat>/defects_config.json` maps to the defect's name and saturation threshold (the official
evaluation's `GroundTruthChannel`, `DefectsConfig`). With that file every sample is a `LocoSample`
whose `regions` hold one `DefectRegion` per mask image (the input of the sPRO,
`lake_interp.metrics.spro`); without it `regions` is None and `regions_missing` says why: the
saturation thresholds are never guessed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lake_interp.data.io import _open, list_images, load_rgb
from lake_interp.data.mvtec import MVTecLayout
from lake_interp.data.sample import DatasetError, Sample

#: The per-category file of defect ids and saturation thresholds (MVTec LOCO AD ships one per category).
DEFECTS_CONFIG = "defects_config.json"
_FIELDS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")


def masks_in_stem_folder(gt_dir: Path) -> Callable[[Path, bool], tuple[Path, ...]]:
    """All mask images in `gt_dir/<stem>/`."""

    def find(image: Path, required: bool) -> tuple[Path, ...]:
        folder = gt_dir / image.stem
        masks = tuple(list_images(folder)) if folder.is_dir() else ()
        if required and not masks:
            raise DatasetError(f"no mask for anomalous image {image}: expected mask images in {folder}")
        return masks

    return find


@dataclass(frozen=True)
class DefectConfig:
    """One entry of defects_config.json. saturation_threshold: pixels (absolute) or a fraction of the
    region in (0, 1] (relative_saturation)."""

    defect_name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool


def read_defects_config(path: str | Path) -> dict[int, DefectConfig]:
    """`pixel_value -> DefectConfig` from a defects_config.json (a JSON list of objects with the fields
    defect_name, pixel_value, saturation_threshold, relative_saturation); errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read {path}: expected a JSON list of defect entries ({e})") from e
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path}: expected a non-empty JSON list of defect entries {list(_FIELDS)}, "
                           f"got {type(data).__name__}")
    out: dict[int, DefectConfig] = {}
    for k, entry in enumerate(data):
        where = f"{path}, entry {k}"
        if not isinstance(entry, dict) or set(_FIELDS) - set(entry):
            missing = sorted(set(_FIELDS) - set(entry)) if isinstance(entry, dict) else list(_FIELDS)
            raise DatasetError(f"{where}: expected an object with {list(_FIELDS)}; missing {missing}")
        name, value = entry["defect_name"], entry["pixel_value"]
        thr, relative = entry["saturation_threshold"], entry["relative_saturation"]
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{where}: defect_name must be a non-empty string, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise DatasetError(f"{where} ({name}): pixel_value must be an integer in 1..255, got {value!r}")
        if not isinstance(relative, bool):
            raise DatasetError(f"{where} ({name}): relative_saturation must be true or false, got {relative!r}")
        number = not isinstance(thr, bool) and isinstance(thr, (int, float)) and math.isfinite(thr)
        if not number or (relative and not 0 < thr <= 1) or (not relative and not thr > 0):
            want = "a fraction in (0, 1]" if relative else "a number of pixels > 0"
            raise DatasetError(f"{where} ({name}): saturation_threshold must be {want}, got {thr!r}")
        config = DefectConfig(name, value, thr, relative)
        if value in out and (out[value].saturation_threshold, out[value].relative_saturation) != (thr, relative):
            raise DatasetError(f"{path}: pixel_value {value} is given to {out[value].defect_name!r} and to {name!r} "
                               "with different saturation thresholds")
        out[value] = config
    return out


@dataclass(frozen=True, eq=False)
class DefectRegion:
    """One mask image of an anomalous image: one defect region (an sPRO region).

    mask: bool (H, W) at its image's size (its non-zero pixels); defect: its defects_config.json entry
    (looked up by the mask's pixel value); path: the mask file.
    """

    mask: np.ndarray
    defect: DefectConfig
    path: Path

    @property
    def saturation_threshold(self) -> float:
        return self.defect.saturation_threshold

    @property
    def relative_saturation(self) -> bool:
        return self.defect.relative_saturation


@dataclass
class LocoSample(Sample):
    """A `Sample` of MVTec LOCO with its defect regions: one `DefectRegion` per mask image (() for a
    normal image), or None when the category has no defects_config.json (`regions_missing` says so)."""

    regions: tuple[DefectRegion, ...] | None = None
    regions_missing: str | None = None


def read_region(path: Path, config: dict[int, DefectConfig], config_path: Path, size: tuple[int, int]) -> DefectRegion:
    """The defect region of one mask file for an image of `size` = (W, H): a single-channel mask whose
    non-zero pixels all hold one pixel value, found in `config` (as the official `GroundTruthChannel`)."""
    im = _open(Path(path))
    a = np.asarray(im)
    if a.ndim != 2 or a.dtype.kind not in "biu":
        raise DatasetError(f"mask {path} is a {im.mode} image: expected a single-channel mask whose non-zero "
                           f"pixels hold the defect's pixel_value of {config_path}")
    values = np.unique(a[a != 0]).astype(np.int64).tolist()
    if not values:
        raise DatasetError(f"mask {path} is all zero: a defect mask of MVTec LOCO marks one defect region")
    if len(values) > 1:
        raise DatasetError(f"mask {path} holds several defect values {values[:5]}: MVTec LOCO stores one defect "
                           f"(one pixel_value of {config_path}) per mask image")
    if values[0] not in config:
        raise DatasetError(f"{config_path} has no entry for pixel_value {values[0]} of mask {path} (entries: "
                           f"{ {v: c.defect_name for v, c in sorted(config.items())} }); its saturation threshold "
                           "is unknown, so its sPRO cannot be computed")
    w, h = size
    if a.shape != (h, w):
        raise DatasetError(f"mask {path} is {a.shape[1]}x{a.shape[0]} but its image is {w}x{h}: the saturation "
                           f"thresholds of {config_path} count pixels at the image's size")
    return DefectRegion(a != 0, config[values[0]], Path(path))


class MVTecLOCO(MVTecLayout):
    """MVTec LOCO AD category, split "train", "validation" (normal only) or "test".

    `defects_config`: pixel_value -> DefectConfig read from <cat>/defects_config.json, or None when
    the category has none (`spro_missing` then says why sPRO cannot be computed). Samples are
    `LocoSample`s carrying their defect regions.
    """

    splits = ("train", "validation", "test")
    find_masks = staticmethod(masks_in_stem_folder)

    def __init__(self, root: str | Path, category: str, split: str = "test", *, require_masks: bool = True):
        super().__init__(root, category, split, require_masks=require_masks)
        self.defects_config_path = self.root / category / DEFECTS_CONFIG
        self.defects_config = None
        self.spro_missing = None
        if self.defects_config_path.is_file():
            self.defects_config = read_defects_config(self.defects_config_path)
        else:
            self.spro_missing = (f"no {self.defects_config_path}: sPRO needs each defect's saturation threshold "
                                 "from it (MVTec LOCO AD ships one per category); it is not guessed")

    def __getitem__(self, index):
        if isinstance(index, slice) or self.defects_config is None:
            sample = super().__getitem__(index)
            if isinstance(sample, list):
                return sample
            return LocoSample(**vars(sample), regions=None, regions_missing=self.spro_missing)
        e = self.entries[index]
        image = load_rgb(e.path)
        regions = tuple(read_region(p, self.defects_config, self.defects_config_path, image.size) for p in e.mask_paths)
        mask = np.logical_or.reduce([r.mask for r in regions]) if regions else None
        return LocoSample(image=image, label=e.label, mask=mask, category=e.category, defect=e.defect, path=e.path,
                          regions=regions)
