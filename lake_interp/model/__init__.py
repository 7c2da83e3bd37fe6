"""HookedCLIP and its pieces."""

from lake_interp.model.config import BlockConfig, HookedCLIPConfig, TextConfig, VisionConfig
from lake_interp.model.hooked_clip import HookedCLIP
from lake_interp.model.hooked_vit import HookedViT
from lake_interp.model.loading import load_open_clip
from lake_interp.model.tokens import patch_grid

__all__ = [
    "BlockConfig",
    "HookedCLIP",
    "HookedCLIPConfig",
    "HookedViT",
    "TextConfig",
    "VisionConfig",
    "load_open_clip",
    "patch_grid",
]
