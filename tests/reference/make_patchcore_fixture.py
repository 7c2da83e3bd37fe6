"""Record anomalib 2.x's PatchCore scoring code on seeded random feature maps (tests/test_patchcore.py).

Run with the reference venv (anomalib is never installed into the project's own venv):

    refvenv/bin/python tests/reference/make_patchcore_fixture.py

Writes tests/reference/patchcore_anomalib.safetensors (tensors) and patchcore_anomalib.json
(versions, seeds, shapes, settings). What is recorded, all computed by anomalib's own code:

- `PatchcoreModel.forward` in training mode (the feature extractor replaced by a stub that returns
  the given feature maps): `AvgPool2d(3, 1, 1)` locally aware aggregation, `generate_embedding`
  (second layer resized bilinearly to the first layer's grid, concatenated), `reshape_embedding`:
  the embeddings it stores, i.e. the memory bank before the coreset (`support_embedding`);
- `KCenterGreedy(bank, ratio).select_coreset_idxs()` after `torch.manual_seed(seed)` and
  `np.random.seed(seed)`: the indices and the sparse random projection matrix it drew (its first
  index is the random start); a second, larger bank is sampled the same way;
- `PatchcoreModel.forward` in eval mode on the test maps, with the coreset bank and with the full
  bank, for num_neighbors 1, 3 and 9: `pred_score` (nearest neighbour + `compute_anomaly_score`
  re-weighting), `anomaly_map` (`AnomalyMapGenerator`: nearest upsampling to the input size,
  Gaussian blur sigma 4) and the patch scores / locations of `nearest_neighbors`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import anomalib
from anomalib.models.components import KCenterGreedy
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

HERE = Path(__file__).resolve().parent
SEED = 0  # feature tensors
CORESET_SEED = 3
CORESET_RATIO = 0.25
LARGE_BANK = (200, 192)  # second coreset check: [N, D], D above the projection dimension (130)
LARGE_RATIO = 0.1
INPUT_SIZE = 56  # the "image" side the maps are upsampled to
LAYERS = ("layer2", "layer3")
NUM_NEIGHBORS = (1, 3, 9)


class StubExtractor(torch.nn.Module):
    """Stands in for TimmFeatureExtractor: returns the feature maps it was given, whatever the input."""

    def __init__(self):
        super().__init__()
        self.features: dict[str, torch.Tensor] = {}

    def forward(self, inputs):
        return dict(self.features)


def record(seed: int = SEED, coreset_seed: int = CORESET_SEED) -> tuple[dict[str, torch.Tensor], dict]:
    """anomalib's outputs on feature maps drawn with `seed` (tests/test_patchcore.py calls this live
    where anomalib is importable): (tensors, coreset facts)."""
    g = torch.Generator().manual_seed(seed)
    # two "layers" as a CNN gives them: the second at half the resolution (ViT blocks share one grid)
    support = {"layer2": torch.randn(2, 12, 7, 7, generator=g), "layer3": torch.randn(2, 20, 4, 4, generator=g)}
    test = {"layer2": torch.randn(3, 12, 7, 7, generator=g), "layer3": torch.randn(3, 20, 4, 4, generator=g)}
    test["layer2"][1, :, 2:4, 3:5] += 3.0  # an "anomalous" region in test image 1
    large_bank = torch.randn(*LARGE_BANK, generator=g)

    model = PatchcoreModel(layers=list(LAYERS), backbone="resnet18", pre_trained=False, num_neighbors=9)
    stub = StubExtractor()
    model.feature_extractor = stub

    out: dict[str, torch.Tensor] = {}
    for name, feats in (("support", support), ("test", test)):
        for layer in LAYERS:
            out[f"{name}.{layer}"] = feats[layer]
    out["large_bank"] = large_bank

    # pieces, called directly
    pooled = {layer: model.feature_pooler(f) for layer, f in test.items()}
    for layer in LAYERS:
        out[f"test.pooled.{layer}"] = pooled[layer]
    out["test.embedding"] = model.reshape_embedding(model.generate_embedding(pooled))  # [B*H*W, D]

    # training forward: the memory bank
    model.train()
    stub.features = support
    with torch.no_grad():
        model(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE))
    full_bank = torch.vstack(model.embedding_store).clone()
    out["support_embedding"] = full_bank

    # coreset: KCenterGreedy as PatchcoreModel.subsample_embedding calls it, seeded
    coresets = {}
    for key, bank, ratio in (("coreset", full_bank, CORESET_RATIO), ("large_coreset", large_bank, LARGE_RATIO)):
        torch.manual_seed(coreset_seed)
        np.random.seed(coreset_seed)
        sampler = KCenterGreedy(embedding=bank, sampling_ratio=ratio)
        idxs = sampler.select_coreset_idxs()
        out[f"{key}.indices"] = torch.tensor(idxs, dtype=torch.int64)
        out[f"{key}.projection"] = sampler.model.sparse_random_matrix.clone()
        coresets[key] = {"ratio": ratio, "n": int(bank.shape[0]), "size": len(idxs),
                         "n_components": int(sampler.model.n_components), "start": int(idxs[0])}
    # the same through subsample_embedding (the path Patchcore.fit takes: embedding_store -> coreset bank)
    torch.manual_seed(coreset_seed)
    np.random.seed(coreset_seed)
    model.subsample_embedding(CORESET_RATIO)
    assert torch.equal(model.memory_bank, full_bank[out["coreset.indices"]]), "subsample_embedding differs"
    coreset_bank = model.memory_bank.clone()

    # eval forward: scores and maps
    model.eval()
    stub.features = test
    x = torch.zeros(3, 3, INPUT_SIZE, INPUT_SIZE)
    for bank_name, bank in (("coreset", coreset_bank), ("full", full_bank)):
        model.memory_bank = bank.clone()
        patch_scores, locations = model.nearest_neighbors(out["test.embedding"], n_neighbors=1)
        out[f"{bank_name}.patch_scores"] = patch_scores.reshape(3, 7, 7)
        out[f"{bank_name}.locations"] = locations.reshape(3, 7, 7)
        for k in NUM_NEIGHBORS:
            model.num_neighbors = k
            with torch.no_grad():
                res = model(x)
            out[f"{bank_name}.nn{k}.pred_score"] = res.pred_score.reshape(-1)
            out[f"{bank_name}.nn{k}.anomaly_map"] = res.anomaly_map.reshape(3, INPUT_SIZE, INPUT_SIZE)

    return {k: v.contiguous() for k, v in out.items()}, coresets


def main() -> None:
    out, coresets = record()
    save_file(out, str(HERE / "patchcore_anomalib.safetensors"))
    meta = {
        "what": "anomalib PatchcoreModel / KCenterGreedy outputs on seeded random feature maps",
        "command": "refvenv/bin/python tests/reference/make_patchcore_fixture.py",
        "versions": {"anomalib": anomalib.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "seeds": {"features": SEED, "coreset": CORESET_SEED},
        "layers": list(LAYERS), "input_size": INPUT_SIZE, "num_neighbors": list(NUM_NEIGHBORS),
        "coresets": coresets,
        "blur": {"sigma": 4, "kernel_size": 33, "border": "reflect", "upsample": "nearest"},
        "tensors": {k: list(v.shape) for k, v in out.items()},
    }
    (HERE / "patchcore_anomalib.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: meta[k] for k in ("versions", "coresets")}, indent=2))


if __name__ == "__main__":
    main()
