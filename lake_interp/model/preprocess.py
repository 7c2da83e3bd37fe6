"""The package's one image preprocessing: squash to the model input, no crop.

`SquashPreprocess(size, mean, std)(pil_image) -> [3, size, size]` float32: resized to size x size
without cropping (bicubic, PIL), scaled to [0, 1], normalised with the model's mean and std. The
whole image is seen, whatever its aspect ratio, so a map resized back to the image's size lines up
with it. Equal to open_clip's eval transform with `resize_mode="squash"` and bicubic interpolation.
`HookedCLIP.preprocess` is one; LAKE and every tool preprocess through it. open_clip's own eval
transform (for most models: shortest-side resize and centre crop) is `HookedCLIP.open_clip_preprocess`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


class SquashPreprocess:
    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size, self.mean, self.std = int(size), tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return f"SquashPreprocess(size={self.size}, mean={self.mean}, std={self.std}; bicubic, no crop)"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"preprocess takes a PIL image, got {type(image).__name__} (the lake_interp tools also "
                            "take paths and arrays)")
        if image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image.resize((self.size, self.size), Image.BICUBIC), dtype=np.float32) / 255.0
        x = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std
