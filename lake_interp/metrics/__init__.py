"""Anomaly-detection metrics: image/pixel AUROC, AP, F1-max and AU-PRO (numpy + scipy only).

>>> from lake_interp.metrics import image_metrics, pixel_metrics, aupro
>>> image_metrics(scores, labels)   # {"auroc", "ap", "f1_max"}
>>> pixel_metrics(maps, masks)      # {"auroc", "ap", "f1_max", "aupro"}; resolution=None, fpr_limit=0.3
>>> pixel_metrics(maps, [s.mask for s in test])   # a list: None = normal, masks at the images' own sizes
"""

from ._inputs import UndefinedMetricWarning, resize_mask, resize_maps_masks, stack_masks
from .api import image_metrics, pixel_metrics
from .pro import aupro, aupro_200_thresholds
from .ranking import auroc, average_precision, f1_max

__all__ = [
    "image_metrics",
    "pixel_metrics",
    "aupro",
    "aupro_200_thresholds",
    "auroc",
    "average_precision",
    "f1_max",
    "resize_maps_masks",
    "resize_mask",
    "stack_masks",
    "UndefinedMetricWarning",
]
