"""Turn what users pass (tensors, PIL images, paths, Samples) into a model-ready batch."""

from __future__ import annotations

from pathlib import Path
from itertools import islice
from typing import Any, Iterator, Optional

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


def iter_batches(items: Any, batch_size: int) -> Iterator[Any]:
    """Batches of at most `batch_size` items, read lazily: the one batch loop of the package.

    A tensor [B, ...] is sliced ([3, S, S]: one image); any other iterable (list, dataset,
    generator) is consumed one batch at a time and yields lists; a single image is one batch."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(items, torch.Tensor):
        items = items[None] if items.ndim == 3 else items
        for s in range(0, items.shape[0], batch_size):
            yield items[s : s + batch_size]
        return
    it = iter([items] if is_single_image(items) else items)
    while chunk := list(islice(it, batch_size)):
        yield chunk


def preprocess_image(image: Any, model) -> torch.Tensor:
    """One image (PIL, path, Sample, array) -> [3, S, S] float32 on the CPU: the one preprocessing
    of the package, `model.preprocess` (a `lake_interp.model.preprocess.SquashPreprocess`). Squash: resized to S x S without cropping (the whole image is scored, whatever
    its aspect ratio; a map resized back to the image's size lines up with it), bicubic (PIL),
    then scaled to [0, 1] and normalised with the model's mean and std. The same as open_clip's
    eval transform with ``resize_mode="squash"`` (``squash_transform``)."""
    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:  # a model object without one: the same squash from its size, mean and std
        from lake_interp.model.preprocess import SquashPreprocess

        preprocess = SquashPreprocess(model.image_size, model.image_mean, model.image_std)
    return preprocess(to_pil(image))


def squash_transform(model):
    """open_clip's eval transform (``image_transform_v2``) of this model with ``resize_mode="squash"``
    and bicubic interpolation: PIL image -> [3, S, S], equal to ``preprocess_image``."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(size=model.image_size, mean=tuple(model.image_mean), std=tuple(model.image_std),
                        interpolation="bicubic", resize_mode="squash")
    return image_transform_v2(cfg, is_train=False)


def to_batch(images: Any, model) -> torch.Tensor:
    """[B, 3, S, S] on the model's device and dtype, S = model.image_size.

    A tensor (or a list of them) is taken as already preprocessed ([3, S, S] or [B, 3, S, S]). Anything else
    goes through `preprocess_image` (squash to S x S, no crop; bicubic; the model's mean and std).
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
    return torch.stack([preprocess_image(im, model) for im in images]).to(model.device, model.dtype)


def resize_mask(mask: Any, size: int) -> np.ndarray:
    """One mask [H, W] (bool or 0/255; None: normal, all False) to [size, size] bool, nearest
    (`lake_interp.metrics.resize_mask`: the same resize pixel_metrics applies to a list of masks)."""
    from lake_interp.metrics import resize_mask as _resize

    return _resize(mask, size)


def resize_map(m: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """One map [S, S] back to an original image size [height, width], bilinear."""
    t = torch.as_tensor(m, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
