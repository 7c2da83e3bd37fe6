"""lake_interp: a mechanistic-interpretability workbench for anomaly detection in CLIP."""

from lake_interp.model import HookedCLIP

__all__ = ["HookedCLIP"]
