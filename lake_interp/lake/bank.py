"""The normality bank: support patch tokens restricted to the selected neurons, and NN distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, distance: str = "cosine", chunk: int = 4096) -> torch.Tensor:
    """Distance of each query to its nearest bank row.

    queries: [B, P, K]; bank: [M, K] -> [B, P]. cosine: 1 - max cosine similarity; euclidean: min L2.
    """
    b, p, k = queries.shape
    q = queries.reshape(b * p, k).float()
    bank = bank.float()
    if distance == "cosine":
        q, bank = F.normalize(q, dim=-1), F.normalize(bank, dim=-1)
    out = []
    traced = torch.jit.is_tracing()  # ONNX export (lake.onnx_export): one block, or the graph would fix the batch
    for start in (0,) if traced else range(0, q.shape[0], chunk):  # bounds memory at chunk x M
        part = q if traced else q[start : start + chunk]
        if distance == "cosine":
            out.append(1.0 - (part @ bank.T).amax(dim=-1))
        else:
            out.append(torch.cdist(part, bank).amin(dim=-1))
    return torch.cat(out).reshape(b, p)
