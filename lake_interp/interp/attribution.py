"""Attribution patching of LAKE anomaly scores and maps to every unit of the vision tower.

`attribute(detector, images, target=...)` estimates, for every unit (a residual channel or an MLP
neuron of a vision block, or any NeuronSet / (hook, channel) pairs), the change of a target when the
unit is replaced by its reference value, as ablation does (`lake_interp.interp.ablation.ablate`,
modes zero / mean / resample), to first order (attribution patching: activation x gradient, Nanda
2023; Syed et al. 2023):

    attribution(u) = sum over positions p of  dT/da_u[p] * (a_u[p] - ref_u[p])
                   ~ T(clean) - T(u replaced by its reference at every position)

positive: the unit raises the target (replacing it lowers it). One forward and one backward pass
per batch of images gives every unit (`Attribution.meta["cost"]` counts them).

What the target reads (`readout`, the same rule as ablation, `lake_interp.interp.readout`):

- "downstream" (the default, as `ablation_effect`): nearest neighbour on all channels of the
  final block's `hook_resid_post`, fitted on `support` with the clean model, with the detector's
  distance and map settings. It asks what the units carry that the rest of the network uses; the
  final block's residual channels are read directly (listed in `meta["read_directly"]`, flagged per row).
- "all_channels": nearest neighbour on all channels of the units' own hooks (fitted on `support`).
- "detector": the detector's own fused map / score. A LAKE detector reads its selected channels
  (and, with a semantic branch, every channel of its semantic hooks): their attribution includes
  their own entry into the distance, not only what the network does with them. They are listed in
  `meta["read_directly"]` and flagged per row: reading a causal claim about the network off them
  would be circular.
- a fitted Lake: that detector.

Targets: "score" (the image score), "region" (the mean of the fused map over `region`: masks, one
per image or one for all, at any size, or a box (x0, y0, x1, y1) in fractions of the image), and
"map" (the score or region attribution for the ranking, plus per-pixel maps for `map_units`: the
first-order change of every pixel of the fused map when that unit is replaced, a forward-mode
Jacobian-vector product, one forward pass per unit and batch).

Differentiability of the detector's scoring (written here, reusing the bank and semantic math of
`lake_interp.lake`; `Lake.score` itself runs under no_grad): the nearest neighbour's argmin is not
differentiable; the gradient flows through the distance to the selected neighbour (piecewise:
exact while the neighbour does not change). The image score "max" passes the gradient to the
maximal pixel only, "top_mean" to its top pixels. A euclidean distance of exactly 0 gets gradient
0. The selection of neurons (top-K by criterion) is held fixed. Everything else (cosine,
standardisation, softmax over prompts, bilinear upsampling, Gaussian smoothing, fusion) is smooth.

Bank (`bank`): "fixed" (default): the readout's bank as fitted, the unit replaced in the scored
images only (per-image attribution, exact first-order for that question); "refit": the unit is
replaced in the support images too and the bank (and its statistics) rebuilt, as `ablation_effect`
refits its readout under an ablation; the support's part is shared by all images and only exists
for the mean over images (`support_part`; per-image values are the scored images' part).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from lake_interp.interp.targets import Neurons, check_neurons
from lake_interp.lake.fusion import fuse, gaussian_blur, image_scores, upsample
from lake_interp.lake.inputs import iter_batches, resize_mask, to_batch
from lake_interp.lake.semantic import anomaly_probability
from lake_interp.model.hook_sites import block_hook_names, channel_width, hook_label, parse_hook_name, pattern_hook_names
from lake_interp.model.tokens import patch_grid

MODES = ("zero", "mean", "resample")
TARGETS = ("score", "region", "map")
BANKS = ("fixed", "refit")
UNIT_SITES = ("hook_resid_post", "mlp.hook_post")
NOT_DIFFERENTIABLE = (
    "nearest-neighbour argmin: gradient through the selected neighbour's distance (piecewise)",
    "image score max / top_mean: gradient to the selected pixels only",
    "euclidean distance exactly 0: gradient 0",
    "neuron selection (top-K) held fixed",
)


# ------------------------------------------------------------------------------------ units
def all_units(model, sites: Sequence[str] = UNIT_SITES) -> dict[str, torch.Tensor]:
    """hook -> every channel, for `sites` of every vision block (block-major)."""
    hooks = block_hook_names(sites, range(model.cfg.vision.n_layers), "visual")
    return {h: torch.arange(channel_width(model, h)) for h in hooks}


def _grouped_units(model, units) -> dict[str, torch.Tensor]:
    if units is None:
        return all_units(model)
    if isinstance(units, str):
        return all_units(model, (units,))
    if isinstance(units, (tuple, list)) and units and all(isinstance(u, str) for u in units):
        return all_units(model, tuple(units))  # site names
    grouped = check_neurons(model, units)
    for h in grouped:
        if parse_hook_name(h).tower != "visual":
            raise ValueError(f"attribute reads the vision tower; {h} is not a vision hook")
    return grouped


def _forward_order(model, hooks) -> list[str]:
    order = {name: i for i, name in enumerate(model.hook_dict)}
    return sorted(hooks, key=lambda h: order[h])


# ------------------------------------------------------------------------------------ readout
@dataclass
class _Reader:
    name: str
    lake: Any
    description: str
    read_directly: set


def _read_channels(lake) -> set:
    """(hook, channel) pairs a Lake reads directly: its selected neurons and, with a semantic
    branch, every channel of its semantic hooks."""
    out = set()
    if lake.uses_visual and lake.neurons is not None:
        out |= {(h, int(i)) for h, idx in lake.neurons.indices.items() for i in idx.tolist()}
    if lake.uses_semantic:
        out |= {(h, c) for h in lake.semantic_hooks for c in range(channel_width(lake.model, h))}
    return out


def _make_reader(detector, grouped, support, readout) -> _Reader:
    from lake_interp.lake import Lake

    if isinstance(readout, str) and readout in ("downstream", "all_channels"):
        if support is None:
            raise ValueError(f"readout={readout!r} is fitted on normal images: pass support=")
        from lake_interp.interp.readout import make_readout

        with warnings.catch_warnings():  # the direct reads are recorded per unit instead
            warnings.simplefilter("ignore")
            r = make_readout(detector, [(h, int(idx[0])) for h, idx in grouped.items()], support, readout)
        return _Reader(readout, r.detector, r.description, _read_channels(r.detector))
    lake = detector if readout in ("detector", None) else readout
    if not isinstance(lake, Lake):
        raise NotImplementedError(
            f"attribute differentiates LAKE's scoring; {type(lake).__name__} is not a Lake: use "
            f"readout='downstream' or 'all_channels' (nearest-neighbour readouts built from its settings)")
    if lake.uses_visual and not lake.banks:
        raise RuntimeError("attribute needs a fitted detector: call lake.fit(support_images) first")
    desc = ("the detector's own fused map (it reads its selected channels directly: their attribution "
            "includes their own entry into the distance)")
    return _Reader("detector", lake, desc, _read_channels(lake))


# ------------------------------------------------------------------------------------ differentiable scoring
def _nearest(queries: torch.Tensor, bank: torch.Tensor, distance: str, chunk: int = 4096) -> torch.Tensor:
    """Differentiable nearest-neighbour distance [B, P] of queries [B, P, K] to bank [M, K]: the
    neighbour is chosen without gradient (argmin), the distance to it is recomputed with gradient
    (same values as `lake_interp.lake.bank.nearest_distance`)."""
    b, p, k = queries.shape
    q = queries.reshape(b * p, k).float()
    bank = bank.float()
    if distance == "cosine":
        qn, bn = F.normalize(q, dim=-1), F.normalize(bank, dim=-1)
    with torch.no_grad():
        picks = []
        for s in range(0, q.shape[0], chunk):
            if distance == "cosine":
                picks.append((qn[s : s + chunk].detach() @ bn.detach().T).argmax(dim=-1))
            else:
                # detached: the choice carries no gradient, and forward-mode AD has no rule for cdist
                picks.append(torch.cdist(q[s : s + chunk].detach(), bank.detach()).argmin(dim=-1))
        pick = torch.cat(picks)
    if distance == "cosine":
        d = 1.0 - (qn * bn[pick]).sum(dim=-1)
    else:
        sq = ((q - bank[pick]) ** 2).sum(dim=-1)
        d = torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))
    return d.reshape(b, p)


def lake_maps(lake, acts: dict[str, torch.Tensor], support_acts: Optional[dict[str, torch.Tensor]] = None):
    """Differentiable `Lake.score_activations`: acts hook -> [B, P, d] patch tokens (class token
    dropped) -> (fused maps [B, S, S], image scores [B]). With `support_acts` (hook -> [N, P, d]) the
    bank and its statistics are rebuilt from them (differentiably), as a refit does."""
    cfg = lake.config
    device = next(iter(acts.values())).device
    lake._move_state(device)
    n = next(iter(acts.values())).shape[0]
    g, size = lake.model.grid_size, lake.model.image_size
    visual = torch.zeros(n, g, g, device=device)
    semantic = torch.zeros(n, g, g, device=device)
    if lake.uses_visual:
        dists = []
        for h in lake.hooks:
            idx = lake.neurons.indices[h].to(device)
            if support_acts is not None:
                bank = support_acts[h].flatten(0, 1)[:, idx].float()
                mean, std = bank.mean(dim=0), bank.std(dim=0, unbiased=False).clamp_min(1e-6)
            else:
                bank = lake.banks[h]
                mean, std = lake.stats[h]
            q = acts[h][..., idx].float()
            if cfg.standardize:
                q = (q - mean) / std
                if support_acts is not None:
                    bank = (bank - mean) / std
            dists.append(_nearest(q, bank, cfg.distance))
        visual = patch_grid(torch.stack(dists).mean(dim=0)[..., None])[..., 0]
    if lake.uses_semantic:
        probs = [anomaly_probability(lake.model.project_visual_tokens(acts[h]), lake.text_features, cfg.temperature)
                 for h in lake.semantic_hooks]
        semantic = patch_grid(torch.stack(probs).mean(dim=0)[..., None])[..., 0]
    maps = fuse(gaussian_blur(upsample(visual, size), cfg.sigma), gaussian_blur(upsample(semantic, size), cfg.sigma),
                cfg.text_weight)
    return maps, image_scores(maps, cfg.image_score, cfg.top_fraction)


def _required_hooks(lake) -> list[str]:
    return list(lake.required_hooks)


# ------------------------------------------------------------------------------------ regions
def region_masks(region, n: int, size: int) -> torch.Tensor:
    """[n, size, size] float masks from masks (one [H, W] for all images, or one per image, None
    entries meaning no region) or a box (x0, y0, x1, y1) in fractions of the image width / height."""
    if region is None:
        raise ValueError("target='region' needs region= (masks or a box (x0, y0, x1, y1) in fractions)")
    if isinstance(region, tuple) and len(region) == 4 and all(np.isscalar(v) for v in region):
        x0, y0, x1, y1 = (float(v) for v in region)
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"box {region} must be (x0, y0, x1, y1) fractions with x0 < x1, y0 < y1 in [0, 1]")
        m = torch.zeros(size, size)
        m[math.floor(y0 * size) : math.ceil(y1 * size), math.floor(x0 * size) : math.ceil(x1 * size)] = 1.0
        return m.expand(n, size, size).clone()
    arr = region
    if isinstance(arr, (np.ndarray, torch.Tensor)) and np.asarray(arr).ndim == 2:
        arr = [arr] * n
    masks = [resize_mask(m, size) for m in arr]
    if len(masks) != n:
        raise ValueError(f"{len(masks)} region masks for {n} images")
    out = torch.from_numpy(np.stack(masks)).float()
    if (out.flatten(1).sum(dim=1) == 0).any():
        raise ValueError("an image's region is empty: every image needs a non-empty region")
    return out


# ------------------------------------------------------------------------------------ reference values
class _References:
    """Per hook the value every token takes when a unit is replaced (mode zero / mean / resample)."""

    def __init__(self, model, grouped, mode: str, reference, seed: int):
        from lake_interp.interp.ablation import reference_values

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if mode != "zero" and reference is None:
            raise ValueError(f"mode={mode!r} needs reference images (e.g. the support set) or their activations")
        self.mode, self.grouped, self.seed = mode, grouped, seed
        self.refs = reference_values(model, reference, grouped) if mode != "zero" else {}
        self.means = {h: r.float().mean(dim=0) for h, r in self.refs.items()} if mode == "mean" else {}
        self.generator = torch.Generator().manual_seed(seed)

    def restarted(self, grouped) -> "_References":
        """The same reference values (no forward pass) for a subset `grouped` of the units, with the
        random draws restarted from the seed (as a new `_References` would draw them)."""
        new = object.__new__(_References)
        new.mode, new.grouped, new.seed = self.mode, grouped, self.seed
        new.refs = {h: self.refs[h][..., _positions(self.grouped[h], grouped[h])] for h in grouped if h in self.refs}
        new.means = {h: self.means[h][..., _positions(self.grouped[h], grouped[h])] for h in grouped if h in self.means}
        new.generator = torch.Generator().manual_seed(self.seed)
        return new

    def moved(self, hook: str, act: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """act - reference on the hook's units (`columns`: act's unit columns)."""
        return columns if self.mode == "zero" else columns - self.values(hook, act).to(columns)

    def values(self, hook: str, act: torch.Tensor) -> torch.Tensor:
        """[..., n units of hook]: the reference value at every token of `act` [B, T, d]."""
        idx = self.grouped[hook]
        if self.mode == "zero":
            return torch.zeros(*act.shape[:-1], len(idx), dtype=act.dtype, device=act.device)
        if self.mode == "mean":
            return self.means[hook].to(act).expand(*act.shape[:-1], -1)
        pool = self.refs[hook]
        pick = torch.randint(len(pool), act.shape[:-1], generator=self.generator)
        return pool[pick].to(act)


def _positions(idx: torch.Tensor, subset: torch.Tensor) -> list[int]:
    """Where each channel of `subset` sits in `idx`."""
    where = {int(c): k for k, c in enumerate(idx.tolist())}
    return [where[int(c)] for c in subset.tolist()]


def _columns(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[..., idx], without a copy when idx is every channel in order."""
    if len(idx) == x.shape[-1] and bool((idx == torch.arange(len(idx))).all()):
        return x
    return x[..., idx.to(x.device)]


# ------------------------------------------------------------------------------------ result
@dataclass
class Attribution:
    """Plain data: per unit (hook, channel) the attribution per image and its mean over images.

    values [N images, U] (the scored images' part), mean [U] (mean over images; with bank "refit"
    plus support_part), ranks (1 = largest attribution) per image and of the mean, the clean
    target per image, per-unit patch maps (the attribution's spatial parts: grad x (act - ref) at
    every patch, [N, g, g]; they sum, with the class token's part, to the attribution) and, for
    target "map", per-pixel maps [N, S, S] (first-order change of the fused map)."""

    units: list[tuple[str, int]]
    values: np.ndarray  # [N, U]
    mean: np.ndarray  # [U]
    target_values: np.ndarray  # [N]
    support_part: Optional[np.ndarray] = None  # [U] with bank "refit"
    patch_maps: dict = field(default_factory=dict)  # (hook, channel) -> [N, g, g]
    class_token_part: dict = field(default_factory=dict)  # (hook, channel) -> [N]
    pixel_maps: dict = field(default_factory=dict)  # (hook, channel) -> [N, S, S]
    meta: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return self.values.shape[0]

    @property
    def ranks(self) -> np.ndarray:
        """[N, U]: rank of every unit per image (1 = largest attribution)."""
        return _ranks(self.values)

    @property
    def mean_ranks(self) -> np.ndarray:
        return _ranks(self.mean[None])[0]

    def order(self, image: Optional[int] = None, by: str = "value") -> np.ndarray:
        """Unit indices best first: by signed attribution ("value") or its magnitude ("abs")."""
        v = self.mean if image is None else self.values[image]
        key = np.abs(v) if by == "abs" else v
        return np.argsort(-key, kind="stable")

    def rank_of(self, unit: tuple[str, int], image: Optional[int] = None) -> int:
        j = self.units.index((unit[0], int(unit[1])))
        return int((self.mean_ranks if image is None else self.ranks[image])[j])

    def _row(self, j: int, value: float, rank: int, image) -> dict:
        hook, ch = self.units[j]
        h = parse_hook_name(hook)
        return {"image": image, "hook": hook, "channel": ch, "block": h.block, "site": h.site,
                "label": f"{hook_label(hook)}[{ch}]", "attribution": float(value), "rank": int(rank),
                "read_directly": (hook, ch) in self._direct}

    @property
    def _direct(self) -> set:
        return {tuple(p) for p in self.meta.get("read_directly", [])}

    def top(self, n: int = 20, image: Optional[int] = None, by: str = "value") -> list[dict]:
        """The n best units (aggregated over images, or of one image) as rows."""
        v = self.mean if image is None else self.values[image]
        r = self.mean_ranks if image is None else self.ranks[image]
        return [self._row(j, v[j], r[j], "mean" if image is None else image) for j in self.order(image, by)[:n]]

    def rows(self) -> list[dict]:
        """Every (image, unit) row and the aggregated ("mean") rows."""
        out = []
        ranks = self.ranks
        for i in range(self.n_images):
            out += [self._row(j, self.values[i, j], ranks[i, j], i) for j in range(len(self.units))]
        mr = self.mean_ranks
        out += [self._row(j, self.mean[j], mr[j], "mean") for j in range(len(self.units))]
        return out

    def to_dict(self) -> dict:
        def maps(d):
            return [{"hook": h, "channel": c, "map": np.asarray(m).tolist()} for (h, c), m in d.items()]

        return {"units": [list(u) for u in self.units], "values": self.values.tolist(), "mean": self.mean.tolist(),
                "target_values": self.target_values.tolist(),
                "support_part": None if self.support_part is None else self.support_part.tolist(),
                "patch_maps": maps(self.patch_maps), "pixel_maps": maps(self.pixel_maps),
                "class_token_part": [{"hook": h, "channel": c, "values": np.asarray(v).tolist()}
                                     for (h, c), v in self.class_token_part.items()],
                "meta": self.meta}

    def save(self, path) -> None:
        """JSON (plain data)."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict) -> "Attribution":
        def maps(rows, key="map"):
            return {(r["hook"], int(r["channel"])): np.asarray(r[key]) for r in rows}

        return cls(units=[(h, int(c)) for h, c in d["units"]], values=np.asarray(d["values"], float),
                   mean=np.asarray(d["mean"], float), target_values=np.asarray(d["target_values"], float),
                   support_part=None if d.get("support_part") is None else np.asarray(d["support_part"], float),
                   patch_maps=maps(d.get("patch_maps", [])), pixel_maps=maps(d.get("pixel_maps", [])),
                   class_token_part=maps(d.get("class_token_part", []), "values"), meta=d.get("meta", {}))

    @classmethod
    def load(cls, path) -> "Attribution":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(-values, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(values.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, values.shape[1] + 1)[None]
    return ranks


# ------------------------------------------------------------------------------------ the pass
def _leaf_hooks(grouped, read_hooks, store):
    """Hooks that make each unit hook's activation differentiable (act + a zero leaf: the leaf's
    gradient is the activation's) and keep the activations the readout reads."""

    def fn(act, hook):
        name = hook.name
        if name in grouped:
            z = torch.zeros_like(act, requires_grad=True)
            act = act + z
            store["leaves"][name] = z
            store["acts"][name] = act.detach()
        if name in read_hooks:
            store["read"][name] = act
        return act

    return [(h, fn) for h in dict.fromkeys([*grouped, *read_hooks])]


def _run(model, batch, grouped, read_hooks):
    """One forward pass recording the graph from the unit hooks on (the weights are taken out of
    it for the pass: only activation gradients are computed)."""
    store = {"leaves": {}, "acts": {}, "read": {}}
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad(), model.hooks(fwd_hooks=_leaf_hooks(grouped, read_hooks, store)):
            model.encode_image(batch)
    finally:
        for p in params:
            p.requires_grad_(True)
    return store


def _target(t: str, maps: torch.Tensor, scores: torch.Tensor, masks: Optional[torch.Tensor]) -> torch.Tensor:
    if t == "region" or (t == "map" and masks is not None):
        return (maps * masks).flatten(1).sum(dim=1) / masks.flatten(1).sum(dim=1)
    return scores


def attribute(detector, images: Any, target: str = "score", units: Union[Neurons, str, Sequence[str], None] = None,
              *, region=None, mode: str = "zero", reference: Any = None, readout="downstream",
              support: Any = None, bank: str = "fixed", map_units: Optional[Neurons] = None, n_maps: int = 5,
              batch_size: Optional[int] = None, seed: int = 0) -> Attribution:
    """First-order effect on `target` of replacing each unit by its reference (see the module docstring).

    detector: a fitted Lake (or, with readout "downstream" / "all_channels", any detector whose
    model, class name and distance settings build the readout). images: anything `to_batch` reads.
    target: "score" | "region" (mean of the fused map over `region`) | "map" (plus per-pixel maps
    of `map_units`, default the top `n_maps` units). units: None (every residual channel and MLP
    neuron of every vision block), a site name or names, a NeuronSet or (hook, channel) pairs.
    mode / reference / seed: as `ablate` (reference: images or activations hook -> [N, P, d]; for
    "mean" and "resample"; None with support given: the support). readout / support / bank: see the
    module docstring (support fits the "downstream" and "all_channels" readouts and the refit bank).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    if bank not in BANKS:
        raise ValueError(f"unknown bank {bank!r}; expected one of {BANKS}")
    model = detector.model
    if support is not None and not isinstance(support, torch.Tensor):
        support = list(support)
    if not isinstance(images, torch.Tensor):
        images = list(images) if not hasattr(images, "convert") else [images]
    unordered = _grouped_units(model, units)
    grouped = {h: unordered[h] for h in _forward_order(model, unordered)}
    if mode != "zero" and reference is None:
        reference = support
    refs = _References(model, grouped, mode, reference, seed)
    reader = _make_reader(detector, grouped, support, readout)
    lake = reader.lake
    if bank == "refit" and support is None:
        raise ValueError("bank='refit' rebuilds the bank from the support images: pass support=")
    unit_list = [(h, i) for h, idx in grouped.items() for i in idx.tolist()]
    offsets = np.cumsum([0] + [len(idx) for idx in grouped.values()])
    read_hooks = _required_hooks(lake)
    n_total = len(images)
    bs = batch_size or lake.config.batch_size
    masks_all = (region_masks(region, n_total, model.image_size)
                 if target == "region" or (target == "map" and region is not None) else None)
    g = model.grid_size
    values, targets, support_part = [], [], np.zeros(len(unit_list)) if bank == "refit" else None
    keep_maps = map_units is not None or n_maps > 0
    explicit_maps = [(h, int(i)) for h, idx in check_neurons(model, map_units).items() for i in idx.tolist()] \
        if map_units is not None else None
    token_parts = []  # per batch, [B, T, U] contributions (only while one batch holds every image)
    single_batch = n_total <= bs
    forwards = backwards = 0
    start = 0
    device = model.device
    support_store = None
    if bank == "refit":  # one support forward; its graph is kept (retain_graph) for every test batch
        support_store = _run(model, to_batch(support, model).to(device), grouped,
                             [h for h in lake.hooks] if lake.uses_visual else [])
        forwards += 1
    for chunk in iter_batches(images, bs):
        batch = to_batch(chunk, model).to(device)
        b = batch.shape[0]
        store = _run(model, batch, grouped, read_hooks)
        forwards += 1
        acts = {h: model.patch_tokens(a) for h, a in store["read"].items()}
        s_acts = {h: model.patch_tokens(a) for h, a in support_store["read"].items()} if support_store else None
        with torch.enable_grad():
            maps, scores = lake_maps(lake, acts, s_acts)
            masks = masks_all[start : start + b].to(device) if masks_all is not None else None
            t = _target(target, maps, scores, masks)
            leaves = [store["leaves"][h] for h in grouped]
            s_leaves = [support_store["leaves"][h] for h in grouped] if support_store else []
            grads = torch.autograd.grad((t.sum() / n_total), leaves + s_leaves, allow_unused=True,
                                        retain_graph=support_store is not None)
        backwards += 1
        per_unit = []
        batch_tokens = []
        for k, h in enumerate(grouped):
            grad = grads[k]
            a = _columns(store["acts"][h], grouped[h])
            contrib = (_columns(grad, grouped[h]) * n_total) * refs.moved(h, store["acts"][h], a) \
                if grad is not None else torch.zeros_like(a)
            per_unit.append(contrib.sum(dim=1))
            if keep_maps:
                batch_tokens.append(contrib.detach().float().cpu())
        if bank == "refit":
            for k, h in enumerate(grouped):
                grad = grads[len(leaves) + k]
                if grad is None:
                    continue
                a = _columns(support_store["acts"][h], grouped[h])
                part = (_columns(grad, grouped[h]) * refs.moved(h, support_store["acts"][h], a)).sum(dim=(0, 1))
                support_part[offsets[k] : offsets[k + 1]] += part.detach().double().cpu().numpy()
        values.append(torch.cat(per_unit, dim=-1).detach().double().cpu().numpy())
        targets.append(t.detach().double().cpu().numpy())
        if keep_maps:
            if single_batch or explicit_maps is not None:
                token_parts.append(torch.cat(batch_tokens, dim=-1) if single_batch else
                                   torch.cat(batch_tokens, dim=-1)[..., [unit_list.index(u) for u in explicit_maps]])
        start += b
    values = np.concatenate(values)
    mean = values.mean(axis=0) + (support_part if support_part is not None else 0.0)
    result = Attribution(units=unit_list, values=values, mean=mean, target_values=np.concatenate(targets),
                         support_part=support_part)
    chosen = explicit_maps if explicit_maps is not None else [unit_list[j] for j in result.order(by="abs")[:n_maps]]
    if keep_maps and chosen:
        if not token_parts:  # several batches and no explicit units: a second pass for the chosen ones
            sub = attribute(detector, images, "region" if masks_all is not None else "score", chosen, region=region,
                            mode=mode, reference=reference, readout=reader.lake, support=support, bank=bank,
                            map_units=chosen, batch_size=bs, seed=seed)
            forwards, backwards = forwards + sub.meta["cost"]["forward_passes"], backwards + sub.meta["cost"]["backward_passes"]
            result.patch_maps, result.class_token_part = sub.patch_maps, sub.class_token_part
        else:
            tokens = torch.cat(token_parts)  # [N, T, U or len(chosen)]
            cols = [unit_list.index(u) for u in chosen] if single_batch else list(range(len(chosen)))
            for u, col in zip(chosen, cols):
                result.patch_maps[u] = model.patch_tokens(tokens)[..., col].reshape(-1, g, g).numpy()
                result.class_token_part[u] = tokens[:, : model.n_prefix, col].sum(dim=1).numpy()  # prefix tokens
    if target == "map":
        map_list = chosen
        result.pixel_maps = pixel_maps(lake, images, map_list, refs=refs.restarted(check_neurons(model, map_list)),
                                       batch_size=bs)
        forwards += len(map_list) * math.ceil(n_total / bs)
    result.meta = {
        "target": target, "target_description": _describe_target(target, region, lake),
        "mode": mode, "reference": _reference_label(mode, reference), "seed": seed,
        "readout": reader.name, "readout_method": reader.description, "readout_hooks": read_hooks,
        "read_directly": sorted([list(p) for p in reader.read_directly & set(unit_list)]),
        "bank": bank, "not_differentiable": list(NOT_DIFFERENTIABLE),
        "sign": "attribution ~ target(clean) - target(unit replaced by its reference); positive: the unit raises it",
        "cost": {"forward_passes": forwards, "backward_passes": backwards, "batches": math.ceil(n_total / bs)},
        "n_units": len(unit_list), "n_images": n_total,
    }
    return result


def _describe_target(target, region, lake) -> str:
    what = "fused map" if lake.uses_visual and lake.uses_semantic else ("visual map" if lake.uses_visual else "semantic map")
    if target == "score" or (target == "map" and region is None):
        return f"image score ({lake.config.image_score} of the {what})"
    if isinstance(region, tuple) and len(region) == 4:
        return f"mean of the {what} over the box {tuple(region)} (fractions x0, y0, x1, y1)"
    return f"mean of the {what} over the given region masks"


def _reference_label(mode, reference) -> str:
    if mode == "zero":
        return "none (zero)"
    try:
        n = len(reference)
    except TypeError:
        n = "?"
    return f"{n} reference images: {'mean over their patches' if mode == 'mean' else 'random patches of them'}"


# ------------------------------------------------------------------------------------ per-pixel maps
def pixel_maps(lake, images, units: Sequence[tuple[str, int]], refs_spec=("zero", None, 0),
               batch_size: int = 16, refs: Optional[_References] = None) -> dict:
    """Per unit [N, S, S]: the first-order change of the fused map (clean minus replaced), a
    forward-mode Jacobian-vector product along (activation - reference) at every position of the
    unit (one forward pass per unit and batch; the bank is held fixed)."""
    import torch.autograd.forward_ad as fwAD

    model = lake.model
    grouped = check_neurons(model, units)
    if refs is None:  # `attribute` passes the reference values it already computed
        mode, reference, seed = refs_spec
        refs = _References(model, grouped, mode, reference, seed)
    read_hooks = _required_hooks(lake)
    explicit = [(name, lambda act, hook: None) for name in pattern_hook_names(model)]
    out = {}
    batches = [to_batch(chunk, model).to(model.device) for chunk in iter_batches(images, batch_size)]  # once
    for hook, ch in units:
        parts = []
        col = grouped[hook].tolist().index(int(ch))
        for batch in batches:
            read = {}

            def inject(act, hook, c=int(ch), h=hook):
                tangent = torch.zeros_like(act)
                ref = refs.values(h, act)[..., col]  # noqa: B023
                tangent[..., c] = act[..., c] - ref
                return fwAD.make_dual(act, tangent)

            def keep(act, hook):
                read[hook.name] = act  # noqa: B023

            with torch.no_grad(), fwAD.dual_level():
                with model.hooks(fwd_hooks=[(hook, inject), *[(h, keep) for h in read_hooks], *explicit]):
                    model.encode_image(batch)
                maps, _ = lake_maps(lake, {h: model.patch_tokens(a) for h, a in read.items()})
                tangent = fwAD.unpack_dual(maps).tangent
            parts.append(torch.zeros_like(maps) if tangent is None else tangent.float().cpu())
        out[(hook, int(ch))] = torch.cat(parts).numpy()
    return out


# ------------------------------------------------------------------------------------ measured ablation
def measured_effects(detector, images, units: Sequence[tuple[str, int]], target: str = "score", *, region=None,
                     mode: str = "zero", reference: Any = None, readout="downstream", support: Any = None,
                     bank: str = "fixed", seed: int = 0, progress: bool = False) -> np.ndarray:
    """The measured counterpart of `attribute`: per unit, mean over images of target(clean) -
    target(unit ablated with `ablate`), scored by the same readout with `Lake.score` (bank "fixed":
    the readout as fitted; "refit": refitted on the support under the ablation, as ablation_effect)."""
    from tqdm.auto import tqdm

    from lake_interp.evaluation import refit
    from lake_interp.interp.ablation import ablate

    model = detector.model
    support = list(support) if support is not None and not isinstance(support, torch.Tensor) else support
    if not isinstance(images, torch.Tensor):
        images = list(images)
    if mode != "zero" and reference is None:
        reference = support
    reader = _make_reader(detector, check_neurons(model, units), support, readout).lake
    masks = region_masks(region, len(images), model.image_size).numpy() if target == "region" else None

    def value(lake) -> np.ndarray:
        r = lake.score(images)
        if masks is None:
            return r.image_scores.double().numpy()
        m = r.maps.double().numpy()
        return (m * masks).reshape(len(m), -1).sum(1) / masks.reshape(len(m), -1).sum(1)

    clean = value(reader)
    out = []
    for u in tqdm(units, desc="measured_effects", unit="unit", disable=not progress):
        with ablate(model, [u], mode, reference, seed):
            out.append(float((clean - value(refit(reader, support) if bank == "refit" else reader)).mean()))
    return np.array(out)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a, float), np.asarray(b, float)).statistic)


def compare_with_ablation(detector, images, result: Attribution, n: int = 50, *, support=None, region=None,
                          progress: bool = False) -> dict:
    """The top-n units of `result` (by |mean attribution|) ablated one at a time, measured with the
    result's own readout, target, mode and bank; returns rows and the Spearman correlation."""
    meta = result.meta
    order = result.order(by="abs")[:n]
    units = [result.units[j] for j in order]
    readout = meta["readout"] if meta["readout"] != "detector" else "detector"
    target = "region" if meta["target"] == "region" else "score"
    measured = measured_effects(detector, images, units, target, region=region, mode=meta["mode"],
                                readout=readout, support=support, bank=meta["bank"], seed=meta["seed"],
                                progress=progress)
    attributed = result.mean[order]
    rows = [{"hook": h, "channel": c, "label": f"{hook_label(h)}[{c}]", "attribution": float(a), "measured": float(m)}
            for (h, c), a, m in zip(units, attributed, measured)]
    return {"rows": rows, "spearman": spearman(attributed, measured), "n": len(units), "readout": meta["readout"],
            "target": meta["target_description"], "mode": meta["mode"], "bank": meta["bank"]}


# ------------------------------------------------------------------------------------ figures
def attribution_figure(result: Attribution, n: int = 20, image: Optional[int] = None, by: str = "value"):
    """Bar chart of the top-n units (aggregated, or of one image), coloured by block, hatched where
    the readout reads the unit directly."""
    import plotly.graph_objects as go

    rows = result.top(n, image, by)
    blocks = sorted({r["block"] for r in rows})
    from lake_interp.figure_spec import PALETTE as palette
    fig = go.Figure()
    for b in blocks:
        sel = [r for r in rows if r["block"] == b]
        fig.add_trace(go.Bar(x=[r["label"] + (" *" if r["read_directly"] else "") for r in sel],
                             y=[r["attribution"] for r in sel], name=f"block {b}",
                             marker_color=palette[b % len(palette)]))
    fig.update_xaxes(categoryorder="array", categoryarray=[r["label"] + (" *" if r["read_directly"] else "") for r in rows])
    which = "mean over images" if image is None else f"image {image}"
    fig.update_layout(title=f"Top {len(rows)} units: attribution to the {result.meta.get('target_description', '')} "
                            f"({which}; readout {result.meta.get('readout')}; * read directly)",
                      yaxis_title="attribution (target clean - replaced, first order)", height=450,
                      width=max(600, 32 * len(rows) + 200))
    return fig


def attribution_map_figure(result: Attribution, unit: tuple[str, int], image: int = 0, images=None, model=None,
                           kind: Optional[str] = None):
    """A unit's attribution over the image: its per-pixel map (target "map") or its patch map, beside
    the input image when `images` and `model` are given. Diverging colours centred on 0."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    unit = (unit[0], int(unit[1]))
    kind = kind or ("pixel" if unit in result.pixel_maps else "patch")
    store = result.pixel_maps if kind == "pixel" else result.patch_maps
    if unit not in store:
        raise KeyError(f"no {kind} map for {unit}: pass it as map_units to attribute")
    m = np.asarray(store[unit][image], float)
    lim = float(np.abs(m).max()) or 1.0
    panels = 1 + (images is not None and model is not None)
    fig = make_subplots(rows=1, cols=panels, subplot_titles=(["input"] if panels == 2 else []) +
                        [f"{hook_label(unit[0])}[{unit[1]}] {kind} attribution"])
    if panels == 2:
        from lake_interp.interp.stream import to_pixels

        pic = to_pixels(to_batch([images[image]] if not isinstance(images, torch.Tensor) else images[image : image + 1],
                                 model), model)[0].numpy()
        fig.add_trace(go.Image(z=pic), row=1, col=1)
    fig.add_trace(go.Heatmap(z=m, colorscale="RdBu", reversescale=True, zmin=-lim, zmax=lim, zmid=0,
                             colorbar={"title": "attr."}), row=1, col=panels)
    fig.update_yaxes(autorange="reversed", scaleanchor="x" if panels == 1 else "x2", row=1, col=panels)
    fig.update_layout(title=f"Attribution of {hook_label(unit[0])}[{unit[1]}] over image {image} "
                            f"({result.meta.get('target_description', '')})", height=380, width=360 * panels + 80)
    return fig


def comparison_figure(comparison: dict):
    """Attribution vs measured ablation effect of the compared units, with the Spearman correlation."""
    import plotly.graph_objects as go

    from lake_interp.figure_spec import DEFAULT_COLOR

    rows = comparison["rows"]
    fig = go.Figure(go.Scatter(x=[r["attribution"] for r in rows], y=[r["measured"] for r in rows], mode="markers",
                               text=[r["label"] for r in rows], marker={"color": DEFAULT_COLOR}, name="unit",
                               showlegend=False))
    fig.update_layout(title=f"Attribution vs measured ablation, top {comparison['n']} units: Spearman "
                            f"{comparison['spearman']:.3f} (readout {comparison['readout']}, {comparison['mode']})",
                      xaxis_title="attribution (first order)", yaxis_title="measured: target clean - ablated",
                      height=450, width=600)
    return fig

