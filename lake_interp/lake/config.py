"""LakeConfig: every choice LAKE's paper leaves open, as a documented field with a default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, Optional, Sequence, Union

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
        _validate(self)  # the one place every field is checked (Python, --config, lake.json, study configs)

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
    def for_model(cls, model, verbose: bool = True, **changes) -> "LakeConfig":
        """LakeConfig(**changes) with k_neurons, where not given (or None), by the default rule for
        this model's hooks (`default_k_for`: the paper's 100, or a quarter of the channels of a hook
        narrower than 400), printing what it chose where that is not 100 (`verbose`)."""
        if changes.get("k_neurons") is None:
            k, note = default_k_for(model, changes.get("sites"), changes.get("layers"))
            if note and verbose:
                print(note)
            changes = {**changes, "k_neurons": k}
        return cls.from_dict(changes)

    @classmethod
    def from_dict(cls, d: dict) -> "LakeConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LakeConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


MAX_SIGMA = 64.0  # px: a kernel radius of 4 * 64 = 256 already spans a 224 px map; more only costs memory


def _validate(cfg: "LakeConfig") -> None:
    """Types, ranges and finiteness of every field, each error naming its field (ValueError)."""
    import math
    import numbers

    def fail(name, expected):
        raise ValueError(f"LakeConfig.{name}={getattr(cfg, name)!r}; expected {expected}")

    def integer(name, low):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            fail(name, f"an integer >= {low}")
        if v < low:
            fail(name, f">= {low}")
        setattr(cfg, name, int(v))

    def real(name, ok, expected):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not ok(float(v)):
            fail(name, expected)
        setattr(cfg, name, float(v))

    def sequence(name, item_ok, expected):
        v = getattr(cfg, name)
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
            fail(name, f"a list of {expected}, not a {type(v).__name__}")
        if not v:
            fail(name, f"a non-empty list of {expected}")
        bad = [x for x in v if not item_ok(x)]
        if bad:
            raise ValueError(f"LakeConfig.{name}: {bad[0]!r} is not one of the {expected}")
        setattr(cfg, name, tuple(v))

    def layer(x):
        if isinstance(x, bool):
            return False
        if isinstance(x, numbers.Integral):
            return True
        return isinstance(x, numbers.Real) and math.isfinite(x) and 0.0 < x <= 1.0

    text = lambda x: isinstance(x, str) and x.strip() != ""  # noqa: E731
    prompt = lambda x: text(x) and "{}" in x  # noqa: E731
    sequence("sites", text, "hook sites (non-empty strings, e.g. 'hook_resid_post')")
    sequence("layers", layer, "block indices (integers) or relative depths in (0, 1]")
    sequence("semantic_layers", layer, "block indices (integers) or relative depths in (0, 1]")
    for name in ("normal_states", "anomalous_states", "templates"):
        sequence(name, prompt, "strings with a '{}' placeholder")
    known = ("variance", "random", "all", "attribution")
    if isinstance(cfg.criterion, str):
        if not (cfg.criterion in known or cfg.criterion.startswith("custom:")):
            raise ValueError(f"LakeConfig.criterion={cfg.criterion!r}; expected variance, random, all, attribution "
                             f"or a callable")
    elif not callable(cfg.criterion):
        fail("criterion", "variance, random, all, attribution or a callable")
    integer("k_neurons", 1)
    integer("seed", 0)
    integer("batch_size", 1)
    for name, allowed in {"distance": ("cosine", "euclidean"), "image_score": ("max", "top_mean")}.items():
        if not isinstance(getattr(cfg, name), str) or getattr(cfg, name) not in allowed:
            fail(name, f"one of {allowed}")
    if not isinstance(cfg.standardize, bool):  # a string ("false") or a number is not taken for a switch
        fail("standardize", "true or false (a boolean)")
    real("text_weight", lambda v: 0.0 <= v <= 1.0, "a value in [0, 1]")
    real("temperature", lambda v: v > 0.0, "a finite number > 0")
    real("sigma", lambda v: 0.0 <= v <= MAX_SIGMA, f"a finite number of pixels in [0, {MAX_SIGMA:g}] (0: no smoothing)")
    real("top_fraction", lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")


# The benchmark's methods (LAKE variants as changes to a base config, and the other detectors)
# are defined in one table: lake_interp.detectors.methods.METHODS.


PAPER_K = 100  # the paper's K (LakeConfig.k_neurons' default)


def default_k_neurons(width: int) -> int:
    """K when none is given: the paper's 100, or a quarter of the channels for a hook narrower
    than 400 (e.g. 16 for lake-tiny's 64), so that selection keeps a minority of the channels."""
    return min(PAPER_K, max(1, int(width) // 4))


def default_k_for(model, sites: Optional[Sequence[str]] = None,
                  layers: Optional[Sequence[Layer]] = None) -> tuple[int, Optional[str]]:
    """(K by the default rule for the narrowest hook these sites and layers read, a note saying what
    was done where that is not the paper's 100, else None). The one rule of `LakeConfig.for_model`,
    `lake-interp fit`, `benchmark`, `demo` (`cli.with_default_k`), the notebooks and study configs."""
    from lake_interp.lake.sites import hook_names
    from lake_interp.model.hook_sites import channel_width

    sites = LakeConfig.sites if sites is None else sites  # None: LakeConfig's defaults
    layers = LakeConfig.layers if layers is None else layers
    hooks = hook_names(tuple(sites), tuple(layers), model.cfg.vision.n_layers)
    widths = {h: channel_width(model, h) for h in hooks}
    hook = min(widths, key=widths.get)
    k = default_k_neurons(widths[hook])
    if k == PAPER_K:
        return k, None
    return k, (f"k_neurons {k} (a quarter of the {widths[hook]} channels of {hook} of {model.cfg.name}; the paper's "
               f"{PAPER_K} is for hooks of at least {4 * PAPER_K} channels, as in ViT-B/L; --k-neurons or "
               f"LakeConfig(k_neurons=...) sets it)")
