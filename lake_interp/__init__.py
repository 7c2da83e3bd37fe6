"""lake_interp: a mechanistic-interpretability workbench for anomaly detection in CLIP."""

from lake_interp.lake import Lake, LakeConfig, LakeResult, NeuronSet
from lake_interp.model import HookedCLIP

__all__ = ["HookedCLIP", "Lake", "LakeConfig", "LakeResult", "NeuronSet"]
