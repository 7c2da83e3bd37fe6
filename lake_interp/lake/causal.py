"""The causal selection criterion: rank neurons by their attribution to the anomaly score of
pseudo-anomalies made from the normal support images alone (`LakeConfig(criterion="attribution")`).

For every channel of the detector's hooks: the mean, over pseudo-anomalies (stamps, CutPaste
patches, colour shifts of the support images: `lake_interp.data.pseudo`), of the first-order
change of the anomaly score of the pseudo-defect when the channel is replaced by its mean over the
support patches (`lake_interp.interp.attribution.attribute`, mode "mean", one forward and one
backward pass per batch). The score read: the mean, over the pseudo-defect's mask, of the visual
map of nearest neighbour on all channels of the detector's hooks (bank: the clean support, no text
branch, the detector's distance and smoothing). A channel thus counts by what it contributes to
the pseudo-defect's distance from the normal bank, directly (it is one of the channels the
distance reads) and through the later blocks; a channel that is nearly constant on normal images
but moves on a defect scores high, where the variance criterion ranks it low. Training-free: no
real anomaly, no learned weights; deterministic for `LakeConfig.seed` (the pseudo-anomalies' seed).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lake_interp.data.pseudo import KINDS, pseudo_anomalies
from lake_interp.model.hook_sites import channel_width


def _model_size_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """[H, W] bool -> [size, size] bool: every model pixel that the defect touches (area pooling > 0,
    so a thin defect is not lost in a downscale)."""
    t = torch.from_numpy(np.asarray(mask, bool).astype(np.float32))[None, None]
    return (F.interpolate(t, size=(size, size), mode="area")[0, 0] > 0).numpy() if t.shape[-1] != size or \
        t.shape[-2] != size else np.asarray(mask, bool)


def attribution_criterion_scores(lake, support: Any, kinds: Sequence[str] = KINDS, per_image: int = 1,
                                 acts: Optional[dict] = None) -> dict:
    """hook -> [d] scores (higher: raises the pseudo-defects' anomaly score more) for every hook of `lake`.
    acts: the support's patch activations at `lake.hooks` (hook -> [N, P, d]) where the caller has them
    (`Lake.fit`): they fit the reader and give the mean reference, so the support is not forwarded again."""
    from lake_interp.interp.attribution import attribute
    from lake_interp.lake.detector import Lake

    support = list(support) if not isinstance(support, torch.Tensor) else support
    if isinstance(support, torch.Tensor):
        raise ValueError("criterion='attribution' makes pseudo-anomalies from the support images: pass images "
                         "(PIL, paths or Samples), not a tensor batch")
    model = lake.model
    pseudo = pseudo_anomalies(support, kinds, per_image, seed=lake.config.seed)
    if acts is None:
        acts = lake.patch_activations(support, list(lake.hooks))  # one forward of the support for both uses
    reader = Lake(model, lake.config.replace(criterion="all", text_weight=0.0, standardize=False),
                  lake.class_name).fit_activations(acts)
    units = [(h, c) for h in lake.hooks for c in range(channel_width(model, h))]
    masks = [_model_size_mask(p.mask, model.image_size) for p in pseudo]
    r = attribute(lake, [p.image for p in pseudo], "region", units, region=masks, mode="mean", reference=acts,
                  readout=reader, bank="fixed", n_maps=0, batch_size=lake.config.batch_size)
    by_unit = dict(zip(r.units, r.mean))
    return {h: torch.tensor([by_unit[(h, c)] for c in range(channel_width(model, h))], dtype=torch.float32)
            for h in lake.hooks}
