"""Plain-data configs of a HookedCLIP, read off an open_clip model by `convert.config_from_open_clip`.

Each tower's config also reads as a TransformerLens `HookedTransformerConfig` would
(`model.cfg.vision.n_layers`, `.d_model`, `.n_heads`, `.d_head`, `.d_mlp`, `.act_fn`, `.n_ctx`,
`.normalization_type`, ...), so TransformerLens code written against `model.cfg` runs on a tower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

Activation = Literal["gelu", "gelu_tanh", "quick_gelu", "silu"]
# Which tower class a VisionConfig builds (components.towers.make_vision_tower):
#   "open_clip": open_clip's own VisionTransformer (components/vision.py)
#   "timm_vit":  timm VisionTransformer, as open_clip's TimmModel wraps it or bare (components/timm_vit.py)
#   "timm_eva":  timm Eva (EVA02, PE-Core: rotary positions, SwiGLU) (components/eva.py)
Family = Literal["open_clip", "timm_vit", "timm_eva"]
# TransformerLens names of the activations (quick_gelu has none there: x * sigmoid(1.702 x))
TL_ACT_FN = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu", "silu": "silu"}


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
    qkv_bias: bool = True  # timm qkv_bias=False: no bias on queries, keys and values
    qk_norm: bool = False  # timm qk_norm: LayerNorm over d_head of queries and keys (hook_q / hook_k after it)

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
    ln_pre: bool = True  # False for open_clip `no_ln_pre` (timm: norm_pre present)
    # "tok": the class token; "avg": mean of the patch tokens; "map": timm's attention pool (SigLIP's MAP head)
    pool_type: Literal["tok", "avg", "map"] = "tok"
    final_ln_after_pool: bool = False
    # tokens before the patches (open_clip: the class token; timm towers may add register tokens or
    # have no class token): every tool skips `n_prefix` positions to reach the patch grid
    n_prefix: int = 1
    family: Family = "open_clip"
    class_token: bool = True  # position 0 is a class token; the other prefix tokens are registers
    patch_bias: bool = False  # the patch embedding (conv1) has a bias (timm)
    pos_embed_prefix: bool = True  # positions cover the prefix tokens too (timm no_embed_class=False)
    ln_post: bool = True  # timm: `norm` (per token, before pooling) present
    fc_norm: bool = False  # timm `fc_norm`: LayerNorm after pooling
    # into the joint space: "param" open_clip's proj matrix; "linear"/"linear_bias" a Linear (timm
    # trunk head or open_clip's TimmModel head proj); "none" the pooled vector is the embedding
    projection: Literal["param", "linear", "linear_bias", "none"] = "param"
    attn_pool_heads: int = 0  # pool_type "map": heads of the attention pool
    attn_pool_d_mlp: int = 0  # pool_type "map": hidden width of the attention pool's MLP
    # family-specific settings (JSON values), e.g. the rotary embedding of "timm_eva" towers
    options: dict = field(default_factory=dict)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_ctx(self) -> int:
        """Tokens: `n_prefix` prefix tokens (the class token), then grid_size ** 2 patches."""
        return self.grid_size**2 + self.n_prefix

    @property
    def n_registers(self) -> int:
        """Register tokens: the prefix tokens after the class token (or all of them without one)."""
        return self.n_prefix - int(self.class_token)

    @property
    def d_vocab(self) -> int:
        """No vocabulary: the patch embedding reads 3 * patch_size ** 2 pixel values."""
        return 3 * self.patch_size**2

    @property
    def original_architecture(self) -> str:
        return {"open_clip": "open_clip.VisionTransformer", "timm_vit": "timm.VisionTransformer",
                "timm_eva": "timm.Eva"}[self.family]


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
    text: Optional[TextConfig]  # None: a vision-only model (HookedViT, e.g. DINOv2)
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
        text = None if d.get("text") is None else TextConfig(**dict(d["text"], block=BlockConfig(**d["text"]["block"])))
        return cls(
            vision=VisionConfig(**vision),
            text=text,
            logit_bias=d.get("logit_bias", False),
            name=d.get("name"),
        )
