"""Lake: training-free anomaly detection with anomaly-sensitive neurons (fit on k normal images)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence

import torch

from lake_interp.lake.bank import nearest_distance
from lake_interp.lake.config import LakeConfig
from lake_interp.lake.fusion import fuse, gaussian_blur, image_scores, upsample
from lake_interp.lake.inputs import image_sources, is_single_image, iter_batches, to_batch
from lake_interp.lake.neurons import NeuronSet, criterion_scores
from lake_interp.lake.semantic import anomaly_probability, require_text_tower, text_features
from lake_interp.lake.sites import hook_names
from lake_interp.lake.threshold import DEFAULT_QUANTILE, NO_THRESHOLD, Prediction, Threshold, from_validation, predict_from
from lake_interp.model.hook_sites import channel_width
from lake_interp.model.tokens import patch_grid


@dataclass
class LakeResult:
    """Scores of a batch; maps at the model's input resolution, all smoothed alike, on the CPU.

    maps == (1 - text_weight) * visual_maps + text_weight * semantic_maps (a branch that is
    switched off by text_weight 0 or 1 is all zeros).
    """

    image_scores: torch.Tensor  # [B]
    maps: torch.Tensor  # [B, H, W] fused
    visual_maps: torch.Tensor  # [B, H, W] nearest-neighbour distance to the bank, mean over hooks
    semantic_maps: torch.Tensor  # [B, H, W] anomalous-prompt probability

    @classmethod
    def concat(cls, parts: list["LakeResult"]) -> "LakeResult":
        """One result from the results of consecutive batches."""
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    @property
    def parts(self) -> dict[str, torch.Tensor]:
        """The method's own maps, by name (the detector protocol's `DetectionResult.parts`)."""
        return {"visual_maps": self.visual_maps, "semantic_maps": self.semantic_maps}


class Lake:
    """Fit on k normal images of one category, then score images (see LakeConfig for every choice)."""

    def __init__(self, model, config: Optional[LakeConfig] = None, class_name: str = "object"):
        self.model = model
        self.config = config or LakeConfig()
        self.class_name = class_name
        if self.uses_semantic:
            require_text_tower(model, self.config.text_weight)  # a vision-only model: refused before any work
        n_layers = model.cfg.vision.n_layers
        self.hooks = hook_names(self.config.sites, self.config.layers, n_layers)
        self.semantic_hooks = hook_names(("hook_resid_post",), self.config.semantic_layers, n_layers)
        widths = {h: self._width(h) for h in self.hooks}
        k = self.config.k_neurons
        if self.uses_visual and self.config.criterion != "all":
            for hook, width in widths.items():
                if k > width:
                    raise ValueError(f"LakeConfig.k_neurons={k} is larger than the width {width} of {hook}; "
                                     f"choose k_neurons <= {width} (CLI: --k-neurons)")
        if k == 1 and self.config.distance == "cosine" and self.config.criterion != "all":
            warnings.warn("k_neurons=1 with cosine distance compares only signs: use distance='euclidean'", stacklevel=2)
        self.neurons: Optional[NeuronSet] = None
        self.banks: dict[str, torch.Tensor] = {}  # hook -> [M support patches, K]
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # hook -> (mean, std) [K]
        self.text_features: Optional[torch.Tensor] = None  # [2, embed_dim]
        self.support_sources: Optional[list] = None  # the support's image files (None: in memory), saved with it
        self.threshold: Optional[Threshold] = None  # decision thresholds (calibrate / calibrate_support), saved with it

    # ----------------------------------------------------------------- branches in use
    @property
    def uses_visual(self) -> bool:
        return self.config.text_weight < 1.0

    @property
    def uses_semantic(self) -> bool:
        return self.config.text_weight > 0.0

    def _width(self, hook: str) -> int:
        return channel_width(self.model, hook)

    # ----------------------------------------------------------------- forward
    @torch.no_grad()
    def patch_activations(self, images: Any, hooks: list[str]) -> dict[str, torch.Tensor]:
        """One forward pass per batch caching only `hooks`: hook -> [B, P patches, d] (class token dropped).
        Holds every activation of the call (for the support, or a cache shared by several detectors)."""
        parts = [self._batch_activations(chunk, hooks) for chunk in iter_batches(images, self.config.batch_size)]
        if not parts:
            raise ValueError("no images given")
        return {h: torch.cat([p[h] for p in parts]) for h in hooks}

    def _batch_activations(self, chunk: Any, hooks: list[str]) -> dict[str, torch.Tensor]:
        _, cache = self.model.run_with_cache(to_batch(chunk, self.model), names_filter=hooks)
        return {h: self.model.patch_tokens(cache[h]) for h in hooks}

    # ----------------------------------------------------------------- fit
    def fit(self, support: Any, neurons: Optional[NeuronSet] = None,
            text_features: Optional[torch.Tensor] = None) -> "Lake":
        """support: k normal images (tensor batch, PIL images, paths or Samples). With `neurons`,
        those neurons are used as they are (no selection), with `text_features` those (see
        with_bank_from)."""
        if not isinstance(support, torch.Tensor) and not is_single_image(support):
            support = list(support)  # read once: a generator gives both its sources and its images
        acts = self.patch_activations(support, self.hooks) if self.uses_visual else {}
        self.fit_activations(acts, text_features=text_features, neurons=neurons, support=support)
        self.support_sources = image_sources(support)
        return self

    def fit_activations(self, acts: dict[str, torch.Tensor], text_features: Optional[torch.Tensor] = None,
                        neurons: Optional[NeuronSet] = None, support: Any = None) -> "Lake":
        """Fit from cached support activations (hook -> [N, P, d], class token dropped); text
        features [2, embed_dim] may be passed in when already computed for this class name. The
        "attribution" criterion also needs the support images themselves (`support`)."""
        cfg = self.config
        acts = {h: a.to(self.model.device) for h, a in acts.items()}
        if text_features is not None:
            text_features = text_features.to(self.model.device)
        if self.uses_visual:
            if neurons is not None:
                if sorted(neurons.hooks) != sorted(self.hooks):
                    raise ValueError(f"neurons cover hooks {neurons.hooks}; this detector reads {self.hooks}")
                self.neurons = neurons
            elif cfg.criterion == "attribution":
                if support is None:
                    raise ValueError("criterion='attribution' ranks neurons on pseudo-anomalies made from the support "
                                     "images: fit with lake.fit(support) or pass support= to fit_activations")
                from lake_interp.lake.causal import attribution_criterion_scores

                self.neurons = NeuronSet.from_scores(attribution_criterion_scores(self, support, acts=acts), cfg.k_neurons,
                                                     "attribution")
            else:
                generator = torch.Generator().manual_seed(cfg.seed)
                scores = {h: criterion_scores(cfg.criterion, acts[h].flatten(0, 1), generator) for h in self.hooks}
                criterion = cfg.criterion if isinstance(cfg.criterion, str) else cfg.to_dict()["criterion"]
                k = None if cfg.criterion == "all" else cfg.k_neurons
                self.neurons = NeuronSet.from_scores(scores, k, criterion)
            for h in self.hooks:
                a = acts[h]
                bank = a.flatten(0, 1)[:, self.neurons.indices[h].to(a.device)].float()  # [N * P, K]
                self.stats[h] = (bank.mean(dim=0), bank.std(dim=0, unbiased=False).clamp_min(1e-6))
                self.banks[h] = self._standardize(h, bank)
        if self.uses_semantic:
            self.text_features = text_features if text_features is not None else self.compute_text_features()
        return self

    def with_bank_from(self, support: Any) -> "Lake":
        """A new detector with this one's config, neurons and text features and a bank rebuilt from
        `support` under whatever hooks are active (e.g. an ablation); this detector is left as it is."""
        if self.uses_visual and self.neurons is None:
            raise RuntimeError("with_bank_from needs a fitted lake: call lake.fit(support_images) first")
        return Lake(self.model, self.config, self.class_name).fit(support, self.neurons, self.text_features)

    def compute_text_features(self) -> torch.Tensor:
        cfg = self.config
        return text_features(self.model, self.class_name, cfg.normal_states, cfg.anomalous_states, cfg.templates)

    def _standardize(self, hook: str, x: torch.Tensor) -> torch.Tensor:
        if not self.config.standardize:
            return x
        mean, std = self.stats[hook]
        return (x - mean) / std

    # ----------------------------------------------------------------- score
    @property
    def required_hooks(self) -> list[str]:
        """The hook points scoring reads (one forward pass caches exactly these)."""
        hooks = (self.hooks if self.uses_visual else []) + (self.semantic_hooks if self.uses_semantic else [])
        return list(dict.fromkeys(hooks))

    @torch.no_grad()
    def score(self, images: Any) -> LakeResult:
        """images: tensor batch, PIL images, paths, Samples or a dataset -> LakeResult. Streamed: one
        batch of `LakeConfig.batch_size` images and its activations is held at a time (the
        results, on the CPU, are concatenated)."""
        parts = [self.score_activations(self._batch_activations(chunk, self.required_hooks))
                 for chunk in iter_batches(images, self.config.batch_size)]
        if not parts:
            raise ValueError("no images given")
        return parts[0] if len(parts) == 1 else LakeResult.concat(parts)

    @torch.no_grad()
    def score_activations(self, acts: dict[str, torch.Tensor]) -> LakeResult:
        """Score from cached activations (hook -> [B, P, d], class token dropped; see required_hooks)."""
        if self.uses_visual and not self.banks:
            raise RuntimeError("Lake.score called before fit: call lake.fit(support_images) first")
        cfg = self.config
        device = self.model.device
        self._move_state(device)
        acts = {h: a.to(device) for h, a in acts.items()}
        n = next(iter(acts.values())).shape[0]
        g, size = self.model.grid_size, self.model.image_size
        visual = torch.zeros(n, g, g, device=device)
        semantic = torch.zeros(n, g, g, device=device)
        if self.uses_visual:
            dists = [
                nearest_distance(self._standardize(h, acts[h][..., self.neurons.indices[h].to(device)].float()),
                                 self.banks[h], cfg.distance)
                for h in self.hooks
            ]
            visual = patch_grid(torch.stack(dists).mean(dim=0)[..., None])[..., 0]
        if self.uses_semantic:
            probs = [
                anomaly_probability(self.model.project_visual_tokens(acts[h]), self.text_features, cfg.temperature)
                for h in self.semantic_hooks
            ]
            semantic = patch_grid(torch.stack(probs).mean(dim=0)[..., None])[..., 0]
        # post-processing on the model's device (on a GPU it would cost more than the forward pass on the CPU)
        visual_maps = gaussian_blur(upsample(visual, size), cfg.sigma)
        semantic_maps = gaussian_blur(upsample(semantic, size), cfg.sigma)
        maps = fuse(visual_maps, semantic_maps, cfg.text_weight)
        scores = image_scores(maps, cfg.image_score, cfg.top_fraction)
        return LakeResult(scores.cpu(), maps.cpu(), visual_maps.cpu(), semantic_maps.cpu())

    def _move_state(self, device: torch.device) -> None:
        """Banks, statistics and text features follow the model (e.g. model.to("cuda") after fit or load)."""
        self.banks = {h: b.to(device) for h, b in self.banks.items()}
        self.stats = {h: (m.to(device), s.to(device)) for h, (m, s) in self.stats.items()}
        if self.text_features is not None:
            self.text_features = self.text_features.to(device)

    # ----------------------------------------------------------------- thresholds and prediction
    def calibrate(self, validation: Any, labels: Optional[Sequence[int]] = None, masks: Optional[Sequence[Any]] = None,
                  quantile: float = DEFAULT_QUANTILE) -> "Lake":
        """Choose and store the decision thresholds on validation images (never the test split):
        F1-optimal where they hold normal and anomalous images (pixels: where masks are known),
        else the `quantile` of the normal images' scores (`lake_interp.lake.threshold`). Samples
        (a dataset split) bring their labels and masks; other images are normal unless `labels`."""
        items = list(validation) if not isinstance(validation, torch.Tensor) and not is_single_image(validation) \
            else validation
        if labels is None and isinstance(items, list) and items and all(hasattr(s, "label") for s in items):
            labels = [int(s.label) for s in items]
            masks = [getattr(s, "mask", None) for s in items] if masks is None else masks
        r = self.score(items)
        size = r.maps.shape[-1]
        if masks is not None:
            from lake_interp.lake.inputs import resize_mask

            masks = [None if m is None else resize_mask(m, size) for m in masks]
        self.threshold = from_validation(r.image_scores.numpy(), r.maps.numpy(), labels, masks, quantile)
        return self

    def calibrate_support(self, support: Any, quantile: float = DEFAULT_QUANTILE) -> "Lake":
        """Choose and store the thresholds on the support itself, leave one out: each of the k >= 2
        support images is scored against a bank built from the other k - 1 (same neurons and text
        features; a bank holding the image itself would give it distance 0), and the `quantile` of
        those k scores (of their map maxima for pixels) is taken. Pass the images `fit` was given."""
        if self.uses_visual and self.neurons is None:
            raise RuntimeError("calibrate_support needs a fitted lake: call lake.fit(support) first")
        items = support if isinstance(support, torch.Tensor) else ([support] if is_single_image(support) else list(support))
        n = len(items)
        if n < 2:
            raise ValueError(f"leave-one-out thresholds need at least 2 support images, got {n}: give validation "
                             "images (lake.calibrate(images); CLI: --validation DIR) or a threshold (CLI: --threshold)")
        acts = self.patch_activations(items, self.required_hooks)
        scores, maps = [], []
        for i in range(n):
            rest = [j for j in range(n) if j != i]
            held_out = Lake(self.model, self.config, self.class_name)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="k_neurons=1 with cosine distance")
                held_out.fit_activations({h: acts[h][rest] for h in self.hooks} if self.uses_visual else {},
                                         text_features=self.text_features, neurons=self.neurons)
            r = held_out.score_activations({h: acts[h][[i]] for h in self.required_hooks})
            scores.append(r.image_scores)
            maps.append(r.maps)
        t = from_validation(torch.cat(scores).numpy(), torch.cat(maps).numpy(), None, None, quantile,
                            "support_leave_one_out_quantile")
        t.details["rule"] = "leave-one-out on the support: " + t.details["rule"]
        self.threshold = t
        return self

    def predict(self, images: Any, threshold: Optional[float] = None, pixel_threshold: Optional[float] = None) -> Prediction:
        """Score images and decide: per image its score, label (score >= image threshold), map and
        mask (map >= pixel threshold), at the model input size (`Prediction.full_size` and
        `Prediction.overlay` give them at an image's own size). Thresholds: the stored ones
        (`calibrate`, `calibrate_support`, `lake-interp fit`), or `threshold` (and
        `pixel_threshold`, default the image threshold) given here."""
        return predict_from(self.score(images), self.decision_threshold(threshold, pixel_threshold))

    def decision_threshold(self, threshold: Optional[float] = None, pixel_threshold: Optional[float] = None) -> Threshold:
        """The thresholds predict uses: given ones override the stored ones; none at all is an error."""
        if threshold is not None:
            return Threshold.given(threshold, pixel_threshold)
        if self.threshold is None:
            raise ValueError(f"this detector {NO_THRESHOLD}")
        if pixel_threshold is not None:
            return Threshold(self.threshold.image, pixel_threshold, self.threshold.method,
                             {**self.threshold.details, "pixel": "given"})
        return self.threshold

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> None:
        from lake_interp.lake.persist import save_lake

        save_lake(self, path)

    @classmethod
    def load(cls, path, model) -> "Lake":
        from lake_interp.lake.persist import load_lake

        return load_lake(path, model)
