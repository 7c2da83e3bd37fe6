"""The method table: the one place where method names are defined.

Each `Method` says what it computes, how its detector is built, which paper it follows, what is
faithful and what adapted to CLIP, and what it was checked against. The CLI's `--methods`
choices, the benchmark, the study, the figures and the README's methods table read it.

Names were renamed once (methods_version 2): what the benchmark called `patchcore` (all channels of
LAKE's hooks, nearest neighbour) is `knn_all`, and what it called `winclip` (the prompt ensemble
on every projected patch token) is `text_dense`. The names `patchcore`, `winclip` and
`winclip_plus` now mean the methods of those papers. A record written under the old names (a
run.json without `methods_version`) is refused with the new name (`check_recorded_methods`);
nothing is mapped silently.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional

from lake_interp.lake.config import LakeConfig

METHODS_VERSION = 2
"""Recorded as `methods_version` in every run.json; records without it use the version-1 names."""

RENAMED = {  # version-1 name -> (version-2 name, what version 1 computed)
    "patchcore": ("knn_all", "nearest neighbour on all channels of LAKE's hooks"),
    "winclip": ("text_dense", "the prompt ensemble on every projected patch token"),
}


@dataclass(frozen=True)
class Method:
    name: str
    computes: str
    """What it computes, in one sentence."""
    reference: str
    """The paper it follows."""
    faithful: str
    """Which parts are as in the reference."""
    adapted: str
    """Which parts are adapted to CLIP (or to this package)."""
    checked: str
    """What it was checked against (README section)."""
    lake: Optional[dict] = None
    """LAKE family: the LakeConfig fields it changes on the run's base config. These share one
    forward pass per image in the benchmark (cached activations)."""
    target: Optional[str] = None
    """Any other method: "module:Class", imported when first built."""
    kwargs: tuple = ()
    """Constructor keyword arguments of `target`: (name, value) pairs; the value "shots" stands for
    the benchmark's k."""
    zero_shot: bool = False
    """Its scores do not depend on the support (the benchmark scores it once per category)."""

    @property
    def lake_family(self) -> bool:
        return self.lake is not None

    def config(self, base: Optional[LakeConfig] = None) -> LakeConfig:
        """The LakeConfig of a LAKE-family method on `base` (default: LakeConfig())."""
        if not self.lake_family:
            raise ValueError(f"method {self.name!r} is not a LAKE variant; it has no LakeConfig")
        return (base or LakeConfig()).replace(**self.lake)

    def detector_class(self):
        """The detector class of a non-LAKE method, imported now; a clear error if its module is missing."""
        module, _, cls = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            raise NotImplementedError(f"method {self.name!r} needs {module}.{cls}, which this installation of "
                                      f"lake_interp does not have ({module} is missing)") from e
        except AttributeError as e:
            raise NotImplementedError(f"method {self.name!r} needs {module}.{cls}; {module} defines no {cls}") from e

    @property
    def available(self) -> bool:
        if self.lake_family:
            return True
        try:
            self.detector_class()
            return True
        except NotImplementedError:
            return False

    def build(self, model, base: Optional[LakeConfig] = None, class_name: str = "object", seed: int = 0,
              shots: Optional[int] = None) -> Any:
        """An unfitted detector (fit(support) -> self, score(images) -> result). LAKE variants take
        `base` (with the run's seed); the others their own defaults."""
        if self.lake_family:
            from lake_interp.lake import Lake

            return Lake(model, self.config(base).replace(seed=seed), class_name)
        kwargs = {k: (shots if v == "shots" else v) for k, v in self.kwargs}
        if any(v == "shots" for _, v in self.kwargs) and shots is None:
            raise ValueError(f"method {self.name!r} is few-shot: build it with shots=k")
        return self.detector_class()(model, config=None, class_name=class_name, **kwargs)

    def fit(self, detector, support) -> Any:
        """detector.fit on the support; a zero-shot detector outside the LAKE family gets None (it
        takes no support images)."""
        return detector.fit(None if self.zero_shot and not self.lake_family else support)


_ADAPTED_LAKE = ("text branch as WinCLIP's prompt ensemble on projected patch tokens; neuron = channel of a "
                 "residual (or MLP) hook; layers, K, distance, fusion weight and smoothing are LakeConfig choices "
                 "the paper leaves open")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lake", "LAKE: the top-K anomaly-sensitive channels (variance over the support patches) per hook, "
           "nearest-neighbour distance to the support bank, fused with the text branch",
           "Li et al., arXiv 2604.07802 (2026)", "variance top-K selection, patch-level normality bank, "
           "visual + semantic fusion", _ADAPTED_LAKE, "unit tests (bank, distances, selection by hand)",
           lake={}),
    Method("lake_random", "control: LAKE with K random channels per hook (seeded) instead of the selected ones",
           "Li et al. (control, not in the paper)", "same pipeline as lake", "random selection", "unit tests",
           lake={"criterion": "random"}),
    Method("lake_attr", "LAKE with a causal selection: the top-K channels by attribution to the anomaly score of "
           "pseudo-anomalies made from the support images (stamps, CutPaste patches, colour shifts), training-free",
           "this package (lake_interp.lake.causal; attribution patching, Nanda 2023; Syed et al. 2023)",
           "same pipeline as lake", "selection criterion 'attribution' instead of variance",
           "planted low-variance unit picked where variance does not (tests/test_attribution.py)",
           lake={"criterion": "attribution"}),
    Method("knn_all", "control: nearest neighbour on all channels of LAKE's hooks, no text branch (no selection)",
           "PatchCore-like memory bank without its features or coreset (control)", "nearest-neighbour patch "
           "distance", "raw tokens at LAKE's hooks, no locally aware features, no coreset, no re-weighting",
           "unit tests", lake={"criterion": "all", "text_weight": 0.0}),
    Method("text_dense", "zero-shot: the WinCLIP prompt ensemble on every projected patch token (no windows)",
           "Jeong et al., CVPR 2023 (prompts only)", "compositional prompt ensemble, softmax with temperature",
           "dense patch tokens (ln_post, proj) instead of windows; no harmonic aggregation", "unit tests "
           "(text features against open_clip)", lake={"text_weight": 1.0}, zero_shot=True),
    Method("winclip", "WinCLIP zero-shot: multi-scale windows embedded by the vision tower, compared with the "
           "prompt ensemble, harmonic aggregation to patches; image score from the class token",
           "Jeong et al., CVPR 2023", "see README: WinCLIP and WinCLIP+ (checked against anomalib)",
           "see README", "anomalib's WinClipModel", target="lake_interp.detectors.winclip:WinCLIP",
           kwargs=(("k_shot", 0),), zero_shot=True),
    Method("winclip_plus", "WinCLIP+: WinCLIP with the reference-association memory of the k normal images",
           "Jeong et al., CVPR 2023", "see README: WinCLIP and WinCLIP+ (checked against anomalib)",
           "see README", "anomalib's WinClipModel", target="lake_interp.detectors.winclip:WinCLIP",
           kwargs=(("k_shot", "shots"),)),
    Method("patchcore", "PatchCore: locally aware patch features of two middle blocks, greedy coreset, "
           "nearest-neighbour distance with re-weighting", "Roth et al., CVPR 2022",
           "see README: PatchCore (checked against anomalib)", "see README",
           "anomalib's KCenterGreedy and PatchcoreModel", target="lake_interp.detectors.patchcore:PatchCore"),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHODS)}")
    return METHODS[name]


def method_config(name: str, base: Optional[LakeConfig] = None) -> LakeConfig:
    """The LakeConfig of a LAKE-family method (lake, lake_random, knn_all, text_dense) on `base`."""
    return get_method(name).config(base)


def default_methods() -> list[str]:
    """Every method whose detector this installation has, in table order (the benchmark's default)."""
    return [name for name, m in METHODS.items() if m.available]


def check_methods(names, where: str = "--methods") -> list[str]:
    """Known names, each once, each available; errors name `where`."""
    names = list(names)
    for n in names:
        if n not in METHODS:
            raise ValueError(f"{where}: unknown method {n!r}; expected one of {list(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where} lists a value twice: {names}")
    for n in names:
        if not METHODS[n].lake_family:
            METHODS[n].detector_class()  # NotImplementedError naming the missing module
    return names


def check_recorded_methods(methods, version, where) -> None:
    """A record (run.json, ...) of `methods` written under `version` (None: before versions were
    recorded, i.e. version 1). Version-1 `patchcore` / `winclip` are refused with their new names."""
    if version is not None and version >= 2:
        return
    old = [m for m in methods or [] if m in RENAMED]
    if old:
        said = "; ".join(f"{m!r} ({RENAMED[m][1]}) is now called {RENAMED[m][0]!r}" for m in old)
        raise ValueError(f"{where} was written by an earlier lake_interp that used old method names: {said}. "
                         f"The names {sorted(RENAMED)} now mean the methods of their papers. Its results are not "
                         f"resumed or renamed: use another output folder (e.g. with --methods "
                         f"{' '.join(RENAMED[m][0] if m in RENAMED else m for m in methods)}), or delete the old one")
