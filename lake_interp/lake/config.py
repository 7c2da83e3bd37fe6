"""LakeConfig: every choice LAKE's paper leaves open, as a documented field with a default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, Sequence, Union

# WinCLIP's compositional prompt ensemble (Jeong et al., CVPR 2023): state words x templates.
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage")
ANOMALOUS_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
    "a close-up photo of the {}.", "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of the {}.", "a dark photo of a {}.", "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.",
    "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.", "a photo of the small {}.",
    "a photo of a large {}.", "a photo of the large {}.", "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.", "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)

Criterion = Union[str, Callable]  # "variance" | "random" | "all" | "attribution" | (activations [N, d]) -> scores [d]
Layer = Union[int, float]  # int: block index (negative from the end); float in (0, 1]: relative depth


@dataclass
class LakeConfig:
    """Configuration of the LAKE detector. Plain data (JSON round trip with `to_dict`/`from_dict`)."""

    # --- where the neurons live
    sites: Sequence[str] = ("hook_resid_post",)
    """Per-block hook points whose channels are the "neurons" (e.g. "hook_resid_post", "mlp.hook_post")."""
    layers: Sequence[Layer] = (0.25, 0.5, 0.75, 1.0)
    """Blocks to read: floats are relative depth (block round(f * n_layers) - 1, so 0.25/0.5/0.75/1.0 is
    blocks 2/5/8/11 of 12 and 5/11/17/23 of 24), ints are block indices (negative from the end)."""

    # --- neuron selection
    criterion: Criterion = "variance"
    """"variance" over the support patch tokens (the paper's), "random" (seeded control), "all" (no
    selection: plain nearest-neighbour patch matching), "attribution" (causal: attribution to the anomaly
    score of pseudo-anomalies made from the support images, `lake_interp.lake.causal`; needs the support
    images, not only their activations), or a callable activations [N, d] -> scores [d]."""
    k_neurons: int = 100
    """K neurons kept per hook point (the top-K by criterion score); K larger than the width is an error."""
    seed: int = 0
    """Seed of the random criterion and of the attribution criterion's pseudo-anomalies."""

    # --- visual branch: nearest neighbour in the normality bank
    distance: str = "cosine"
    """"cosine" (1 - cosine similarity) or "euclidean"."""
    standardize: bool = False
    """Z-score each selected neuron with the support mean and std before matching."""

    # --- semantic branch: WinCLIP-style prompts
    text_weight: float = 0.3
    """Fused map = (1 - text_weight) * visual + text_weight * semantic. 0: visual only; 1: text only."""
    semantic_layers: Sequence[Layer] = (1.0,)
    """Blocks whose patch tokens are projected (ln_post, proj) and compared with the prompts (averaged)."""
    temperature: float = 0.07
    normal_states: Sequence[str] = NORMAL_STATES
    anomalous_states: Sequence[str] = ANOMALOUS_STATES
    templates: Sequence[str] = TEMPLATES

    # --- maps and scores
    sigma: float = 4.0
    """Gaussian smoothing of the fused map, in pixels of the input resolution (0: none)."""
    image_score: str = "max"
    """"max" of the fused map, or "top_mean": mean of its top `top_fraction` pixels."""
    top_fraction: float = 0.01
    batch_size: int = 16

    def __post_init__(self):
        for name in ("sites", "layers", "semantic_layers", "normal_states", "anomalous_states", "templates"):
            setattr(self, name, tuple(getattr(self, name)))
        choices = {"distance": ("cosine", "euclidean"), "image_score": ("max", "top_mean")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"LakeConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
        known = ("variance", "random", "all", "attribution")
        if isinstance(self.criterion, str) and not (self.criterion in known or self.criterion.startswith("custom:")):
            raise ValueError(f"LakeConfig.criterion={self.criterion!r}; expected variance, random, all, attribution "
                             f"or a callable")
        if not 0.0 <= self.text_weight <= 1.0:
            raise ValueError(f"LakeConfig.text_weight={self.text_weight}; expected a value in [0, 1]")
        if self.k_neurons < 1:
            raise ValueError(f"LakeConfig.k_neurons={self.k_neurons}; expected >= 1")

    def uses_selection(self) -> bool:
        """True when neurons are selected (a random control makes sense): visual branch on, criterion not "all"."""
        return self.text_weight < 1.0 and self.criterion != "all"

    def replace(self, **changes) -> "LakeConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        if callable(self.criterion):
            d["criterion"] = f"custom:{getattr(self.criterion, '__qualname__', repr(self.criterion))}"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LakeConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LakeConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


# The benchmark's methods (LAKE variants as changes to a base config, and the other detectors)
# are defined in one table: lake_interp.detectors.methods.METHODS.
