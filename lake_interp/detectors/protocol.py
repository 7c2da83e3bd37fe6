"""The detector protocol: fit(support) -> self, score(images) -> result with image_scores and maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class DetectionResult:
    """Scores of a batch, on the CPU: `maps` at the model's input resolution."""

    image_scores: torch.Tensor  # [B]
    maps: torch.Tensor  # [B, S, S]
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # the method's own maps/scores, by name

    @classmethod
    def concat(cls, results: list["DetectionResult"]) -> "DetectionResult":
        """One result from the results of consecutive batches."""
        keys = results[0].parts.keys()
        return cls(torch.cat([r.image_scores for r in results]), torch.cat([r.maps for r in results]),
                   {k: torch.cat([r.parts[k] for r in results]) for k in keys})


@runtime_checkable
class Detector(Protocol):
    def fit(self, support: Any) -> "Detector": ...

    def score(self, images: Any) -> Any: ...
