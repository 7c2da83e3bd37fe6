"""HookedCLIP: both towers of an open_clip CLIP as a TransformerLens `HookedRootModule`.

Hook points (vision under `visual.`, text under `text.`; l is the block index). The registry of
sites, their shapes and widths is `lake_interp.model.hook_sites`; in short:

    visual.hook_embed                      [batch, pos, d_model]  class + patch tokens + positions
    visual.ln_pre.hook_scale / hook_normalized / hook_out          (absent with no_ln_pre)
    {tower}.blocks.{l}.hook_resid_pre      [batch, pos, d_model]
    {tower}.blocks.{l}.ln1.hook_scale      [batch, pos, 1]        sqrt(var + eps)
    {tower}.blocks.{l}.ln1.hook_normalized [batch, pos, d_model]  (x - mean) / scale, BEFORE weight and bias
    {tower}.blocks.{l}.ln1.hook_out        [batch, pos, d_model]  ln1 output, after weight and bias
    {tower}.blocks.{l}.attn.hook_q/k/v     [batch, pos, head, d_head]
    {tower}.blocks.{l}.attn.hook_attn_scores [batch, head, query_pos, key_pos] (mask added)
    {tower}.blocks.{l}.attn.hook_pattern   [batch, head, query_pos, key_pos]
    {tower}.blocks.{l}.attn.hook_z         [batch, pos, head, d_head]
    {tower}.blocks.{l}.hook_attn_out       [batch, pos, d_model]  added to the stream (after LayerScale)
    {tower}.blocks.{l}.hook_resid_mid      [batch, pos, d_model]
    {tower}.blocks.{l}.ln2.hook_scale / hook_normalized / hook_out
    {tower}.blocks.{l}.mlp.hook_pre        [batch, pos, d_mlp]
    {tower}.blocks.{l}.mlp.hook_post       [batch, pos, d_mlp]    the MLP neurons
    {tower}.blocks.{l}.hook_mlp_out        [batch, pos, d_model]  added to the stream (after LayerScale)
    {tower}.blocks.{l}.hook_resid_post     [batch, pos, d_model]
    visual.ln_post.hook_scale/normalized/out [batch, pos, ...] ([batch, ...] with final_ln_after_pool)
    visual.hook_pooled                     [batch, d_model]
    visual.hook_image_embed                [batch, embed_dim]     after proj
    text.hook_embed                        [batch, ctx, d_model]
    text.ln_final.hook_scale/normalized/out [batch, ctx, ...]
    text.hook_pooled                       [batch, d_model]
    text.hook_text_embed                   [batch, embed_dim]

Short TransformerLens names (`blocks.3.hook_resid_post`, `utils.get_act_name("resid_post", 3)`)
resolve in the vision tower, in hooks, names filters and cache keys.

Vision token order: the `cfg.vision.n_prefix` prefix tokens (open_clip: the class token at
position 0; timm towers: the class token where the model has one, then register tokens; SigLIP:
none), then the patches in row-major order. `model.patch_tokens(x)` / `model.patch_grid(x)` skip
the prefix. timm towers add `visual.attn_pool.hook_pattern` / `hook_out` (SigLIP's MAP head) and
`visual.fc_norm.*` where present (lake_interp.model.components.timm_vit); vision-only models
(`HookedViT`, e.g. DINOv2) have no `text.*` hooks.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Callable, Optional

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import get_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn
from transformer_lens import HookedRootModule

from lake_interp.model import hook_sites
from lake_interp.model.cache import CLIPActivationCache
from lake_interp.model.components import TextTower, make_vision_tower
from lake_interp.model.preprocess import SquashPreprocess
from lake_interp.model.config import HookedCLIPConfig
from lake_interp.model.convert import config_from_open_clip, match_dtypes, state_dict_from_open_clip
from lake_interp.model.tokenizer import resolve_tokenizer
from lake_interp.model.tokens import patch_grid, patch_tokens

RANDOM_WEIGHTS_WARNING = (
    "HookedCLIP {name!r} has RANDOM WEIGHTS (pretrained=None): every score and map it produces "
    "is meaningless. Use it only for smoke tests."
)


class HookedCLIP(HookedRootModule):
    def __init__(
        self,
        cfg: HookedCLIPConfig,
        preprocess: Optional[Callable] = None,
        tokenizer: Optional[Callable] = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.visual = make_vision_tower(cfg.vision)  # the tower class of cfg.vision.family
        self.text = TextTower(cfg.text) if cfg.text is not None else None  # None: vision-only (HookedViT)
        self.logit_scale = nn.Parameter(torch.tensor(0.0)) if cfg.text is not None else None
        self.logit_bias = nn.Parameter(torch.tensor(0.0)) if cfg.logit_bias else None
        # the package's preprocessing (squash, no crop: what LAKE and the tools use), PIL image -> [3, S, S]
        self.preprocess = SquashPreprocess(cfg.vision.image_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
        self.open_clip_preprocess = preprocess  # open_clip's eval transform (most models: resize + centre crop)
        # open_clip's tokenizer: list[str] -> [n, context_length]; vision-only: one that refuses, saying why
        self.tokenizer = tokenizer if cfg.text is not None else _NoTokenizer(self)
        self.image_mean: tuple[float, ...] = OPENAI_DATASET_MEAN  # per-channel normalisation of inputs
        self.image_std: tuple[float, ...] = OPENAI_DATASET_STD
        self.pretrained: Optional[str] = None  # tag or checkpoint path the weights came from
        self.random_weights = False
        self.setup()
        self.eval()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_open_clip(
        cls,
        oc: nn.Module,
        name: Optional[str] = None,
        preprocess: Optional[Callable] = None,
        tokenizer=None,
    ) -> "HookedCLIP":
        """The same weights as the open_clip model `oc`, hooked (weights are copied), each parameter
        in the dtype open_clip holds it in (its precision='fp16'/'bf16' keeps LayerNorms, embeddings
        and the logit scale fp32). `name`: the open_clip model name, which picks the tokenizer as
        open_clip.get_tokenizer does; without it the tokenizer is read off the text tower, or refused
        where that cannot tell. `tokenizer`: a callable or a local Hugging Face tokenizer folder."""
        cfg = config_from_open_clip(oc, name)
        pre = _preprocess_cfg(oc, cfg.vision.image_size)
        if preprocess is None:
            preprocess = image_transform_v2(pre, is_train=False)
        tokenizer = _default_tokenizer(name, cfg, tokenizer)
        state = state_dict_from_open_clip(oc, name)
        model = cls(cfg, preprocess, tokenizer).to(device=next(oc.parameters()).device)
        match_dtypes(model, state)
        model.load_state_dict(state, strict=True)
        model.image_mean, model.image_std = tuple(pre.mean), tuple(pre.std)
        model.preprocess = SquashPreprocess(model.image_size, model.image_mean, model.image_std)
        return model

    @classmethod
    def from_pretrained(cls, name: str, pretrained: Optional[str], tokenizer=None, **kwargs) -> "HookedCLIP":
        """Load as open_clip does: `name` a model config (or `lake-tiny`), `pretrained` a tag
        ("openai", "laion2b_s34b_b88k", ...), a local checkpoint path, or None for random weights
        (explicitly asked for, loudly warned). `tokenizer`: None (open_clip's for `name`; a hub
        tokenizer that is not cached fails at once offline, saying what to download), a callable or a
        local Hugging Face tokenizer folder. kwargs go to `open_clip.create_model_and_transforms`
        (device, precision, cache_dir, ...)."""
        from lake_interp.model.loading import NONE_TAGS, load_open_clip

        pretrained = None if pretrained in NONE_TAGS else str(pretrained)
        oc, preprocess, tokenizer = load_open_clip(name, pretrained, tokenizer, **kwargs)
        model = cls.from_open_clip(oc, name, preprocess, tokenizer)
        model.pretrained = pretrained
        if pretrained is None:
            model.random_weights = True
            warnings.warn(RANDOM_WEIGHTS_WARNING.format(name=name), stacklevel=2)
        return model

    # ----------------------------------------------------------------- properties
    @property
    def image_size(self) -> int:
        """Input side in pixels."""
        return self.cfg.vision.image_size

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.cfg.vision.grid_size

    @property
    def device(self) -> torch.device:
        return self.visual.conv1.weight.device

    @property
    def has_text(self) -> bool:
        """Whether the model has a text tower (False for vision-only models, e.g. DINOv2)."""
        return self.text is not None

    def require_text(self, what: str) -> None:
        """ValueError naming `what` where the model has no text tower."""
        if self.text is None:
            raise ValueError(f"{what} needs a text tower; {self.cfg.name or type(self).__name__!r} is vision-only "
                             f"({self.cfg.vision.original_architecture}): methods that need text (text_dense, "
                             f"WinCLIP, LAKE with text_weight > 0) cannot run on it; for LAKE use text_weight=0 "
                             f"(--text-weight 0)")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype images are fed in (that of the patch embedding)."""
        return self.visual.conv1.weight.dtype

    # ----------------------------------------------------------------- forward
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, H, W] -> [batch, embed_dim], as open_clip `encode_image`."""
        out = self.visual(images)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, context_length] -> [batch, embed_dim], as open_clip `encode_text`."""
        self.require_text("encode_text")
        out = self.text(tokens)
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, images: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None):
        """Image embeddings, text embeddings, or with both (logits_per_image, logits_per_text)."""
        if images is None and text is None:
            raise ValueError("HookedCLIP needs images, text, or both")
        if text is None:
            return self.encode_image(images)
        if images is None:
            return self.encode_text(text)
        self.require_text("image-text logits")
        logits = self.logit_scale.exp() * self.encode_image(images, True) @ self.encode_text(text, True).T
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return logits, logits.T

    # ----------------------------------------------------------------- dense helpers
    def project_visual_tokens(self, resid: torch.Tensor) -> torch.Tensor:
        """Any vision residual [..., d_model] into the joint space: ln_post then proj, per token."""
        return self.visual.project_tokens(resid)

    def encode_image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Every final token in the joint space: [batch, n_prefix + grid**2, embed_dim] (prefix first)."""
        return self.project_visual_tokens(self.visual.residual(images))

    @property
    def n_prefix(self) -> int:
        """Vision tokens before the patches (1: the class token; timm towers: class and/or registers)."""
        return self.cfg.vision.n_prefix

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, n_prefix + grid**2, ...] vision tokens (any hook) -> [batch, grid**2, ...]: the patches."""
        return patch_tokens(tokens, self.n_prefix)

    def patch_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, n_prefix + g*g, d] or [batch, g*g, d] -> [batch, g, g, d], row-major."""
        return patch_grid(tokens, self.n_prefix if tokens.shape[1] == self.cfg.vision.n_ctx else None)

    def hook_names(self, prefix: str = "") -> list[str]:
        """All hook point names in forward order (optionally only those starting with prefix)."""
        return [n for n in self.hook_dict if n.startswith(prefix)]

    def check_hook_names(self, names) -> None:
        """ValueError naming the first unknown hook point (with similar names), instead of a KeyError
        or, for a names_filter list, an empty cache."""
        hook_sites.check_hook_names(self, names)

    def resolve_hook_name(self, name, tower: str = "visual"):
        """A full hook name: full names as they are, short TransformerLens names in `tower`."""
        return hook_sites.resolve_name(self, name, tower)

    def hooks(self, fwd_hooks=(), bwd_hooks=(), *args, **kwargs):
        """TransformerLens `hooks` (also behind run_with_hooks), refusing unknown hook names; short
        TransformerLens names resolve in the vision tower."""
        fwd_hooks = [(self.resolve_hook_name(n), fn) for n, fn in fwd_hooks]  # read once: a generator is consumed
        bwd_hooks = [(self.resolve_hook_name(n), fn) for n, fn in bwd_hooks]
        self.check_hook_names([name for name, _ in [*fwd_hooks, *bwd_hooks]])
        return super().hooks(fwd_hooks, bwd_hooks, *args, **kwargs)

    def get_caching_hooks(self, names_filter=None, *args, **kwargs):
        """TransformerLens `get_caching_hooks` (behind run_with_cache), refusing unknown names in a
        name or list filter; short names resolve in the vision tower."""
        if isinstance(names_filter, str):
            names_filter = self.resolve_hook_name(names_filter)
        elif isinstance(names_filter, (list, tuple)):
            names_filter = [self.resolve_hook_name(n) for n in names_filter]
        if isinstance(names_filter, (str, list)):
            self.check_hook_names([names_filter] if isinstance(names_filter, str) else names_filter)
        return super().get_caching_hooks(names_filter, *args, **kwargs)

    def run_with_cache(self, *model_args, return_cache_object: bool = True, remove_batch_dim: bool = False,
                       **kwargs):
        """As TransformerLens: (output, cache) with cache a `CLIPActivationCache` (TransformerLens's
        ActivationCache; `cache.visual` / `cache.text` per tower), or a plain dict with
        return_cache_object=False."""
        out, cache_dict = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        return out, CLIPActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)

    # ----------------------------------------------------------------- TransformerLens weight views
    # Of the vision tower, the default tower; `model.text.W_Q` etc. for the text tower.
    W_E = property(lambda self: self.visual.W_E)
    W_pos = property(lambda self: self.visual.W_pos)
    W_Q = property(lambda self: self.visual.W_Q)
    W_K = property(lambda self: self.visual.W_K)
    W_V = property(lambda self: self.visual.W_V)
    W_O = property(lambda self: self.visual.W_O)
    b_Q = property(lambda self: self.visual.b_Q)
    b_K = property(lambda self: self.visual.b_K)
    b_V = property(lambda self: self.visual.b_V)
    b_O = property(lambda self: self.visual.b_O)
    W_in = property(lambda self: self.visual.W_in)
    b_in = property(lambda self: self.visual.b_in)
    W_out = property(lambda self: self.visual.W_out)
    b_out = property(lambda self: self.visual.b_out)
    QK = property(lambda self: self.visual.QK)
    OV = property(lambda self: self.visual.OV)

    @property
    def blocks(self):
        """The vision tower's blocks (TransformerLens's `model.blocks`); `model.text.blocks` for text."""
        return self.visual.blocks


class _NoTokenizer:
    """The tokenizer of a vision-only model: calling it raises the model's ValueError (no text tower)."""

    def __init__(self, model: "HookedCLIP"):
        self._model = model.cfg.name or type(model).__name__

    def __repr__(self) -> str:
        return f"no tokenizer ({self._model!r} has no text tower)"

    def __call__(self, texts, *args, **kwargs):
        raise ValueError(f"tokenizing text needs a text tower; {self._model!r} is vision-only: methods that need "
                         f"text (text_dense, WinCLIP, LAKE with text_weight > 0) cannot run on it; for LAKE use "
                         f"text_weight=0 (--text-weight 0)")


def _preprocess_cfg(oc: nn.Module, image_size: int) -> PreprocessCfg:
    """open_clip's eval preprocessing of this model (size, mean, std, interpolation, resize mode)."""
    cfg = {k: v for k, v in get_model_preprocess_cfg(oc).items() if k in asdict(PreprocessCfg())}
    return PreprocessCfg(**{"size": image_size, **cfg})


def _default_tokenizer(name: Optional[str], cfg: HookedCLIPConfig, tokenizer=None) -> Callable:
    """The model's tokenizer, checked against its text tower (lake_interp.model.tokenizer); None
    without a text tower."""
    if cfg.text is None:
        return None
    return resolve_tokenizer(name, cfg.text, tokenizer)
