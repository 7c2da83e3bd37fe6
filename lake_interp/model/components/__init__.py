"""Model components, one per module, each with its hook points (TransformerLens style)."""

from lake_interp.model.components.attention import Attention
from lake_interp.model.components.block import TransformerBlock
from lake_interp.model.components.layer_norm import LayerNorm
from lake_interp.model.components.mlp import MLP
from lake_interp.model.components.text import TextTower
from lake_interp.model.components.timm_vit import TimmViTTower
from lake_interp.model.components.towers import make_vision_tower
from lake_interp.model.components.vision import VisionTower

__all__ = ["Attention", "LayerNorm", "MLP", "TextTower", "TimmViTTower", "TransformerBlock", "VisionTower",
           "make_vision_tower"]
