"""Detectors other than LAKE itself, and the protocol every detector follows.

Protocol (duck-typed, as scikit-learn estimators): a detector is built from a HookedCLIP, a
config and a class name; `fit(support) -> self` on k normal images; `score(images) -> result`
where result has `image_scores` [B] and `maps` [B, S, S] (S: the model input size, on the CPU),
plus the method's own parts. `lake_interp.lake.Lake` follows it; the baselines here do too.
"""

from lake_interp.detectors.protocol import DetectionResult, Detector

__all__ = ["DetectionResult", "Detector"]
