"""NeuronSet (named neuron indices per hook point) and the selection criteria that produce it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Union

import torch


def variance_scores(acts: torch.Tensor) -> torch.Tensor:
    """The paper's criterion: variance of each neuron over the normal patch tokens. [N, d] -> [d]."""
    return acts.float().var(dim=0, unbiased=False)


def criterion_scores(criterion: Union[str, Callable], acts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Score every neuron of one hook point. acts: [N patches, d] -> [d] (higher = more sensitive).

    `generator` drives the random criterion (one generator per fit, so each hook gets its own draw)."""
    d = acts.shape[-1]
    if callable(criterion):
        scores = torch.as_tensor(criterion(acts), dtype=torch.float32).flatten().cpu()
        if scores.shape != (d,):
            raise ValueError(f"criterion {criterion!r} returned shape {tuple(scores.shape)}; expected ({d},)")
        return scores
    if criterion == "variance":
        return variance_scores(acts).cpu()
    if criterion == "random":
        return torch.rand(d, generator=generator)
    if criterion == "all":
        return torch.zeros(d)
    raise ValueError(f"unknown criterion {criterion!r}; expected variance, random, all or a callable")


@dataclass
class NeuronSet:
    """Selected neurons: for each hook point name, channel indices (best first) and their scores.

    `all_scores` keeps the criterion score of every channel, so `top(k)` re-selects without refitting.
    Iterating gives (hook name, index) pairs, the form the ablation tools take.
    """

    indices: dict[str, torch.Tensor] = field(default_factory=dict)  # hook -> [K] long
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # hook -> [K] float
    all_scores: dict[str, torch.Tensor] = field(default_factory=dict)  # hook -> [d] float
    criterion: str = "variance"

    @classmethod
    def from_scores(cls, all_scores: dict[str, torch.Tensor], k: int | None, criterion: str = "variance") -> "NeuronSet":
        """Top-k channels per hook point by score (k=None: every channel, in channel order)."""
        out = cls(all_scores={h: s.float().cpu() for h, s in all_scores.items()}, criterion=criterion)
        for hook, s in out.all_scores.items():
            if k is not None and k > s.numel():
                raise ValueError(f"k_neurons={k} is larger than the width {s.numel()} of {hook}")
            idx = torch.arange(s.numel()) if k is None else torch.topk(s, k, sorted=True).indices
            out.indices[hook], out.scores[hook] = idx, s[idx]
        return out

    def top(self, k: int) -> "NeuronSet":
        return NeuronSet.from_scores(self.all_scores, k, self.criterion)

    @property
    def hooks(self) -> list[str]:
        return list(self.indices)

    def __len__(self) -> int:
        return sum(len(i) for i in self.indices.values())

    def __repr__(self) -> str:
        """Short: the criterion, then per hook the count and the first channels (best first)."""
        def head(idx):
            shown = ", ".join(str(int(i)) for i in idx[:5])
            return f"[{shown}{', ...' if len(idx) > 5 else ''}]"

        hooks = "; ".join(f"{h}: {len(idx)} {head(idx)}" for h, idx in self.indices.items())
        return f"NeuronSet({self.criterion}, {len(self)} neurons; {hooks})"

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for hook, idx in self.indices.items():
            for i in idx.tolist():
                yield hook, i

    def per_layer_counts(self) -> dict[str, int]:
        return {hook: len(idx) for hook, idx in self.indices.items()}

    # --- JSON round trip
    def to_dict(self) -> dict:
        return {
            "criterion": self.criterion,
            "neurons": {
                h: {
                    "indices": self.indices[h].tolist(),
                    "scores": self.scores[h].tolist(),
                    "all_scores": self.all_scores[h].tolist() if h in self.all_scores else None,
                }
                for h in self.indices
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NeuronSet":
        out = cls(criterion=d.get("criterion", "unknown"))
        for h, v in d["neurons"].items():
            out.indices[h] = torch.tensor(v["indices"], dtype=torch.long)
            out.scores[h] = torch.tensor(v["scores"], dtype=torch.float32)
            if v.get("all_scores") is not None:
                out.all_scores[h] = torch.tensor(v["all_scores"], dtype=torch.float32)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "NeuronSet":
        return cls.from_dict(json.loads(Path(path).read_text()))
