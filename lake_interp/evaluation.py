"""One evaluation layer: detectors + a dataset split -> image and pixel metrics (lake_interp.metrics).

The benchmark, the interp tools (ablation_effect, sweep), the study, the demo and the notebooks
call it. Any detector of the protocol (`fit(support) -> self`, `score(images) -> result` with
`image_scores` [B] and `maps` [B, S, S]) or a method name of the table
(`lake_interp.detectors.methods.METHODS`) can be evaluated.

>>> from lake_interp.evaluation import evaluate, fit_and_evaluate
>>> metrics, result = evaluate(lake, test)                       # a fitted detector
>>> metrics, result = fit_and_evaluate(model, "knn_all", support, test, class_name="bottle")
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from lake_interp.lake.inputs import iter_batches
from lake_interp.metrics import (
    AUSPRO_FPR_LIMITS, UndefinedMetricWarning, image_metrics, pixel_metrics, region_at_size, resize_mask, spro_metrics,
)

METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")
#: MVTec LOCO's AUsPRO at the official FPR limits (mean over the defect types), reported for splits whose
#: samples carry defect regions (`lake_interp.data.loco.LocoSample`); NaN, with the reason, where they cannot.
SPRO_METRICS = tuple(f"pixel_auspro_{limit:g}" for limit in AUSPRO_FPR_LIMITS)


@dataclass
class Regions:
    """sPRO ground truth of a split: per image its defect regions at the evaluation size
    (`lake_interp.metrics.SaturatedRegion`, () for a normal image) and its defect type; or, where the
    split cannot give them (a LOCO category without defects_config.json, ...), why (`missing`)."""

    regions: list
    defects: list
    missing: Optional[str] = None


@dataclass
class Targets:
    """Ground truth of a split: labels [N] (0/1) and masks [N, size, size] bool (None: no image has one),
    each resized once from the image's own mask (nearest, `lake_interp.metrics.resize_mask`); `regions`:
    the sPRO ground truth where the samples carry defect regions (MVTec LOCO), else None."""

    labels: np.ndarray
    masks: Optional[np.ndarray]
    regions: Optional[Regions] = None


def targets(test, size: int) -> Targets:
    """Labels and masks of `test` (a dataset or a list of Samples) at `size` x `size`; reads the images
    one at a time (only the resized masks are kept)."""
    collect = _Collector(size)
    for sample in test:
        collect.add([sample])
    return collect.targets()


class _Collector:
    """Labels and resized masks gathered batch by batch while a split is streamed."""

    def __init__(self, size: int):
        self.size, self.labels, self.masks, self.any_mask = size, [], [], False
        self.regions, self.defects, self.with_regions, self.missing = [], [], 0, None

    def add(self, samples) -> None:
        for s in samples:
            if not hasattr(s, "label"):
                raise ValueError(f"evaluation needs Samples (a dataset split: label, mask); got {type(s).__name__}")
            self.labels.append(int(s.label))
            self.any_mask |= s.mask is not None
            self.masks.append(resize_mask(s.mask, self.size))
            self._add_regions(s)

    def _add_regions(self, s) -> None:
        """Defect regions (sPRO) of samples that carry them, resized at once to the evaluation size."""
        if not hasattr(s, "regions"):
            return
        self.with_regions += 1
        if self.missing is not None:
            return
        if s.regions is None:
            self.missing = getattr(s, "regions_missing", None) or f"{s.path} carries no defect regions"
        elif s.label and not s.regions:
            self.missing = f"anomalous image {s.path} has no defect masks"
        else:
            self.regions.append(tuple(region_at_size(r, self.size) for r in s.regions))
            self.defects.append(s.defect)

    def targets(self) -> Targets:
        regions = None
        if self.with_regions:
            missing = self.missing
            if missing is None and self.with_regions != len(self.labels):
                missing = f"only {self.with_regions} of the {len(self.labels)} samples carry defect regions"
            regions = Regions([], [], missing) if missing else Regions(self.regions, self.defects)
        return Targets(np.array(self.labels, dtype=np.int64), np.stack(self.masks) if self.any_mask else None, regions)


def metrics(result, labels, masks=None, resolution: Optional[int] = None, regions: Optional[Regions] = None) -> dict:
    """Every metric of METRICS for one result (image_scores [N], maps [N, S, S]). masks: [N, H, W]
    at the evaluation size, or a list as the datasets give it (None entries, the images' own
    sizes; see `pixel_metrics`), or None (pixel metrics NaN). resolution: None (the maps' size) or
    the evaluation size both are resized to. regions (`Targets.regions`, at the evaluation size):
    adds SPRO_METRICS (`lake_interp.metrics.spro_metrics`); NaN with an UndefinedMetricWarning that
    says why where `regions.missing`."""
    img = image_metrics(_numpy(result.image_scores), np.asarray(labels))
    out = {f"image_{k}": v for k, v in img.items()}
    if masks is None:
        pix = dict.fromkeys(("auroc", "ap", "f1_max", "aupro"), float("nan"))
    else:
        pix = pixel_metrics(_numpy(result.maps), masks, resolution=resolution)
    out.update({f"pixel_{k}": v for k, v in pix.items()})
    if regions is not None:
        if regions.missing:
            warnings.warn(f"sPRO not computed: {regions.missing}; returning NaN for {', '.join(SPRO_METRICS)}",
                          UndefinedMetricWarning, stacklevel=2)
            out.update(dict.fromkeys(SPRO_METRICS, float("nan")))
        else:
            spro = spro_metrics(_numpy(result.maps), regions.regions, regions.defects, resolution=resolution)
            out.update({f"pixel_{k}": v for k, v in spro.items()})
    return out


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def concat_results(results: list) -> Any:
    """One result from the results of consecutive batches (the result type's own `concat` if it has one)."""
    if len(results) == 1:
        return results[0]
    concat = getattr(type(results[0]), "concat", None)
    if concat is not None:
        return concat(results)
    from lake_interp.detectors.protocol import DetectionResult

    parts = [dict(getattr(r, "parts", {}) or {}) for r in results]
    return DetectionResult.concat([DetectionResult(r.image_scores, r.maps, p) for r, p in zip(results, parts)])


def score_batches(detector, images, batch_size: int = 16):
    """detector.score over `images` one batch at a time (bounded memory for any detector); the
    results concatenated. A detector that is itself a LAKE variant streams inside score as well."""
    results = [detector.score(chunk) for chunk in iter_batches(images, batch_size)]
    if not results:
        raise ValueError("no images given")
    return concat_results(results)


def evaluate(detector, test, resolution: Optional[int] = None, batch_size: int = 16,
             truth: Optional[Targets] = None) -> tuple[dict, Any]:
    """Score a split with a fitted detector -> (metrics, result), reading each image once, one batch
    at a time. test: a dataset or list of Samples (labels and masks are read from it), or any
    images with their `truth` given (from `targets`). resolution: the evaluation size (None: the
    maps' size, i.e. the model input size)."""
    results, collect = [], None
    for chunk in iter_batches(test, batch_size):
        result = detector.score(chunk)
        results.append(result)
        if truth is None:
            collect = collect or _Collector(resolution or result.maps.shape[-1])
            collect.add(chunk)
    if not results:
        raise ValueError("no images given")
    result = concat_results(results)
    truth = truth or collect.targets()
    return metrics(result, truth.labels, truth.masks, resolution, truth.regions), result


def fit_and_evaluate(model, method: str | Any, support, test, class_name: str = "object", base=None, seed: int = 0,
                     shots: Optional[int] = None, resolution: Optional[int] = None) -> tuple[dict, Any]:
    """Build `method` (a name of the method table, or an unfitted detector), fit it on `support`,
    evaluate it on `test` -> (metrics, result)."""
    if isinstance(method, str):
        from lake_interp.detectors.methods import get_method

        m = get_method(method)
        support = None if support is None else list(support)
        shots = shots or (len(support) if support is not None else 0)
        return evaluate(m.fit(m.build(model, base, class_name, seed=seed, shots=shots), support), test, resolution)
    return evaluate(method.fit(support), test, resolution)


def refit(detector, support):
    """A copy of `detector` fitted again on `support` with the model as it is now (e.g. under an
    ablation); the detector itself is left as it is. A Lake keeps its neurons and text features
    (`with_bank_from`), a WinCLIP its text embeddings (`with_support`); any other detector is
    deep-copied (sharing the model) and fitted. A zero-shot detector of the method table is
    fitted on no support."""
    from lake_interp.detectors.methods import METHODS

    if hasattr(detector, "with_bank_from"):
        return detector.with_bank_from(support)
    method = METHODS.get(getattr(detector, "method", None))
    if method is not None and method.zero_shot:
        support = None
    if hasattr(detector, "with_support"):
        return detector.with_support(support)
    import copy

    model = getattr(detector, "model", None)
    return copy.deepcopy(detector, {id(model): model} if model is not None else {}).fit(support)


def cache_activations(lake, images, hooks: list[str]) -> dict[str, torch.Tensor]:
    """Patch activations (CPU) of `hooks` on every image, one batch at a time: the cache LAKE-family
    detectors share (fit_activations / score_activations) so that each image costs one forward pass."""
    return cache_test_set(lake, images, hooks, truth=False)[0]


def cache_test_set(lake, test, hooks: list[str], mask_size: Optional[int] = None, truth: bool = True):
    """(activations hook -> [N, P, d] on the CPU, masks [N, S, S] or None, labels [N]) of a split, each
    image read once: the LAKE fast path's inputs. Masks at `mask_size` (default: the model input size)."""
    acts, t = cache_test_targets(lake, test, hooks, mask_size, truth)
    return acts, t.masks, t.labels


def cache_test_targets(lake, test, hooks: list[str], mask_size: Optional[int] = None, truth: bool = True):
    """(activations hook -> [N, P, d] on the CPU, `Targets`) of a split, each image read once: as
    `cache_test_set`, with the whole ground truth (sPRO regions included)."""
    acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    collect, n = _Collector(mask_size or lake.model.image_size), 0
    for chunk in iter_batches(test, lake.config.batch_size):
        for h, a in lake.patch_activations(chunk, hooks).items():
            acts[h].append(a.cpu())
        if truth:
            collect.add(chunk)
        n += len(chunk)
    if not n:
        raise ValueError("no images given")
    t = collect.targets() if truth else Targets(np.zeros(0, np.int64), None)
    return {h: torch.cat(v) for h, v in acts.items()}, t
