"""lake_interp: a mechanistic-interpretability workbench for anomaly detection in CLIP."""

from importlib.metadata import PackageNotFoundError, version

from lake_interp.lake import Lake, LakeConfig, LakeResult, NeuronSet
from lake_interp.model import HookedCLIP, HookedViT

try:
    __version__ = version("lake_interp")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "unknown"

__all__ = ["HookedCLIP", "HookedViT", "Lake", "LakeConfig", "LakeResult", "NeuronSet", "__version__"]
