"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) on CLIP tokens.

The method as anomalib 2.x (`anomalib.models.image.patchcore`, checked: 2.7.0) computes it, with the
backbone adapted to CLIP:

1. Features: the patch tokens of two intermediate blocks of the CLIP vision tower (default: relative
   depth 0.5 and 0.75, i.e. blocks 5 and 8 of ViT-B-16, the place of WideResNet-50's layer2 and
   layer3 among its four stages; the paper and anomalib use layer2/layer3 of a WideResNet-50), at
   `hook_resid_post`, class token dropped, as a [g, g] patch grid. By default each token first goes
   through the tower's final LayerNorm (`ln_post`, without the projection), as anomalib's
   `TimmFeatureExtractor` does for transformer backbones (`norm=True`): an adaptation, CNN features
   have no such step.
2. Locally aware features: the mean over each patch's 3 x 3 neighbourhood on the grid
   (`AvgPool2d(3, stride 1, padding 1)`, zero padding counted, exactly anomalib's `feature_pooler`).
3. The layers are resized to the first layer's grid (bilinear; the blocks of a ViT share one grid,
   so this is the identity here) and concatenated along the channel axis (anomalib's
   `generate_embedding`). anomalib stops there; the authors' code (patchcore-inspection) also
   averages the concatenation down to a fixed dimension with `adaptive_avg_pool1d`: set
   `embed_dim` for that (default None: anomalib's, no reduction).
4. Memory bank: every support patch, reduced by greedy k-center coreset selection on a sparse random
   projection (Johnson-Lindenstrauss dimension at eps 0.9), anomalib's `KCenterGreedy`, when
   `coreset_ratio` < 1 (default 1.0, see PatchCoreConfig).
5. Patch score: Euclidean distance to the nearest memory-bank patch (anomalib's `euclidean_dist`,
   `nearest_neighbors`). Image score: the largest patch score, re-weighted by how isolated its nearest
   neighbour m* is in the bank (the paper's eq. 7, anomalib's `compute_anomaly_score` with
   `num_neighbors`, default 9): s = (1 - softmax(d)_0) * s*, d the distances from the test patch
   to m* and to m*'s nearest bank neighbours.
6. Map: the patch scores upsampled to the model input size (nearest, as anomalib's
   `AnomalyMapGenerator`; the authors' code: bilinear, `upsample="bilinear"`) and smoothed with a
   Gaussian of sigma 4 (kernel 33, reflect padding).

tests/test_patchcore.py checks steps 2-6 against anomalib's own code on the same tensors (the
recorded fixture in tests/reference/, and anomalib itself where it is importable).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from lake_interp.detectors.protocol import DetectionResult
from lake_interp.lake.fusion import gaussian_blur, upsample
from lake_interp.lake.inputs import image_sources, is_single_image, iter_batches, to_batch
from lake_interp.lake.sites import BLOCK_SITES, resolve_layer
from lake_interp.model.hook_sites import block_hook_names

FORMAT = "lake_interp.patchcore/1"
UPSAMPLE_MODES = ("nearest", "bilinear")


# --------------------------------------------------------------------------- config
@dataclass
class PatchCoreConfig:
    """Every choice of PatchCore on CLIP; the defaults are anomalib's unless said otherwise.

    layers: the vision blocks whose tokens are concatenated, in order (the first sets the grid):
        floats in (0, 1] are relative depth (block round(f * n_layers) - 1, as LakeConfig.layers),
        ints are block indices (negative from the end). Default (0.5, 0.75): blocks 5 and 8 of a
        12-block ViT, in place of WideResNet-50's layer2 and layer3 (anomalib's default layers).
    site: the hook point of each block read (one of lake_interp.lake.sites.BLOCK_SITES).
    final_norm: pass every token through the tower's final LayerNorm (ln_post: weight and bias, no
        projection) first, as anomalib's TimmFeatureExtractor does for transformer backbones
        (norm=True). Only for residual-stream sites (d_model wide).
    neighborhood: side p of the locally aware average (paper: p = 3; anomalib: AvgPool2d(3, 1, 1),
        zero padding counted at the border). Odd; 1 switches the aggregation off.
    embed_dim: None (anomalib): the concatenated features as they are (n_layers * d wide). An int:
        averaged down to that many channels with adaptive_avg_pool1d, as the authors' code does
        (its target_embed_dimension, 1024 for WideResNet-50).
    coreset_ratio: fraction of the support patches kept by the greedy k-center coreset, in (0, 1].
        anomalib's default is 0.1, made for full training sets (tens of thousands of patches, where
        the bank's size costs time and memory). Here the default is 1.0, no coreset: with k = 1, 2,
        4 support images a bank has 196 to 784 patches on ViT-B-16 (64 to 256 on lake-tiny); a search
        over it costs nothing, and keeping a tenth would leave 20 to 80 patches, throwing away the
        normal variation the few shots hold (the coreset approximates the full bank; it is never
        better than it in expectation).
    projection_eps: eps of the Johnson-Lindenstrauss dimension of the sparse random projection the
        coreset distances are computed in (anomalib: 0.9).
    num_neighbors: size of the neighbourhood of m* in the image-score re-weighting (anomalib: 9;
        1 = the plain maximum patch score).
    sigma: Gaussian smoothing of the upsampled map in pixels (anomalib: 4; 0 = none).
    upsample: "nearest" (anomalib's AnomalyMapGenerator) or "bilinear" (the authors' code).
    seed: seed of the coreset's random projection and random first centre.
    batch_size: images per forward pass.
    """

    layers: tuple = (0.5, 0.75)
    site: str = "hook_resid_post"
    final_norm: bool = True
    neighborhood: int = 3
    embed_dim: Optional[int] = None
    coreset_ratio: float = 1.0
    projection_eps: float = 0.9
    num_neighbors: int = 9
    sigma: float = 4.0
    upsample: str = "nearest"
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self):
        if isinstance(self.layers, (int, float)):
            raise ValueError(f"PatchCoreConfig.layers={self.layers!r}: expected a sequence of layers, e.g. (0.5, 0.75)")
        self.layers = tuple(self.layers)
        if not self.layers:
            raise ValueError("PatchCoreConfig.layers is empty: name at least one block, e.g. (0.5, 0.75)")
        for layer in self.layers:
            if isinstance(layer, bool) or not isinstance(layer, (int, float)):
                raise ValueError(f"PatchCoreConfig.layers: {layer!r} is neither a relative depth (float) nor a block index (int)")
            if isinstance(layer, float) and not 0.0 < layer <= 1.0:
                raise ValueError(f"PatchCoreConfig.layers: relative depth {layer} must be in (0, 1]")
        if self.site not in BLOCK_SITES:
            raise ValueError(f"PatchCoreConfig.site={self.site!r}: expected one of {BLOCK_SITES}")
        if not isinstance(self.final_norm, bool):
            raise ValueError(f"PatchCoreConfig.final_norm={self.final_norm!r}: expected True or False")
        if self.final_norm and self.site.startswith("mlp."):
            raise ValueError(f"PatchCoreConfig.final_norm=True needs a d_model-wide site; {self.site!r} is d_mlp wide: "
                             f"set final_norm=False")
        _check_int("neighborhood", self.neighborhood, 1)
        if self.neighborhood % 2 == 0:
            raise ValueError(f"PatchCoreConfig.neighborhood={self.neighborhood} must be odd (3 in the paper)")
        if self.embed_dim is not None:
            _check_int("embed_dim", self.embed_dim, 1)
        if isinstance(self.coreset_ratio, bool) or not isinstance(self.coreset_ratio, (int, float)) \
                or not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"PatchCoreConfig.coreset_ratio={self.coreset_ratio!r} must be in (0, 1] (1.0: no coreset)")
        if isinstance(self.projection_eps, bool) or not isinstance(self.projection_eps, (int, float)) \
                or not 0.0 < self.projection_eps < 1.5:
            raise ValueError(f"PatchCoreConfig.projection_eps={self.projection_eps!r} must be in (0, 1.5) (anomalib: 0.9)")
        _check_int("num_neighbors", self.num_neighbors, 1)
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or self.sigma < 0:
            raise ValueError(f"PatchCoreConfig.sigma={self.sigma!r} must be a number >= 0")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"PatchCoreConfig.upsample={self.upsample!r}: expected one of {UPSAMPLE_MODES}")
        _check_int("seed", self.seed, 0)
        _check_int("batch_size", self.batch_size, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PatchCoreConfig":
        """From a dict (e.g. JSON); unknown keys are refused with their names."""
        if not isinstance(d, dict):
            raise ValueError(f"a PatchCoreConfig is read from a JSON object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PatchCoreConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"PatchCoreConfig.{name}={value!r} must be an integer >= {minimum}")


# --------------------------------------------------------------------------- pure torch pieces
def locally_aware(grid: torch.Tensor, neighborhood: int = 3) -> torch.Tensor:
    """[B, H, W, C] -> [B, H, W, C]: each patch the mean of its p x p neighbourhood (zero padding,
    counted in the mean at the border), as anomalib's AvgPool2d(3, 1, 1) feature_pooler."""
    if neighborhood == 1:
        return grid
    x = grid.permute(0, 3, 1, 2).contiguous()
    x = F.avg_pool2d(x, neighborhood, stride=1, padding=neighborhood // 2)
    return x.permute(0, 2, 3, 1)


def combine_layers(grids: Sequence[torch.Tensor], embed_dim: Optional[int] = None) -> torch.Tensor:
    """Layers [B, H_i, W_i, C_i] -> [B, H_0, W_0, sum C_i]: each resized (bilinear) to the first's grid
    and concatenated along the channels, as anomalib's generate_embedding; with `embed_dim`, then
    averaged down to embed_dim channels (adaptive_avg_pool1d, as the authors' Aggregator)."""
    first = grids[0].permute(0, 3, 1, 2)
    parts = [first]
    for g in grids[1:]:
        parts.append(F.interpolate(g.permute(0, 3, 1, 2), size=first.shape[-2:], mode="bilinear"))
    x = torch.cat(parts, dim=1).permute(0, 2, 3, 1)  # [B, H, W, D]
    if embed_dim is not None:
        b, h, w, d = x.shape
        x = F.adaptive_avg_pool1d(x.reshape(b * h * w, 1, d), embed_dim).reshape(b, h, w, embed_dim)
    return x


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, D], [M, D] -> [N, M] Euclidean distances, as anomalib computes them (|x|^2 - 2 x.y + |y|^2,
    clamped at 0, square root)."""
    x_norm = x.pow(2).sum(dim=-1, keepdim=True)
    y_norm = y.pow(2).sum(dim=-1, keepdim=True)
    res = x_norm - 2 * torch.matmul(x, y.transpose(-2, -1)) + y_norm.transpose(-2, -1)
    return res.clamp_min_(0).sqrt_()


def nearest_neighbor_scores(embedding: torch.Tensor, memory_bank: torch.Tensor,
                            n_neighbors: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to, and bank indices of, the nearest memory-bank rows: [N] each for n_neighbors=1,
    else [N, n_neighbors] (ascending), as anomalib's nearest_neighbors."""
    distances = euclidean_dist(embedding, memory_bank)
    if n_neighbors == 1:
        return distances.min(1)
    scores, locations = distances.topk(k=n_neighbors, largest=False, dim=1)
    return scores, locations


def image_score_reweighted(patch_scores: torch.Tensor, locations: torch.Tensor, embedding: torch.Tensor,
                           memory_bank: torch.Tensor, num_neighbors: int = 9) -> torch.Tensor:
    """The paper's image score (eq. 7), as anomalib's compute_anomaly_score.

    patch_scores, locations: [B, P] nearest-neighbour distance and bank index of every patch;
    embedding: the patches' features [B * P, D] (or [B, P, D]). With m_test* the patch of largest
    score s* and m* its nearest bank patch: s = (1 - softmax(d)_0) * s*, d the distances from m_test*
    to m* and to m*'s nearest bank neighbours (num_neighbors of them, m* itself first, fewer if the
    bank is smaller). num_neighbors=1: s*.
    """
    if num_neighbors == 1:
        return patch_scores.amax(1)
    batch_size, num_patches = patch_scores.shape
    rows = torch.arange(batch_size, device=patch_scores.device)
    max_patches = torch.argmax(patch_scores, dim=1)
    max_patches_features = embedding.reshape(batch_size, num_patches, -1)[rows, max_patches]
    score = patch_scores[rows, max_patches]
    nn_index = locations[rows, max_patches]
    nn_sample = memory_bank[nn_index, :]
    _, support_samples = nearest_neighbor_scores(nn_sample, memory_bank, min(num_neighbors, memory_bank.shape[0]))
    if support_samples.ndim == 1:  # a bank of one patch
        support_samples = support_samples[:, None]
    distances = euclidean_dist(max_patches_features.unsqueeze(1), memory_bank[support_samples])
    weights = (1 - F.softmax(distances.squeeze(1), 1))[..., 0]
    return weights * score


def johnson_lindenstrauss_min_dim(n_samples: int, eps: float = 0.9) -> int:
    """A safe projection dimension for n_samples points (Dasgupta and Gupta), floored, as anomalib."""
    denominator = (eps**2 / 2) - (eps**3 / 3)
    return int(4 * math.log(n_samples) / denominator)


def sparse_random_projection(n_samples: int, n_features: int, eps: float = 0.9,
                             generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
    """A very sparse random projection matrix [n_components, n_features] (Li, Hastie and Church 2006,
    density 1/sqrt(n_features), entries +-sqrt(1/density)/sqrt(n_components)), the distribution of
    anomalib's SparseRandomProjection, drawn from `generator` (not anomalib's random stream).

    None where the Johnson-Lindenstrauss dimension is not below n_features (anomalib would project up
    to it; the distances are then computed exactly instead)."""
    n_components = johnson_lindenstrauss_min_dim(n_samples, eps) if n_samples > 1 else 0
    if n_components < 1 or n_components >= n_features:
        return None
    density = 1 / math.sqrt(n_features)
    mask = torch.rand(n_components, n_features, generator=generator) < density
    signs = torch.randint(0, 2, (n_components, n_features), generator=generator, dtype=torch.int64) * 2 - 1
    return (mask * signs).float() * (math.sqrt(1 / density) / math.sqrt(n_components))


def k_center_greedy(embedding: torch.Tensor, ratio: float, seed: int = 0, *, eps: float = 0.9,
                    projection: Optional[torch.Tensor] = None, start: Optional[int] = None) -> torch.Tensor:
    """Greedy k-center coreset of the rows of embedding [N, D]: int(N * ratio) indices, as anomalib's
    KCenterGreedy (2.x: the random start is the first centre and is kept).

    The distances are computed after a sparse random projection (see sparse_random_projection),
    seeded with `seed`, as is the random start; `projection` [n_components, D] and `start` may be
    given instead (the test passes anomalib's, which come from its global random streams)."""
    if embedding.ndim != 2:
        raise ValueError(f"embedding of shape {tuple(embedding.shape)}; expected [N, D]")
    n = embedding.shape[0]
    size = int(n * ratio)
    if size <= 0:
        raise ValueError(f"a coreset ratio of {ratio} of {n} patches keeps none: raise coreset_ratio")
    generator = torch.Generator().manual_seed(seed)
    if projection is None:
        projection = sparse_random_projection(n, embedding.shape[1], eps, generator)
    features = embedding if projection is None else embedding @ projection.to(embedding.device).T.type(embedding.dtype)
    if start is None:
        start = int(torch.randint(high=n, size=(1,), generator=generator))
    if not 0 <= start < n:
        raise ValueError(f"start {start} out of range for {n} rows")
    idx = torch.tensor(start, device=features.device)
    selected = [idx]
    min_distances = None
    for _ in range(size - 1):
        distances = torch.linalg.norm(features - features[idx], ord=2, dim=1, keepdim=True)
        min_distances = distances if min_distances is None else torch.minimum(min_distances, distances)
        _, idx = torch.max(min_distances.squeeze(1), dim=0)
        min_distances[idx] = 0.0
        selected.append(idx)
    return torch.stack(selected).cpu()


def anomaly_map(patch_scores: torch.Tensor, size: int, sigma: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """[B, g, g] patch scores -> [B, size, size]: upsampled (nearest: anomalib's AnomalyMapGenerator),
    then a Gaussian blur (kernel 2 * int(4 sigma + 0.5) + 1, reflect padding, as anomalib's)."""
    if mode == "nearest":
        x = F.interpolate(patch_scores[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    else:
        x = upsample(patch_scores, size)
    return gaussian_blur(x, sigma)


# --------------------------------------------------------------------------- the detector
class PatchCore:
    """PatchCore on the tokens of a HookedCLIP's vision tower (module docstring: the method and what is
    adapted to CLIP). fit(support) -> self; score(images) -> DetectionResult with image_scores [B], maps
    [B, S, S] at the model input size and parts["patch_scores"] [B, g, g] (before upsampling and
    smoothing), all on the CPU."""

    def __init__(self, model, config: Optional[PatchCoreConfig] = None, class_name: str = "object"):
        if config is not None and not isinstance(config, PatchCoreConfig):
            raise TypeError(f"config must be a PatchCoreConfig, not {type(config).__name__}")
        self.model = model
        self.config = config or PatchCoreConfig()
        self.class_name = class_name  # recorded only: PatchCore uses no text
        n_layers = model.cfg.vision.n_layers
        blocks = [resolve_layer(layer, n_layers) for layer in self.config.layers]
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"PatchCoreConfig.layers {self.config.layers} name blocks {blocks} of a {n_layers}-block "
                             f"tower: a block twice; choose distinct layers")
        self.blocks = blocks
        self.hooks = block_hook_names([self.config.site], blocks, "visual")
        self.memory_bank: Optional[torch.Tensor] = None  # [M, D]
        self.coreset_indices: Optional[torch.Tensor] = None  # into the support patches; None: all kept
        self.n_support_patches: Optional[int] = None
        self.support_sources: Optional[list] = None

    # ----------------------------------------------------------------- features
    @torch.no_grad()
    def embed(self, images: Any) -> torch.Tensor:
        """Images -> locally aware patch features [B, g, g, D] (float32, on the model's device)."""
        cfg = self.config
        out = []
        for chunk in iter_batches(images, cfg.batch_size):
            _, cache = self.model.run_with_cache(to_batch(chunk, self.model), names_filter=self.hooks)
            grids = []
            for h in self.hooks:
                tokens = cache[h]
                if cfg.final_norm:
                    tokens = self.model.visual.ln_post.normalize_unhooked(tokens)
                grids.append(locally_aware(self.model.patch_grid(tokens.float()), cfg.neighborhood))
            out.append(combine_layers(grids, cfg.embed_dim))
        if not out:
            raise ValueError("no images given")
        return torch.cat(out)

    # ----------------------------------------------------------------- fit
    def fit(self, support: Any) -> "PatchCore":
        """support: k normal images (tensor batch, PIL images, paths or Samples)."""
        if not isinstance(support, torch.Tensor) and not is_single_image(support):
            support = list(support)
        bank = self.embed(support).flatten(0, 2)  # [N * g * g, D]
        self.n_support_patches = bank.shape[0]
        self.coreset_indices = None
        if self.config.coreset_ratio < 1.0:
            self.coreset_indices = k_center_greedy(bank, self.config.coreset_ratio, self.config.seed,
                                                   eps=self.config.projection_eps)
            bank = bank[self.coreset_indices.to(bank.device)]
        self.memory_bank = bank
        self.support_sources = image_sources(support)
        return self

    # ----------------------------------------------------------------- score
    def score(self, images: Any) -> DetectionResult:
        """images: tensor batch, PIL images, paths or Samples -> DetectionResult."""
        return self.score_embedding(self.embed(images))

    @torch.no_grad()
    def score_embedding(self, embedding: torch.Tensor) -> DetectionResult:
        """Score patch features [B, g, g, D] (as embed gives them)."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.score called before fit: call patchcore.fit(support_images) first")
        cfg = self.config
        b, gh, gw, d = embedding.shape
        bank = self.memory_bank.to(embedding.device)
        if d != bank.shape[1]:
            raise ValueError(f"features of width {d}; the memory bank's are {bank.shape[1]} wide")
        flat = embedding.reshape(b * gh * gw, d)
        patch_scores, locations = nearest_neighbor_scores(flat, bank, 1)
        patch_scores, locations = patch_scores.reshape(b, -1), locations.reshape(b, -1)
        scores = image_score_reweighted(patch_scores, locations, flat, bank, cfg.num_neighbors)
        grid = patch_scores.reshape(b, gh, gw)
        maps = anomaly_map(grid, self.model.image_size, cfg.sigma, cfg.upsample)
        return DetectionResult(scores.cpu(), maps.cpu(), {"patch_scores": grid.cpu()})

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """A folder with patchcore.json (config, model identity, versions) and tensors.safetensors."""
        from safetensors.torch import save_file

        from lake_interp.lake.persist import model_identity, versions

        if self.memory_bank is None:
            raise RuntimeError("PatchCore.save called before fit")
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file, not a folder: choose another detector folder")
        if (path / "patchcore.json").exists():
            raise ValueError(f"{path} already holds a PatchCore detector: choose another folder or delete it first")
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"memory_bank": self.memory_bank.cpu().contiguous()}
        if self.coreset_indices is not None:
            tensors["coreset_indices"] = self.coreset_indices.cpu().contiguous()
        save_file(tensors, str(path / "tensors.safetensors"))
        meta = {"format": FORMAT, "class_name": self.class_name, "config": self.config.to_dict(),
                "model": model_identity(self.model), "n_support_patches": self.n_support_patches,
                "support": self.support_sources, "versions": versions()}
        (path / "patchcore.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path, model) -> "PatchCore":
        """A detector written by save, on `model`, which must be the model it was fitted with."""
        from safetensors.torch import load_file

        from lake_interp.data.io import read_json_object
        from lake_interp.lake.persist import weights_sha256
        from lake_interp.model.precision import PRECISION_NAMES, PRECISIONS

        path = Path(path)
        meta_path, tensor_path = path / "patchcore.json", path / "tensors.safetensors"
        for p in (meta_path, tensor_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found: expected a folder written by PatchCore.save")
        meta = read_json_object(meta_path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        saved = meta["model"]
        fitted_dtype = PRECISIONS[saved["dtype"]]
        if saved["config"] != model.cfg.to_dict() or saved["weights_sha256"] != weights_sha256(model, fitted_dtype):
            raise ValueError(f"{path} was fitted with model {saved['name']!r} (pretrained={saved['pretrained']!r}); "
                             f"the model given has other weights or another architecture: refit instead")
        if fitted_dtype != model.dtype:
            warnings.warn(f"{path} was fitted in {saved['dtype']}; scoring in {PRECISION_NAMES[model.dtype]}", stacklevel=2)
        detector = cls(model, PatchCoreConfig.from_dict(meta["config"]), meta["class_name"])
        tensors = load_file(str(tensor_path), device=str(model.device))
        detector.memory_bank = tensors["memory_bank"]
        detector.coreset_indices = tensors.get("coreset_indices")
        detector.n_support_patches = meta.get("n_support_patches")
        detector.support_sources = meta.get("support")
        return detector
