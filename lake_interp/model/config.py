"""Plain-data configs of a HookedCLIP, read off an open_clip model by `convert.config_from_open_clip`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]


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
class VisionConfig:
    block: BlockConfig
    n_layers: int
    image_size: int
    patch_size: int
    output_dim: int
    ln_pre: bool = True  # False for open_clip `no_ln_pre`
    pool_type: Literal["tok", "avg"] = "tok"
    final_ln_after_pool: bool = False

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    block: BlockConfig
    n_layers: int
    context_length: int
    vocab_size: int
    output_dim: int
    causal_mask: bool = True  # False for open_clip `no_causal_mask`
    pool_type: Literal["argmax", "last", "first", "eos"] = "argmax"
    eos_id: int = 2
    projection: Literal["param", "linear", "linear_bias", "none"] = "param"


@dataclass(frozen=True)
class HookedCLIPConfig:
    vision: VisionConfig
    text: TextConfig
    logit_bias: bool = False  # SigLIP-style bias on the logits
    name: Optional[str] = field(default=None, compare=False)

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
