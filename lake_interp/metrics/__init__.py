"""Anomaly-detection metrics: image/pixel AUROC, AP, F1-max and AU-PRO (numpy + scipy only).

>>> from lake_interp.metrics import image_metrics, pixel_metrics, aupro
>>> image_metrics(scores, labels)   # {"auroc", "ap", "f1_max"}
>>> pixel_metrics(maps, masks)      # {"auroc", "ap", "f1_max", "aupro"}; resolution=None, fpr_limit=0.3
>>> pixel_metrics(maps, [s.mask for s in test])   # a list: None = normal, masks at the images' own sizes
>>> spro_metrics(maps, [s.regions for s in loco_test], [s.defect for s in loco_test])  # MVTec LOCO AUsPRO
"""

from ._inputs import UndefinedMetricWarning, resize_mask, resize_maps_masks, stack_masks
from .api import image_metrics, pixel_metrics, spro_metrics
from .pro import aupro, aupro_200_thresholds
from .spro import AUSPRO_FPR_LIMITS, SaturatedRegion, auspro, auspro_by_defect_type, region_at_size, saturation_area, spro_curve
from .ranking import auroc, average_precision, f1_max

__all__ = [
    "image_metrics",
    "pixel_metrics",
    "spro_metrics",
    "aupro",
    "aupro_200_thresholds",
    "auroc",
    "average_precision",
    "f1_max",
    "auspro",
    "auspro_by_defect_type",
    "spro_curve",
    "saturation_area",
    "region_at_size",
    "SaturatedRegion",
    "AUSPRO_FPR_LIMITS",
    "resize_maps_masks",
    "resize_mask",
    "stack_masks",
    "UndefinedMetricWarning",
]
