"""The one registry of HookedCLIP hook sites: names, shapes, channel widths, parsing, checks.

A hook name is `{tower}.{site}` for tower-level sites (`visual.hook_embed`) and
`{tower}.blocks.{block}.{site}` for block sites (`visual.blocks.3.mlp.hook_post`); tower is
`visual` or `text`. Every tool that builds, parses or checks hook names or channel indices uses
the functions here (no hand-written `split(".")` elsewhere).

Short TransformerLens names (`blocks.3.hook_resid_post`, `hook_embed`, what
`transformer_lens.utils.get_act_name("resid_post", 3)` gives) resolve in the vision tower by
default (`resolve_name`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Optional

TOWERS = ("visual", "text")


@dataclass(frozen=True)
class Site:
    """One kind of hook point. `width` names the config field of the last axis when that axis is
    a channel ("neuron") axis of a [batch, pos, width] activation, else None."""

    name: str
    shape: str
    width: Optional[str]
    doc: str


# Block sites in forward order. Shapes per the TransformerLens conventions.
BLOCK_SITES: dict[str, Site] = {s.name: s for s in (
    Site("hook_resid_pre", "[batch, pos, d_model]", "d_model", "residual stream entering the block"),
    Site("ln1.hook_scale", "[batch, pos, 1]", None, "sqrt(var + eps) of ln1's input"),
    Site("ln1.hook_normalized", "[batch, pos, d_model]", "d_model", "ln1: (x - mean) / scale, before weight and bias"),
    Site("ln1.hook_out", "[batch, pos, d_model]", "d_model", "ln1 output (after weight and bias): attention's input"),
    Site("attn.hook_q", "[batch, pos, head, d_head]", None, "queries"),
    Site("attn.hook_k", "[batch, pos, head, d_head]", None, "keys"),
    Site("attn.hook_v", "[batch, pos, head, d_head]", None, "values"),
    # rotary towers (timm Eva): queries and keys after the rotary embedding (TransformerLens names)
    Site("attn.hook_rot_q", "[batch, pos, head, d_head]", None, "queries after rotary (rotary towers only)"),
    Site("attn.hook_rot_k", "[batch, pos, head, d_head]", None, "keys after rotary (rotary towers only)"),
    Site("attn.hook_attn_scores", "[batch, head, query_pos, key_pos]", None, "scaled scores, mask added"),
    Site("attn.hook_pattern", "[batch, head, query_pos, key_pos]", None, "softmax of the scores"),
    Site("attn.hook_z", "[batch, pos, head, d_head]", None, "pattern-weighted values"),
    # timm Eva `attn.norm` (sub-LayerNorm of the concatenated heads before the output projection)
    Site("attn.ln.hook_scale", "[batch, pos, 1]", None, "sqrt(var + eps) of the heads' output (Eva sub-LN)"),
    Site("attn.ln.hook_normalized", "[batch, pos, d_model]", None, "heads' output normalised (Eva sub-LN)"),
    Site("attn.ln.hook_out", "[batch, pos, d_model]", None, "heads' output after the sub-LN (Eva)"),
    Site("hook_attn_out", "[batch, pos, d_model]", "d_model", "what attention adds to the stream (after LayerScale)"),
    Site("hook_resid_mid", "[batch, pos, d_model]", "d_model", "residual stream between attention and MLP"),
    Site("ln2.hook_scale", "[batch, pos, 1]", None, "sqrt(var + eps) of ln2's input"),
    Site("ln2.hook_normalized", "[batch, pos, d_model]", "d_model", "ln2: (x - mean) / scale, before weight and bias"),
    Site("ln2.hook_out", "[batch, pos, d_model]", "d_model", "ln2 output (after weight and bias): the MLP's input"),
    Site("mlp.hook_pre", "[batch, pos, d_mlp]", "d_mlp", "MLP hidden units before the activation (SwiGLU: the gate)"),
    Site("mlp.hook_pre_linear", "[batch, pos, d_mlp]", "d_mlp", "SwiGLU MLPs only: the linear (ungated) branch"),
    Site("mlp.hook_mid", "[batch, pos, d_mlp]", "d_mlp", "SwiGLU MLPs only: act(gate) * linear, before a sub-LN"),
    # timm Eva `mlp.norm` (sub-LayerNorm of the hidden units before the output projection)
    Site("mlp.ln.hook_scale", "[batch, pos, 1]", None, "sqrt(var + eps) of the hidden units (Eva sub-LN)"),
    Site("mlp.ln.hook_normalized", "[batch, pos, d_mlp]", "d_mlp", "hidden units normalised (Eva sub-LN)"),
    Site("mlp.ln.hook_out", "[batch, pos, d_mlp]", "d_mlp", "hidden units after the sub-LN (Eva; = mlp.hook_post)"),
    # always what the output projection reads, so zeroing unit i here is zeroing W_out[i] (TransformerLens's
    # hook_post after its SoLU LayerNorm); SwiGLU: act(gate) * linear, after the sub-LN where there is one
    Site("mlp.hook_post", "[batch, pos, d_mlp]", "d_mlp",
         "MLP hidden units after the activation: the MLP neurons, what c_proj reads (SwiGLU: gated, after any sub-LN)"),
    Site("hook_mlp_out", "[batch, pos, d_model]", "d_model", "what the MLP adds to the stream (after LayerScale)"),
    Site("hook_resid_post", "[batch, pos, d_model]", "d_model", "residual stream leaving the block"),
)}

# Tower-level sites, before and after the blocks (those a config lacks are absent from the model).
TOWER_SITES: dict[str, dict[str, Site]] = {
    "visual": {s.name: s for s in (
        Site("hook_embed", "[batch, pos, d_model]", "d_model", "class + patch tokens + positions (before ln_pre)"),
        Site("ln_pre.hook_scale", "[batch, pos, 1]", None, "absent with no_ln_pre"),
        Site("ln_pre.hook_normalized", "[batch, pos, d_model]", "d_model", "before weight and bias"),
        Site("ln_pre.hook_out", "[batch, pos, d_model]", "d_model", "what enters block 0"),
        Site("ln_post.hook_scale", "[batch, pos, 1]", None, "[batch, 1] with final_ln_after_pool"),
        Site("ln_post.hook_normalized", "[batch, pos, d_model]", None, "[batch, d_model] with final_ln_after_pool"),
        Site("ln_post.hook_out", "[batch, pos, d_model]", None, "[batch, d_model] with final_ln_after_pool"),
        # timm's attention pool (SigLIP's MAP head; pool_type "map"): one latent query over the tokens
        Site("attn_pool.hook_pattern", "[batch, head, latent, pos]", None, "the latent query's attention over the tokens"),
        Site("attn_pool.hook_out", "[batch, d_model]", None, "the attention pool's output (after its MLP)"),
        Site("fc_norm.hook_scale", "[batch, 1]", None, "timm fc_norm (after pooling)"),
        Site("fc_norm.hook_normalized", "[batch, d_model]", None, "timm fc_norm, before weight and bias"),
        Site("fc_norm.hook_out", "[batch, d_model]", None, "timm fc_norm output"),
        Site("hook_pooled", "[batch, d_model]", None, "pooled vector: after ln_post (and attn_pool / fc_norm where present)"),
        Site("hook_image_embed", "[batch, embed_dim]", None, "after the projection (the pooled vector where there is none)"),
    )},
    "text": {s.name: s for s in (
        Site("hook_embed", "[batch, ctx, d_model]", "d_model", "tokens + positions"),
        Site("ln_final.hook_scale", "[batch, ctx, 1]", None, ""),
        Site("ln_final.hook_normalized", "[batch, ctx, d_model]", "d_model", "before weight and bias"),
        Site("ln_final.hook_out", "[batch, ctx, d_model]", "d_model", ""),
        Site("hook_pooled", "[batch, d_model]", None, "pooled token after ln_final"),
        Site("hook_text_embed", "[batch, embed_dim]", None, "after the projection"),
    )},
}

# Block sites with a channel axis ("neurons" LAKE and the interp tools can select).
NEURON_SITES = tuple(name for name, s in BLOCK_SITES.items() if s.width is not None)
RESIDUAL_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")

_BLOCK_RE = re.compile(r"^(visual|text)\.blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HookName:
    """A parsed hook name: tower, block index (None for tower-level sites) and site."""

    tower: str
    block: Optional[int]
    site: str

    @property
    def name(self) -> str:
        return hook_name(self.tower, self.block, self.site)

    @property
    def spec(self) -> Site:
        return BLOCK_SITES[self.site] if self.block is not None else TOWER_SITES[self.tower][self.site]

    @property
    def label(self) -> str:
        """Short label for plots: visual.blocks.3.hook_resid_post -> 'L3.hook_resid_post'."""
        if self.block is None:
            return self.name if self.tower != "visual" else self.site
        return (f"L{self.block}" if self.tower == "visual" else f"text.L{self.block}") + f".{self.site}"


def hook_name(tower: str, block: Optional[int], site: str) -> str:
    """The full name: ("visual", 3, "mlp.hook_post") -> "visual.blocks.3.mlp.hook_post"."""
    if tower not in TOWERS:
        raise ValueError(f"unknown tower {tower!r}; expected one of {TOWERS}")
    if block is None:
        if site not in TOWER_SITES[tower]:
            raise ValueError(f"unknown {tower} site {site!r}; expected one of {list(TOWER_SITES[tower])}")
        return f"{tower}.{site}"
    if site not in BLOCK_SITES:
        raise ValueError(f"unknown block site {site!r}; expected one of {list(BLOCK_SITES)}")
    return f"{tower}.blocks.{int(block)}.{site}"


def parse_hook_name(name: str) -> HookName:
    """"visual.blocks.3.mlp.hook_post" -> HookName("visual", 3, "mlp.hook_post"); ValueError for
    anything that is not a hook name of this package (whatever the model)."""
    m = _BLOCK_RE.match(name) if isinstance(name, str) else None
    if m:
        tower, block, site = m.group(1), int(m.group(2)), m.group(3)
        if site in BLOCK_SITES:
            return HookName(tower, block, site)
    elif isinstance(name, str) and "." in name:
        tower, site = name.split(".", 1)
        if tower in TOWERS and site in TOWER_SITES[tower]:
            return HookName(tower, None, site)
    raise ValueError(f"{name!r} is not a HookedCLIP hook name: expected e.g. 'visual.blocks.3.hook_resid_post' "
                     f"or 'visual.hook_embed' (model.hook_names() lists them all)")


def block_hook_names(sites: Iterable[str], blocks: Iterable[int], tower: str = "visual") -> list[str]:
    """Every site of every block, block-major: (["hook_resid_post"], [5, 11]) -> visual.blocks.{5,11}..."""
    sites = list(sites)
    return [hook_name(tower, b, s) for b in blocks for s in sites]


def pattern_hook_names(model, tower: str = "visual") -> list[str]:
    """Every attention-pattern hook of a tower (each block's, and the MAP head's where there is one).
    A hook on them makes attention take its explicit softmax path, which forward-mode AD can go
    through (PyTorch has no forward-AD rule for the fused kernel)."""
    n_layers = tower_config(model, tower).n_layers
    names = block_hook_names(["attn.hook_pattern"], range(n_layers), tower)
    pool = f"{tower}.attn_pool.hook_pattern"
    return names + ([pool] if pool in model.hook_dict else [])


def tower_config(model, tower: str):
    return model.cfg.vision if tower == "visual" else model.cfg.text


def channel_width(model, name: str) -> Optional[int]:
    """Width of the channel axis of a [batch, pos, d] hook, None for hooks without one."""
    h = parse_hook_name(name)
    width = h.spec.width
    return None if width is None else getattr(tower_config(model, h.tower).block, width)


def channel_widths(model, tower: str = "visual") -> dict[str, int]:
    """Every block hook of `tower` that has a channel axis -> its width."""
    out = {}
    for name in model.hook_dict:
        if name.startswith(f"{tower}.blocks."):
            width = channel_width(model, name)
            if width is not None:
                out[name] = width
    return out


def check_hook_names(model, names: Iterable) -> None:
    """ValueError naming the first unknown hook name (with the closest known ones)."""
    for name in names:
        if isinstance(name, str) and name not in model.hook_dict:
            close = difflib.get_close_matches(name, list(model.hook_dict), n=3, cutoff=0.6)
            raise ValueError(f"unknown hook name {name!r}; did you mean {close or list(model.hook_dict)[:3]}? "
                             f"(model.hook_names() lists them all)")


def check_channels(model, name: str, channels) -> None:
    """ValueError when `name` is unknown, has no channel axis, or a channel is out of its range."""
    check_hook_names(model, [name])
    width = channel_width(model, name)
    if width is None:
        raise ValueError(f"hook {name!r} has no neuron axis; use a [batch, pos, d] hook such as hook_resid_post "
                         f"or mlp.hook_post (sites with one: {NEURON_SITES})")
    channels = [int(c) for c in channels]
    bad = [c for c in channels if not 0 <= c < width]
    if bad:
        raise ValueError(f"channel {bad[0]} out of range for {name} (width {width}: channels 0..{width - 1})")


def resolve_name(model, name: str, tower: str = "visual") -> str:
    """A full hook name for `name`: full names as they are; short TransformerLens names
    (`blocks.3.hook_resid_post`, `hook_embed`, `ln_final.hook_scale`) in `tower` (default vision).
    In the vision tower `ln_final.*` means `ln_post.*`. Names that resolve to nothing are returned
    unchanged (the caller's check names them)."""
    if not isinstance(name, str) or name in model.hook_dict:
        return name
    if tower not in TOWERS:
        raise ValueError(f"unknown tower {tower!r}; expected one of {TOWERS}")
    short = name
    if tower == "visual" and short.startswith("ln_final."):
        short = "ln_post." + short[len("ln_final."):]
    full = f"{tower}.{short}"
    return full if full in model.hook_dict else name


def hook_label(name: str) -> str:
    """Short label for plots: 'visual.blocks.3.hook_resid_post' -> 'L3.hook_resid_post' (text
    blocks 'text.L3...'); a name that is not a hook name is returned as it is."""
    try:
        return parse_hook_name(name).label
    except ValueError:
        return name
