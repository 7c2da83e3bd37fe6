"""LAKE: training-free anomaly detection with anomaly-sensitive neurons."""

from lake_interp.lake.config import LakeConfig
from lake_interp.lake.detector import Lake, LakeResult
from lake_interp.lake.neurons import NeuronSet

__all__ = ["Lake", "LakeConfig", "LakeResult", "NeuronSet"]
