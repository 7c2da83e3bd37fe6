"""ActivationCache for both CLIP towers: TransformerLens's own class, per tower.

`HookedCLIP.run_with_cache` returns a `CLIPActivationCache` (a `transformer_lens.ActivationCache`)
holding every cached name (`visual.*`, `text.*`). Short TransformerLens keys resolve in the vision
tower: `cache["resid_post", 3]`, `cache[utils.get_act_name("resid_post", 3)]`,
`cache["blocks.3.hook_resid_post"]` are `cache["visual.blocks.3.hook_resid_post"]`.

`cache.visual` and `cache.text` are per-tower `ActivationCache`s (keys without the tower prefix,
live views of the same tensors) whose analysis methods have TransformerLens's signatures:
`accumulated_resid`, `decompose_resid`, `apply_ln_to_stack`, `stack_head_results`,
`compute_head_results`, `stack_activation`, `get_neuron_results`, `stack_neuron_results`,
`get_full_resid_decomposition` and a CLIP `logit_attrs`. The same methods on `cache` itself act on
the vision tower, or on the text tower with `tower="text"`.

What differs from a language model, said once:
- "final layer norm" is `ln_post` (vision) / `ln_final` (text); in a tower view the key
  `ln_final.*` is that tower's final LayerNorm. Every `apply_ln` (the cached-scale path of
  `apply_ln_to_stack` and `accumulated_resid(apply_ln=True)`'s recomputed statistics alike) gives
  the normalised stream BEFORE that LayerNorm's weight and bias, as `hook_normalized` holds it (the
  weights are not folded, so the affine map stays with the projection: `ln.w * (proj @ t)` is the
  residual direction of a joint-space target t, see `tokens_to_residual_directions`).
- A plain dict of cached activations (`return_cache_object=False`) becomes this cache with
  `CLIPActivationCache(cache_dict, model)`; TransformerLens's base `ActivationCache(cache_dict, model)`
  does not know the tower prefixes.
- `hook_embed` in a tower view is the embedding term of the residual stream, i.e. what enters
  block 0: in the vision tower with `ln_pre` that is `ln_pre`'s output (`blocks.0.hook_resid_pre`),
  not the raw `visual.hook_embed` (class + patch tokens + positions before `ln_pre`). So
  `sum(decompose_resid())` is the final residual stream.
- LayerScale (where the model has it) is folded into the output weights the view's methods use:
  head results, neuron results and the accumulated bias are what is added to the stream.
- `logit_attrs(stack, text)` projects onto a text direction in the joint space, through the final
  LayerNorm (cached scale) and the projection: the CLIP analogue of direct logit attribution.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Optional, Sequence, Union

import torch
import transformer_lens.utilities as tl_utils
from transformer_lens import ActivationCache
from transformer_lens.utilities import Slice

from lake_interp.model.hook_sites import TOWERS, resolve_name

TowerName = str
TextLike = Union[str, Sequence[str], torch.Tensor]

ANALYSIS_METHODS = (
    "accumulated_resid", "decompose_resid", "apply_ln_to_stack", "stack_head_results", "compute_head_results",
    "stack_activation", "get_neuron_results", "stack_neuron_results", "get_full_resid_decomposition",
    "logit_attrs", "tokens_to_residual_directions",
)


class _TowerKeys(MutableMapping):
    """The cache entries of one tower, keys without the `{tower}.` prefix (a live view)."""

    def __init__(self, parent: dict, tower: str, aliases: dict[str, str]):
        self.parent, self.prefix, self.aliases = parent, f"{tower}.", aliases
        self.hidden = {self.prefix + k for k in aliases}  # e.g. the raw visual.hook_embed where aliased

    def _full(self, key: str) -> str:
        return self.aliases.get(key, self.prefix + key)

    def __getitem__(self, key):
        if not isinstance(key, str):
            raise KeyError(key)
        return self.parent[self._full(key)]

    def __setitem__(self, key, value):
        self.parent[self._full(key)] = value

    def __delitem__(self, key):
        del self.parent[self._full(key)]

    def __iter__(self):
        for k in self.aliases:
            if self.aliases[k] in self.parent:
                yield k
        for k in list(self.parent):
            if k.startswith(self.prefix) and k not in self.hidden:
                yield k[len(self.prefix):]

    def __len__(self):
        return sum(1 for _ in self)


class _Namespace:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _StreamBlock:
    """A block as the cache methods see it: output weights with LayerScale folded in (lazy)."""

    def __init__(self, block):
        self._block = block

    @property
    def attn(self):
        W_O = self._block.attn.W_O
        gamma = getattr(self._block.ls1, "gamma", None)
        return _Namespace(W_O=W_O if gamma is None else W_O * gamma, n_heads=self._block.attn.n_heads)

    @property
    def mlp(self):
        W_out = self._block.mlp.W_out
        gamma = getattr(self._block.ls2, "gamma", None)
        return _Namespace(W_out=W_out if gamma is None else W_out * gamma)


class _UnhookedLN:
    """The tower's final LayerNorm WITHOUT its weight and bias, firing no hooks: what TransformerLens's
    apply_ln recompute path calls `ln_final`. Without the affine map it agrees with the cached-scale
    path (`apply_ln_to_stack`), so every apply_ln gives the stream as `ln*.hook_normalized` holds it;
    `* ln.w + ln.b` gives the LayerNorm's output."""

    def __init__(self, ln):
        self.ln = ln

    def __call__(self, x):
        import torch.nn.functional as F

        dtype = x.dtype
        return F.layer_norm(x.to(torch.promote_types(dtype, torch.float32)), x.shape[-1:], eps=self.ln.eps).to(dtype)


class TowerModel:
    """What TransformerLens's ActivationCache reads off `cache.model`, for one tower of a HookedCLIP:
    `cfg` (the tower's TransformerLens-style config), `blocks`, `ln_final`, `accumulated_bias`,
    `tokens_to_residual_directions`."""

    def __init__(self, model, tower: TowerName):
        if tower not in TOWERS:
            raise ValueError(f"unknown tower {tower!r}; expected one of {TOWERS}")
        self.clip, self.tower_name = model, tower
        self.tower = model.visual if tower == "visual" else model.text
        self.cfg = model.cfg.vision if tower == "visual" else model.cfg.text
        self.blocks = [_StreamBlock(b) for b in self.tower.blocks]
        self.final_ln = self.tower.ln_post if tower == "visual" else self.tower.ln_final
        self.ln_final = _UnhookedLN(self.final_ln)

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """[d_model]: the attention (and MLP) output biases of blocks < layer added to the stream
        (times LayerScale), plus the attention bias of `layer` when mlp_input."""
        bias = torch.zeros(self.cfg.d_model, device=self.final_ln.weight.device, dtype=self.final_ln.weight.dtype)
        for i in range(layer + (1 if mlp_input else 0)):
            block = self.tower.blocks[i]
            b_O = block.attn.b_O * getattr(block.ls1, "gamma", 1.0)
            bias = bias + b_O.to(bias.dtype)
            if include_mlp_biases and i < layer:
                bias = bias + (block.mlp.b_out * getattr(block.ls2, "gamma", 1.0)).to(bias.dtype)
        return bias

    def joint_directions(self, target: TextLike) -> torch.Tensor:
        """Directions in the joint space: strings are embedded by the other tower (the prompt's text
        embedding for the vision tower), tensors [embed_dim] or [batch, embed_dim] taken as given."""
        if isinstance(target, torch.Tensor):
            return target
        if self.tower_name == "text":
            raise TypeError("for the text tower pass the joint-space direction as a tensor (e.g. an image embedding)")
        texts = [target] if isinstance(target, str) else list(target)
        if self.clip.tokenizer is None:
            raise ValueError("this HookedCLIP has no tokenizer: pass the text embedding as a tensor")
        with torch.no_grad():
            emb = self.clip.encode_text(self.clip.tokenizer(texts).to(self.clip.device), normalize=True)
        return emb[0] if isinstance(target, str) else emb

    def tokens_to_residual_directions(self, target: TextLike) -> torch.Tensor:
        """Residual directions whose dot product with a stack normalised by apply_ln_to_stack
        (centred, divided by the cached final scale) gives that component's contribution to
        `final_ln(resid) @ projection . target` (the LayerNorm bias term is constant)."""
        joint = self.joint_directions(target)
        proj = self.projection()
        joint = joint.to(device=proj.device, dtype=proj.dtype)
        return (joint @ proj.T) * self.final_ln.weight.to(proj.dtype)

    def projection(self) -> torch.Tensor:
        """[d_model, embed_dim]: the tower's projection into the joint space."""
        if self.tower_name == "visual":  # towers whose head is not linear (MAP pooling) raise NotImplementedError
            return self.tower.W_proj
        p = self.tower.text_projection
        if p is None:
            return torch.eye(self.cfg.d_model, device=self.final_ln.weight.device, dtype=self.final_ln.weight.dtype)
        return p.weight.T if isinstance(p, torch.nn.Linear) else p


class TowerActivationCache(ActivationCache):
    """TransformerLens's ActivationCache for one tower of a HookedCLIP (see the module docstring)."""

    def __init__(self, parent: "CLIPActivationCache", tower: TowerName):
        model = parent.clip_model
        aliases = {}
        if tower == "visual":
            final = "ln_post"
            if model.cfg.vision.ln_pre:
                aliases["hook_embed"] = "visual.blocks.0.hook_resid_pre"
        else:
            final = "ln_final"
        for site in ("hook_scale", "hook_normalized", "hook_out"):
            aliases[f"ln_final.{site}"] = f"{tower}.{final}.{site}"
        self.parent = parent
        super().__init__(_TowerKeys(parent.cache_dict, tower, aliases), TowerModel(model, tower), parent.has_batch_dim)

    def __repr__(self) -> str:
        return f"TowerActivationCache({self.model.tower_name}) with keys {list(self.keys())}"

    def keys(self):
        return list(self.cache_dict)

    def remove_batch_dim(self, batch_size: Optional[int] = None) -> "TowerActivationCache":
        self.parent.remove_batch_dim(batch_size)
        self.has_batch_dim = self.parent.has_batch_dim
        return self

    def apply_slice_to_batch_dim(self, batch_slice):
        """A batch slice of the whole cache, seen from this tower."""
        return getattr(self.parent.apply_slice_to_batch_dim(batch_slice), self.model.tower_name)

    def tokens_to_residual_directions(self, target: TextLike) -> torch.Tensor:
        return self.model.tokens_to_residual_directions(target)

    def logit_attrs(self, residual_stack: torch.Tensor, text: TextLike, incorrect_text: Optional[TextLike] = None,
                    pos_slice=None, batch_slice=None, has_batch_dim: bool = True) -> torch.Tensor:
        """Direct attribution of each component of `residual_stack` [n, (batch,) (pos,) d_model] to
        the joint-space target: its contribution to `final_ln(resid) @ proj . text` (or the
        difference text - incorrect_text), with the final LayerNorm's cached scale. `text`: a
        prompt, a list (one per batch item) or a joint-space tensor [embed_dim] / [batch, embed_dim].
        For the vision tower's image embedding take pos_slice=0 (the class token) where pool_type is
        "tok". Summed over a full decomposition (decompose_resid or get_full_resid_decomposition,
        which include the biases), plus `final_ln.b @ proj . text`, it gives the embedding's score."""
        directions = self.model.tokens_to_residual_directions(text)
        if incorrect_text is not None:
            directions = directions - self.model.tokens_to_residual_directions(incorrect_text)
        if not isinstance(pos_slice, Slice):
            pos_slice = Slice(pos_slice)
        if not isinstance(batch_slice, Slice):
            batch_slice = Slice(batch_slice)
        scaled = self.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim)
        if directions.ndim == 2 and has_batch_dim and scaled.ndim == 4:
            directions = directions[:, None]  # [batch, 1, d]: per batch item, over positions
        return (scaled * directions.to(scaled.dtype)).sum(dim=-1)


class CLIPActivationCache(ActivationCache):
    """`HookedCLIP.run_with_cache`'s cache: every tower's entries; short keys and the analysis
    methods act on the vision tower (or `tower="text"`); `cache.visual` / `cache.text` are the
    per-tower caches."""

    def __init__(self, cache_dict: dict, model, has_batch_dim: bool = True):
        super().__init__(cache_dict, model, has_batch_dim)
        self.clip_model = model

    def __repr__(self) -> str:
        return f"CLIPActivationCache with keys {list(self.cache_dict.keys())}"

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, str):
            if key in self.cache_dict:
                return self.cache_dict[key]
            return self.cache_dict[self._full(tl_utils.get_act_name(key))]
        key = tuple(key)
        if len(key) > 1 and key[1] is not None and key[1] < 0:
            key = (key[0], self.clip_model.cfg.vision.n_layers + key[1], *key[2:])
        return self.cache_dict[self._full(tl_utils.get_act_name(*key))]

    def _full(self, name: str) -> str:
        full = resolve_name(self.clip_model, name, "visual")
        if full not in self.cache_dict:
            raise KeyError(f"{name!r} (as {full!r}) is not in this cache; cached: {list(self.cache_dict)[:5]}...")
        return full

    def apply_slice_to_batch_dim(self, batch_slice) -> "CLIPActivationCache":
        sliced = super().apply_slice_to_batch_dim(batch_slice)
        return CLIPActivationCache(sliced.cache_dict, self.clip_model, sliced.has_batch_dim)

    def to(self, device) -> "CLIPActivationCache":
        super().to(device)
        return self

    @property
    def visual(self) -> TowerActivationCache:
        """The vision tower's cache (keys without `visual.`)."""
        return TowerActivationCache(self, "visual")

    @property
    def text(self) -> TowerActivationCache:
        """The text tower's cache (keys without `text.`)."""
        return TowerActivationCache(self, "text")

    def tower(self, name: TowerName) -> TowerActivationCache:
        if name not in TOWERS:
            raise ValueError(f"unknown tower {name!r}; expected one of {TOWERS}")
        return TowerActivationCache(self, name)


def _delegate(method: str):
    def call(self, *args, tower: TowerName = "visual", **kwargs):
        return getattr(self.tower(tower), method)(*args, **kwargs)

    call.__name__ = method
    call.__doc__ = (f"`{method}` of one tower (default the vision tower; `tower=\"text\"` for the text tower), "
                    f"with TransformerLens's signature; see TowerActivationCache.")
    return call


for _m in ANALYSIS_METHODS:
    setattr(CLIPActivationCache, _m, _delegate(_m))
