"""User-facing image- and pixel-level metric bundles."""

from __future__ import annotations

from ._inputs import prepare_maps_masks
from .pro import pixel_curve_metrics
from .ranking import ranking_metrics
from .spro import AUSPRO_FPR_LIMITS, auspro_by_defect_type

__all__ = ["image_metrics", "pixel_metrics", "spro_metrics"]


def image_metrics(scores, labels) -> dict[str, float]:
    """Image-level ``{"auroc", "ap", "f1_max"}`` of scores [N] against labels [N] (1 = anomalous).

    numpy arrays or torch tensors. Scores keep their dtype (float64 scores are ranked exactly).
    NaN for all, with an ``UndefinedMetricWarning``, if the labels hold a single class.
    """
    return ranking_metrics(scores, labels)


def pixel_metrics(maps, masks, resolution=None, fpr_limit: float = 0.3) -> dict[str, float]:
    """Pixel-level ``{"auroc", "ap", "f1_max", "aupro"}`` of maps [N, H, W] against masks [N, H, W].

    * ``masks`` may be what the datasets give: a list with None for a normal image and each mask at
      its image's own size (e.g. ``[s.mask for s in test]``); each is resized by nearest neighbour
      (``resize_mask``) to the evaluation size (``resolution``, or the maps' size) first.

    * ``resolution``: None (score at the given size; maps and masks must then match) or an int /
      (H, W): maps are resized bilinearly and masks by nearest neighbour to that size first
      (``scipy.ndimage.zoom``, see ``resize_maps_masks``).
    * ``fpr_limit``: FPR integration limit of the AU-PRO (official MVTec AD definition).

    Maps are ranked exactly (float32 where that loses nothing, float64 otherwise); all four metrics come from one sort of the pixels (exact, no
    subsampling). NaN for all, with an ``UndefinedMetricWarning``, without anomalous (or normal)
    pixels.
    """
    maps, masks = prepare_maps_masks(maps, masks, resolution)
    return pixel_curve_metrics(maps, masks, fpr_limit, ranking=True)


def spro_metrics(maps, regions, defects, resolution=None, fpr_limits=AUSPRO_FPR_LIMITS) -> dict[str, float]:
    """MVTec LOCO's localisation metric: ``{"auspro_0.01", "auspro_0.05", "auspro_0.1", "auspro_0.3",
    "auspro_1"}``, each the mean over the defect types of the AUsPRO of that type's images with the good
    images (the official per-category value; :func:`lake_interp.metrics.spro.auspro_by_defect_type`).

    ``regions``: per image the list of its defect regions (the MVTec LOCO loader's ``Sample.regions``,
    empty for good images); ``defects``: per image its defect type (``Sample.defect``). Exact (every
    distinct score a threshold); regions resized to the evaluation size keep their saturated fraction.
    """
    mean = auspro_by_defect_type(maps, regions, defects, fpr_limits, resolution)["mean"]
    return {f"auspro_{limit:g}": v for limit, v in mean.items()}
