"""WinCLIP and WinCLIP+ (Jeong et al., "WinCLIP: Zero-/Few-Shot Anomaly Classification and
Segmentation", CVPR 2023), computed as anomalib 2.x's `WinClipModel` computes them.

    detector = WinCLIP(model, class_name="bottle")                  # zero-shot: method "winclip"
    detector.fit(None).score(images)                                # DetectionResult
    plus = WinCLIP(model, class_name="bottle", k_shot=2).fit(two_normal_images)   # "winclip_plus"
    plus.score(images).parts["few_shot_map"]

What is computed (anomalib's `torch_model.py` / `utils.py` / `prompting.py`, step by step):

- Text: anomalib's compositional prompt ensemble (`ANOMALIB_NORMAL_STATES` x `ANOMALIB_TEMPLATES`
  and `ANOMALIB_ANOMALOUS_STATES` x `ANOMALIB_TEMPLATES`, the class name filled in). These are NOT
  `lake_interp.lake.config`'s lists: anomalib has no "broken {}" state, no "a cropped photo of a {}."
  template, and lists "a jpeg corrupted photo of the {}." twice (instead of "... of a {}."); the
  duplicate is kept because it weighs that prompt twice in the mean. The text embedding of a state
  set is the plain mean of the UNnormalised `encode_text` outputs (`lake.semantic.text_features`
  normalises each prompt before averaging, which is another number; so it is not reused).
- Image: the vision tower runs once on the whole image (class token -> image embedding, ln_post'd
  patch tokens, before `proj`, -> the few-shot patch memory), and once per sliding window: the
  class token plus the window's patch tokens, taken from the embedded tokens (patch embedding +
  positional embedding, before `ln_pre`), run through `ln_pre`, every block, `ln_post`, pooling and
  `proj` on their own, so the window's tokens attend only to each other. Windows are
  `scales` x `scales` patches at stride 1 (anomalib's `make_masks`), scales (2, 3) by default.
- Zero-shot map (grid): per scale, the window's anomalous-class probability
  softmax(cos(window, [normal, anomalous]) / temperature)[1] spread to the patches it covers by
  harmonic mean; then the harmonic mean over the full-image scale (the image's class score at
  every patch) and each window scale.
- Class score: the same probability for the whole image's embedding.
- Few-shot map (grid), WinCLIP+: per scale, the visual association score of every window
  (min over all reference windows of that scale, any position, of (1 - cos) / 2) spread by
  harmonic mean; the same for the full-image patch tokens against all reference patch tokens;
  the arithmetic mean of the patch map and the window-scale maps.
- WinCLIP+: map = (zero-shot + few-shot) / 2, image score = (class score + max of the few-shot
  map) / 2. WinCLIP: map = zero-shot, image score = class score.
- Maps are upsampled bilinearly (align_corners=False) from the patch grid to the model input size
  S, as anomalib's `forward` does. anomalib applies NO gaussian smoothing (neither the torch
  model nor the lightning module; its post-processor only normalises/thresholds), so
  `result.maps` is exactly anomalib's `anomaly_map` and `parts["raw_maps"]` is the same tensor.

One difference from anomalib 2.7.0 as installed with open_clip >= 2.23 (3.3 here), on purpose:
anomalib's `_get_window_embeddings` permutes the window batch to sequence-first (LND) before
`clip.visual.transformer`, which in these open_clip versions is batch-first. The blocks then
attend across windows (and images) at each token position instead of across a window's tokens:
every window's class token sees only copies of itself, so all window embeddings are one constant
vector, the same for every window and every image (anomalib issue #2571). That is not WinCLIP.
Here each window attends within itself, which is what anomalib's code computes on the open_clip it
was written for (sequence-first transformer); `tests/reference/make_winclip_fixture.py` checks
this against anomalib with only that layout restored (`Transformer.batch_first = False` during its
window pass) and also records stock anomalib's numbers, which differ.

Hooks: every tower step is the hooked model's own module (`model.visual.conv1`, `class_embedding`,
`positional_embedding`, `hook_embed`, `ln_pre`, `blocks`, `ln_post`, `hook_pooled`, `proj`,
`hook_image_embed`), so forward hooks fire. They fire once for the whole-image pass (shapes as in
`model.encode_image`: [B, 1 + grid**2, d]) and once per chunk of windows (at most
`window_batch_size` sequences of 1 + scale**2 tokens each: [n, 1 + scale**2, d]); a hook that edits
the residual stream thus acts on the windows too. `visual.hook_embed` fires once per image batch
(the windows are cut from its output).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from lake_interp.detectors.protocol import DetectionResult
from lake_interp.lake.fusion import upsample
from lake_interp.lake.inputs import is_single_image, iter_batches, to_batch

# anomalib 2.x `models/image/winclip/prompting.py`, verbatim (order and duplicate included).
ANOMALIB_NORMAL_STATES = (
    "{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage",
)
ANOMALIB_ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
ANOMALIB_TEMPLATES = (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.",
    "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)


@dataclass
class WinCLIPConfig:
    """Every option of WinCLIP / WinCLIP+. Defaults are anomalib 2.x's `WinClipModel`.

    Plain data: `to_dict` / `from_dict` (which refuses unknown fields) round-trip through JSON.
    """

    scales: Sequence[int] = (2, 3)
    """Sliding-window sides in patches (anomalib `scales`); the full image is always added as a
    further scale. Each must be >= 1 and <= the patch grid side."""
    stride: int = 1
    """Window stride in patches (anomalib hard-codes 1)."""
    temperature: float = 0.07
    """Softmax temperature of the image-text cosine similarities (anomalib `TEMPERATURE`)."""
    normal_states: Sequence[str] = ANOMALIB_NORMAL_STATES
    """State words of a normal object ("{}" is the class name)."""
    anomalous_states: Sequence[str] = ANOMALIB_ANOMALOUS_STATES
    """State words of an anomalous object."""
    templates: Sequence[str] = ANOMALIB_TEMPLATES
    """Prompt templates ("{}" is the filled state word); duplicates count twice in the mean."""
    batch_size: int = 8
    """Images per vision-tower pass in `fit` and `score` (memory only; results do not depend on it)."""
    window_batch_size: int = 4096
    """Most window sequences per tower call (memory only: windows are independent sequences)."""
    text_batch_size: int = 256
    """Prompts per text-tower call (memory only)."""

    def __post_init__(self):
        for name in ("scales", "normal_states", "anomalous_states", "templates"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)):
                raise ValueError(f"WinCLIPConfig.{name}={value!r}; expected a sequence, not a string")
            setattr(self, name, tuple(value))
        if not self.scales or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in self.scales):
            raise ValueError(f"WinCLIPConfig.scales={self.scales}; expected one or more ints >= 1")
        for name in ("stride", "batch_size", "window_batch_size", "text_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"WinCLIPConfig.{name}={value!r}; expected an int >= 1")
        if not self.temperature > 0:
            raise ValueError(f"WinCLIPConfig.temperature={self.temperature}; expected > 0")
        for name in ("normal_states", "anomalous_states", "templates"):
            if not getattr(self, name):
                raise ValueError(f"WinCLIPConfig.{name} is empty")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "WinCLIPConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown WinCLIPConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class WinCLIPEmbeddings:
    """What the vision tower gives for a batch (float32, on the model's device)."""

    image: torch.Tensor  # [B, embed_dim]: the whole image (pooled, projected)
    windows: list[torch.Tensor]  # per scale [B, n_windows, embed_dim]
    patches: torch.Tensor  # [B, grid**2, d_model]: whole-image patch tokens after ln_post, before proj

    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, index) -> "WinCLIPEmbeddings":
        """The embeddings of some of the images (an int, slice or index tensor over the batch)."""
        index = [index] if isinstance(index, int) else index
        return WinCLIPEmbeddings(self.image[index], [w[index] for w in self.windows], self.patches[index])


# ---------------------------------------------------------------------------------------------- windows
def window_indices(grid: int, scale: int, stride: int = 1) -> torch.Tensor:
    """[n_windows, scale**2] patch indices (row-major) of each window, in anomalib's `make_masks`
    order (windows row-major by top-left corner; patches within a window row-major)."""
    if scale > grid:
        raise ValueError(f"window scale {scale} is larger than the patch grid {grid} x {grid}")
    ids = torch.arange(grid * grid, dtype=torch.float32).reshape(1, 1, grid, grid)
    return F.unfold(ids, kernel_size=scale, stride=stride)[0].T.round().long()


def coverage(windows: torch.Tensor, n_patches: int) -> torch.Tensor:
    """[n_patches, n_windows] bool: window w covers patch p."""
    cov = torch.zeros(n_patches, windows.shape[0], dtype=torch.bool)
    cov[windows.T.reshape(-1), torch.arange(windows.shape[0]).repeat(windows.shape[1])] = True
    return cov


def harmonic_aggregation(window_scores: torch.Tensor, cover: torch.Tensor, grid: int) -> torch.Tensor:
    """window_scores [B, n_windows], cover [P, n_windows] -> [B, grid, grid]: per patch the harmonic
    mean of the scores of the windows covering it (0 where one of them is 0: anomalib's
    `nan_to_num(posinf=0)`)."""
    inverse = torch.where(cover, (1 / window_scores).unsqueeze(1), 0).sum(dim=-1)  # [B, P]
    scores = cover.sum(dim=1) / inverse
    return scores.reshape(-1, grid, grid).nan_to_num(posinf=0.0)


def class_scores(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """[..., D] x [2, D] -> [...]: softmax(cos / temperature) over (normal, anomalous), anomalous part."""
    cos = F.normalize(embeddings, dim=-1) @ F.normalize(text, dim=-1).T
    return (cos / temperature).softmax(dim=-1)[..., 1]


def visual_association(embeddings: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[B, N, D] x [K, M, D] -> [B, N]: min over every reference vector of (1 - cos) / 2."""
    ref = F.normalize(reference.reshape(-1, reference.shape[-1]), dim=-1)
    cos = F.normalize(embeddings, dim=-1) @ ref.T
    return (1 - cos).min(dim=-1).values / 2


@torch.no_grad()
def winclip_text_embeddings(model, class_name: str, normal_states: Sequence[str], anomalous_states: Sequence[str],
                            templates: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """[2, embed_dim] float32: mean of the (unnormalised) text embeddings of the normal and of the
    anomalous prompts, as anomalib's `_collect_text_embeddings`."""
    out = []
    for states in (normal_states, anomalous_states):
        prompts = [t.format(s.format(class_name)) for s in states for t in templates]
        tokens = model.tokenizer(prompts).to(model.device)
        emb = torch.cat([model.encode_text(chunk) for chunk in tokens.split(batch_size)]).float()
        out.append(emb.mean(dim=0))
    return torch.stack(out)


def _materialise(images: Any) -> Any:
    """A one-shot iterable (generator) as a list, so that counting it does not consume it."""
    if images is None or isinstance(images, (torch.Tensor, WinCLIPEmbeddings)) or is_single_image(images):
        return images
    return list(images)


def _n_images(images: Any) -> int:
    if images is None:
        return 0
    if isinstance(images, WinCLIPEmbeddings):
        return len(images)
    if isinstance(images, torch.Tensor):
        return 1 if images.ndim == 3 else int(images.shape[0])
    if is_single_image(images):
        return 1
    return len(list(images))


# ---------------------------------------------------------------------------------------------- detector
class WinCLIP:
    """WinCLIP (`k_shot=0`, method "winclip") and WinCLIP+ (`k_shot>0`, method "winclip_plus").

    WinCLIP(model, config=None, class_name="object", k_shot=0)

    model: a `lake_interp.HookedCLIP` (open_clip ViT towers). config: a `WinCLIPConfig`, a dict of
    its fields (unknown ones refused) or None (anomalib's defaults). class_name: fills the prompts.
    k_shot: number of normal reference images `fit` must get (0: zero-shot, `fit(None)`).

    `score(images)` -> `DetectionResult` (on the CPU, float32):
      image_scores [B]   class score (WinCLIP) or (class score + max few-shot grid) / 2 (WinCLIP+)
      maps [B, S, S]     anomalib's `anomaly_map`: the combined grid upsampled bilinearly to the model
                         input size S; no gaussian smoothing (anomalib applies none)
      parts:
        "raw_maps" [B, S, S]        the map before any smoothing: the same tensor as `maps`
        "class_score" [B]           zero-shot image score (whole-image embedding vs prompts)
        "zero_shot_map" [B, S, S]   zero-shot part, upsampled;  "zero_shot_grid" [B, g, g] before
        "few_shot_map" [B, S, S]    few-shot part (WinCLIP+ only);  "few_shot_grid" [B, g, g] before
        "few_shot_max" [B]          max of the few-shot grid (WinCLIP+ only)

    See the module docstring for each step, and for the one deliberate difference from anomalib
    2.7.0 as installed (its degenerate window pass with batch-first open_clip).
    """

    def __init__(self, model, config: Optional[WinCLIPConfig | dict] = None, class_name: str = "object",
                 k_shot: int = 0):
        if isinstance(config, dict):
            config = WinCLIPConfig.from_dict(config)
        elif config is None:
            config = WinCLIPConfig()
        elif not isinstance(config, WinCLIPConfig):
            raise TypeError(f"config of type {type(config).__name__}; expected WinCLIPConfig, a dict or None")
        if not isinstance(k_shot, int) or isinstance(k_shot, bool) or k_shot < 0:
            raise ValueError(f"k_shot={k_shot!r}; expected an int >= 0")
        if not isinstance(class_name, str) or not class_name:
            raise ValueError(f"class_name={class_name!r}; expected a non-empty string")
        family = getattr(model.cfg.vision, "family", "open_clip")
        if family != "open_clip" or model.cfg.text is None:
            raise NotImplementedError(
                f"WinCLIP on {model.cfg.name}: its window pass re-runs open_clip's own VisionTransformer (class token, "
                f"learned positions) and needs a text tower; this model's vision tower is {family!r}"
                + ("" if model.cfg.text is not None else " without a text tower")
                + " (PatchCore, knn_all and LAKE's visual branch run on any hooked ViT)")
        self.model = model
        self.config = config
        self.class_name = class_name
        self.k_shot = k_shot
        grid = model.grid_size
        self.grid = grid
        self._windows = [window_indices(grid, s, config.stride) for s in config.scales]
        self._cover = [coverage(w, grid * grid) for w in self._windows]
        # token positions of each window's sequence: the class token (0), then its patches (+1)
        self._sequences = [torch.cat([torch.zeros(len(w), 1, dtype=torch.long), w + 1], dim=1) for w in self._windows]
        self.text_embeddings: Optional[torch.Tensor] = None  # [2, embed_dim]
        self.reference: Optional[WinCLIPEmbeddings] = None  # the k_shot normal images' embeddings

    @property
    def method(self) -> str:
        return "winclip_plus" if self.k_shot else "winclip"

    # ----------------------------------------------------------------------------------- fitting
    def fit(self, support: Any = None) -> "WinCLIP":
        """Collect the text embeddings (once per detector) and, for WinCLIP+, the reference memory of
        exactly `k_shot` normal images (tensor batch, PIL images, paths or Samples, or their
        `WinCLIPEmbeddings` from `embed`, used as they are)."""
        support = _materialise(support)
        n = _n_images(support)
        if n != self.k_shot:
            hint = ("zero-shot WinCLIP takes no support images: pass None or build it with k_shot="
                    f"{n} for WinCLIP+" if self.k_shot == 0 else f"this WinCLIP+ has k_shot={self.k_shot}")
            raise ValueError(f"fit got {n} support images; {hint}")
        if self.text_embeddings is None:
            c = self.config
            self.text_embeddings = winclip_text_embeddings(self.model, self.class_name, c.normal_states,
                                                           c.anomalous_states, c.templates, c.text_batch_size)
        if not n:
            self.reference = None
        elif isinstance(support, WinCLIPEmbeddings):
            if support.patches.shape[1] != self.grid**2 or len(support.windows) != len(self._windows):
                raise ValueError("support embeddings were made by a detector with another model or scales")
            self.reference = support
        else:
            self.reference = self.embed(support)
        return self

    def with_support(self, support: Any) -> "WinCLIP":
        """A copy with the same model, config and text embeddings, fitted on `support` (images or
        `WinCLIPEmbeddings`; its k_shot is the number of images in it; none: zero-shot)."""
        support = _materialise(support)
        other = copy.copy(self)
        other.k_shot = _n_images(support)
        other.reference = None
        return other.fit(support)

    # ----------------------------------------------------------------------------------- the tower
    @torch.no_grad()
    def embed(self, images: Any) -> WinCLIPEmbeddings:
        """Whole-image, window and patch embeddings of `images`, in batches of `config.batch_size`."""
        parts = [self._embed_batch(to_batch(chunk, self.model)) for chunk in iter_batches(images, self.config.batch_size)]
        if not parts:
            raise ValueError("no images given")
        return WinCLIPEmbeddings(
            image=torch.cat([p.image for p in parts]),
            windows=[torch.cat([p.windows[i] for p in parts]) for i in range(len(self._windows))],
            patches=torch.cat([p.patches for p in parts]),
        )

    def _embed_batch(self, images: torch.Tensor) -> WinCLIPEmbeddings:
        v = self.model.visual
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, v.cfg.image_size, v.cfg.image_size):
            raise ValueError(f"images of shape {tuple(images.shape)}; expected [B, 3, {v.cfg.image_size}, "
                             f"{v.cfg.image_size}]")
        x = v.conv1(images.to(v.conv1.weight.dtype))  # [B, d, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B, g*g, d], row-major
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        tokens = v.hook_embed(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))
        image, patches = self._finish(tokens)
        b, _, d = tokens.shape
        windows = []
        for seq in self._sequences:
            seq = seq.to(tokens.device)
            cut = tokens[:, seq].reshape(b * seq.shape[0], seq.shape[1], d)  # [B * n_windows, 1 + s*s, d]
            pooled = torch.cat([self._finish(c)[0] for c in cut.split(self.config.window_batch_size)])
            windows.append(pooled.reshape(b, seq.shape[0], -1).float())
        return WinCLIPEmbeddings(image.float(), windows, patches.float())

    def _finish(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded tokens [n, L, d] (class token first) -> (projected pooled [n, embed_dim], patch
        tokens [n, L - 1, d]): open_clip's ln_pre, transformer, `_pool` (ln_post placement, tok/avg
        pooling) and proj."""
        v = self.model.visual
        x = v.ln_pre(x)
        for block in v.blocks:
            x = block(x)
        if v.cfg.final_ln_after_pool:
            pooled = v.ln_post(x[:, 0] if v.cfg.pool_type == "tok" else x[:, v.cfg.n_prefix:].mean(dim=1))
        else:
            x = v.ln_post(x)
            pooled = x[:, 0] if v.cfg.pool_type == "tok" else x[:, v.cfg.n_prefix:].mean(dim=1)
        return v.hook_image_embed(v.hook_pooled(pooled) @ v.proj), x[:, v.cfg.n_prefix:]

    # ----------------------------------------------------------------------------------- scoring
    def score(self, images: Any) -> DetectionResult:
        """Score images (tensor batch, PIL images, paths or Samples); see the class docstring."""
        if self.text_embeddings is None or (self.k_shot and self.reference is None):
            raise RuntimeError(f"{self.method} is not fitted: call fit("
                               f"{'None' if not self.k_shot else f'{self.k_shot} normal images'}) first")
        return DetectionResult.concat([self.score_embeddings(self.embed(chunk))
                                       for chunk in iter_batches(images, self.config.batch_size)])

    @torch.no_grad()
    def score_embeddings(self, emb: WinCLIPEmbeddings) -> DetectionResult:
        """Scores from embeddings made by `embed` (lets one embedding serve several detectors)."""
        if self.text_embeddings is None or (self.k_shot and self.reference is None):
            raise RuntimeError(f"{self.method} is not fitted")
        c, g = self.config, self.grid
        text = self.text_embeddings.to(emb.image.device)
        cls_score = class_scores(emb.image, text, c.temperature)  # [B]
        scales = [cls_score.view(-1, 1, 1).expand(-1, g, g)]
        for win, cover in zip(emb.windows, self._cover):
            scales.append(harmonic_aggregation(class_scores(win, text, c.temperature), cover.to(win.device), g))
        zero_shot = len(scales) / (1 / torch.stack(scales)).sum(dim=0)  # [B, g, g]
        parts = {"class_score": cls_score, "zero_shot_grid": zero_shot}
        grid_map, image_scores = zero_shot, cls_score
        if self.k_shot:
            ref = self.reference
            few = [visual_association(emb.patches, ref.patches.to(emb.patches.device)).reshape(-1, g, g)]
            for win, ref_win, cover in zip(emb.windows, ref.windows, self._cover):
                few.append(harmonic_aggregation(visual_association(win, ref_win.to(win.device)), cover.to(win.device), g))
            few_shot = torch.stack(few).mean(dim=0)
            few_max = few_shot.amax(dim=(-2, -1))
            grid_map = (zero_shot + few_shot) / 2
            image_scores = (cls_score + few_max) / 2
            parts.update(few_shot_grid=few_shot, few_shot_max=few_max)
        size = self.model.image_size
        maps = upsample(grid_map, size).cpu()  # bilinear, align_corners=False (anomalib's)
        parts["zero_shot_map"] = upsample(zero_shot, size)
        if self.k_shot:
            parts["few_shot_map"] = upsample(parts["few_shot_grid"], size)
        parts = {k: v.float().cpu() for k, v in parts.items()}
        parts["raw_maps"] = maps
        return DetectionResult(image_scores.float().cpu(), maps, parts)
