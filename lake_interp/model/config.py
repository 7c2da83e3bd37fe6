"""Plain-data configs of a HookedCLIP, read off an open_clip model by `convert.config_from_open_clip`.

Each tower's config also reads as a TransformerLens `HookedTransformerConfig` would
(`model.cfg.vision.n_layers`, `.d_model`, `.n_heads`, `.d_head`, `.d_mlp`, `.act_fn`, `.n_ctx`,
`.normalization_type`, ...), so TransformerLens code written against `model.cfg` runs on a tower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]
# TransformerLens names of the activations (quick_gelu has none there: x * sigmoid(1.702 x))
TL_ACT_FN = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu"}


class _TransformerLensView:
    """TransformerLens `HookedTransformerConfig` field names for a tower config."""

    block: "BlockConfig"
    n_layers: int

    d_model = property(lambda self: self.block.d_model)
    n_heads = property(lambda self: self.block.n_heads)
    d_head = property(lambda self: self.block.d_head)
    d_mlp = property(lambda self: self.block.d_mlp)
    act_fn = property(lambda self: TL_ACT_FN[self.block.act])
    eps = property(lambda self: self.block.ln_eps)
    normalization_type = "LN"  # LayerNorm with weight and bias everywhere (nothing folded)
    final_rms = False
    attn_only = False
    parallel_attn_mlp = False
    positional_embedding_type = "standard"  # learned absolute positions
    use_attn_result = False
    n_key_value_heads = None
    default_prepend_bos = False


@dataclass(frozen=True)
class BlockConfig:
    """One residual attention block, as open_clip's `ResidualAttentionBlock`."""

    d_model: int
    n_heads: int
    d_mlp: int
    act: Activation = "gelu"
    ln_eps: float = 1e-5
    layer_scale: bool = False  # open_clip `ls_init_value` set: LayerScale after attn and MLP

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class VisionConfig(_TransformerLensView):
    block: BlockConfig
    n_layers: int
    image_size: int
    patch_size: int
    output_dim: int
    ln_pre: bool = True  # False for open_clip `no_ln_pre`
    pool_type: Literal["tok", "avg"] = "tok"
    final_ln_after_pool: bool = False
    # tokens before the patches (open_clip: the class token; timm towers may add register tokens or
    # have no class token): every tool skips `n_prefix` positions to reach the patch grid
    n_prefix: int = 1

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_ctx(self) -> int:
        """Tokens: `n_prefix` prefix tokens (the class token), then grid_size ** 2 patches."""
        return self.grid_size**2 + self.n_prefix

    @property
    def d_vocab(self) -> int:
        """No vocabulary: the patch embedding reads 3 * patch_size ** 2 pixel values."""
        return 3 * self.patch_size**2

    original_architecture = "open_clip.VisionTransformer"


@dataclass(frozen=True)
class TextConfig(_TransformerLensView):
    block: BlockConfig
    n_layers: int
    context_length: int
    vocab_size: int
    output_dim: int
    causal_mask: bool = True  # False for open_clip `no_causal_mask`
    pool_type: Literal["argmax", "last", "first", "eos"] = "argmax"
    eos_id: int = 2
    projection: Literal["param", "linear", "linear_bias", "none"] = "param"

    n_ctx = property(lambda self: self.context_length)
    d_vocab = property(lambda self: self.vocab_size)
    original_architecture = "open_clip.TextTransformer"


@dataclass(frozen=True)
class HookedCLIPConfig:
    vision: VisionConfig
    text: TextConfig
    logit_bias: bool = False  # SigLIP-style bias on the logits
    name: Optional[str] = field(default=None, compare=False)

    # TransformerLens fields of the default tower (vision), for TransformerLens code that reads
    # `model.cfg` (e.g. `transformer_lens.patching`); each tower's own: `cfg.vision`, `cfg.text`.
    n_layers = property(lambda self: self.vision.n_layers)
    d_model = property(lambda self: self.vision.d_model)
    n_heads = property(lambda self: self.vision.n_heads)
    d_head = property(lambda self: self.vision.d_head)
    d_mlp = property(lambda self: self.vision.d_mlp)
    n_ctx = property(lambda self: self.vision.n_ctx)
    act_fn = property(lambda self: self.vision.act_fn)
    normalization_type = "LN"
    n_key_value_heads = None
    attn_only = False
    device = None  # TransformerLens utilities allocate their result tensors here (None: the CPU)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HookedCLIPConfig":
        vision = dict(d["vision"], block=BlockConfig(**d["vision"]["block"]))
        text = dict(d["text"], block=BlockConfig(**d["text"]["block"]))
        return cls(
            vision=VisionConfig(**vision),
            text=TextConfig(**text),
            logit_bias=d.get("logit_bias", False),
            name=d.get("name"),
        )
