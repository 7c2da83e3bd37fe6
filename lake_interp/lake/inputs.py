"""Turn what users pass (tensors, PIL images, paths, Samples) into a model-ready batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_pil(item: Any) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        from lake_interp.data.io import load_rgb

        return load_rgb(Path(item))
    if hasattr(item, "image"):  # a data.Sample
        return item.image
    if isinstance(item, np.ndarray):
        return Image.fromarray(item).convert("RGB")
    raise TypeError(f"cannot read an image from {type(item).__name__}; expected a PIL image, path, Sample or tensor")


def is_single_image(item: Any) -> bool:
    """One image (PIL, path, Sample, [H, W(, C)] array) rather than a collection of them."""
    if isinstance(item, (Image.Image, str, Path)) or hasattr(item, "image"):
        return True
    return isinstance(item, np.ndarray) and item.ndim in (2, 3) and (item.ndim == 2 or item.shape[-1] in (1, 3, 4))


def image_sources(images: Any) -> Optional[list[Optional[str]]]:
    """The file each image came from (Samples and paths; None for one held in memory), or None for a
    tensor batch. Reads nothing: for provenance records (which support images a detector saw)."""
    if isinstance(images, torch.Tensor):
        return None
    items = [images] if is_single_image(images) else list(images)
    return [str(it) if isinstance(it, (str, Path)) else (str(it.path) if getattr(it, "path", None) else None)
            for it in items]


def to_batch(images: Any, model) -> torch.Tensor:
    """[B, 3, S, S] on the model's device and dtype, S = model.image_size.

    A tensor (or a list of them) is taken as already preprocessed ([3, S, S] or [B, 3, S, S]). Anything else is
    resized to S x S without cropping (the whole image is scored, whatever its aspect ratio),
    bicubic, then normalised with the model's mean and std.
    """
    size = model.image_size
    if isinstance(images, torch.Tensor):
        batch = images[None] if images.ndim == 3 else images
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[-2:]) != (size, size):
            raise ValueError(f"image tensor of shape {tuple(images.shape)}; expected [B, 3, {size}, {size}]")
        return batch.to(model.device, model.dtype)
    images = [images] if is_single_image(images) else list(images)
    if not images:
        raise ValueError("no images given")
    if all(isinstance(im, torch.Tensor) for im in images):  # a list of preprocessed [3, S, S] tensors
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"image tensors of different shapes {sorted(shapes)}; expected [3, {size}, {size}] each")
        return to_batch(torch.stack(images), model)
    arrays = [np.asarray(to_pil(im).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for im in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    mean = torch.tensor(model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.image_std).view(1, 3, 1, 1)
    return ((batch - mean) / std).to(model.device, model.dtype)


def resize_mask(mask: Any, size: int) -> np.ndarray:
    """One mask [H, W] (bool or 0/255; None: normal, all False) to [size, size] bool, nearest."""
    if mask is None:
        return np.zeros((size, size), bool)
    m = np.asarray(mask)
    if m.shape == (size, size):
        return m.astype(bool)
    return np.asarray(Image.fromarray(m.astype(bool).astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0


def resize_map(m: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """One map [S, S] back to an original image size [height, width], bilinear."""
    t = torch.as_tensor(m, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
