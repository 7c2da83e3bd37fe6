"""LAKE: training-free anomaly detection with anomaly-sensitive neurons."""

from lake_interp.lake.config import METHODS, LakeConfig, method_config
from lake_interp.lake.detector import Lake, LakeResult
from lake_interp.lake.neurons import NeuronSet

__all__ = ["METHODS", "Lake", "LakeConfig", "LakeResult", "NeuronSet", "method_config"]
