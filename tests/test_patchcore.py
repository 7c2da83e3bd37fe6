"""PatchCore (lake_interp.detectors.patchcore) against anomalib 2.x's own code, and end to end.

The recorded reference (tests/reference/patchcore_anomalib.*) is written by
`refvenv/bin/python tests/reference/make_patchcore_fixture.py`; the "live" variant calls the
same recording code on other random tensors where anomalib is importable (never in the project venv).
"""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lake_interp.data import MVTecAD
from lake_interp.lake.inputs import resize_mask
from lake_interp.metrics import image_metrics, pixel_metrics
from lake_interp.detectors.patchcore import (
    PatchCore, PatchCoreConfig, anomaly_map, combine_layers, euclidean_dist, image_score_reweighted,
    k_center_greedy, locally_aware, nearest_neighbor_scores, sparse_random_projection,
)

REF = Path(__file__).parent / "reference"
TOL = dict(atol=1e-5, rtol=1e-5)


def _recorded():
    return load_file(str(REF / "patchcore_anomalib.safetensors")), json.loads((REF / "patchcore_anomalib.json").read_text())


def _live():
    pytest.importorskip("anomalib")
    spec = importlib.util.spec_from_file_location("make_patchcore_fixture", REF / "make_patchcore_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tensors, coresets = module.record(seed=1, coreset_seed=5)
    return tensors, {"coresets": coresets, "input_size": module.INPUT_SIZE, "num_neighbors": list(module.NUM_NEIGHBORS)}


@pytest.fixture(scope="module", params=["recorded", "live"])
def ref(request):
    return _recorded() if request.param == "recorded" else _live()


def bhwc(t):  # anomalib's [B, C, H, W] -> ours [B, H, W, C]
    return t.permute(0, 2, 3, 1)


def embed(t, name):
    grids = [locally_aware(bhwc(t[f"{name}.{layer}"])) for layer in ("layer2", "layer3")]
    return grids, combine_layers(grids)


def test_reference_is_small_and_says_what_made_it():
    _, meta = _recorded()
    assert (REF / "patchcore_anomalib.safetensors").stat().st_size < 1_000_000
    assert meta["versions"]["anomalib"].startswith("2.") and meta["seeds"] and meta["command"]


def test_locally_aware_and_embedding_equal_anomalib(ref):
    t, _ = ref
    grids, emb = embed(t, "test")
    for grid, layer in zip(grids, ("layer2", "layer3")):
        torch.testing.assert_close(grid, bhwc(t[f"test.pooled.{layer}"]), **TOL)
    torch.testing.assert_close(emb.flatten(0, 2), t["test.embedding"], **TOL)
    torch.testing.assert_close(embed(t, "support")[1].flatten(0, 2), t["support_embedding"], **TOL)


@pytest.mark.parametrize("key", ["coreset", "large_coreset"])
def test_k_center_greedy_indices_equal_anomalib(ref, key):
    t, meta = ref
    bank = t["support_embedding"] if key == "coreset" else t["large_bank"]
    facts = meta["coresets"][key]
    ours = k_center_greedy(bank, facts["ratio"], projection=t[f"{key}.projection"], start=facts["start"])
    assert ours.tolist() == t[f"{key}.indices"].tolist()


@pytest.mark.parametrize("bank_name", ["coreset", "full"])
def test_scores_and_maps_equal_anomalib(ref, bank_name):
    t, meta = ref
    bank = t["support_embedding"]
    if bank_name == "coreset":
        bank = bank[t["coreset.indices"]]
    _, emb = embed(t, "test")
    flat = emb.flatten(0, 2)
    patch, loc = nearest_neighbor_scores(flat, bank, 1)
    torch.testing.assert_close(patch.reshape(3, 7, 7), t[f"{bank_name}.patch_scores"], **TOL)
    assert torch.equal(loc.reshape(3, 7, 7), t[f"{bank_name}.locations"])
    size = meta["input_size"]
    for k in meta["num_neighbors"]:
        score = image_score_reweighted(patch.reshape(3, -1), loc.reshape(3, -1), flat, bank, k)
        torch.testing.assert_close(score, t[f"{bank_name}.nn{k}.pred_score"], **TOL)
        # the detector's own composition, on a stand-in model of the fixture's input size
        pc = PatchCore(SimpleNamespace(cfg=SimpleNamespace(vision=SimpleNamespace(n_layers=4)), image_size=size),
                       PatchCoreConfig(num_neighbors=k))
        pc.memory_bank = bank
        res = pc.score_embedding(emb)
        torch.testing.assert_close(res.image_scores, t[f"{bank_name}.nn{k}.pred_score"], **TOL)
        torch.testing.assert_close(res.maps, t[f"{bank_name}.nn{k}.anomaly_map"], **TOL)
        torch.testing.assert_close(res.parts["patch_scores"], t[f"{bank_name}.patch_scores"], **TOL)
    # anomalous test image 1 (a shifted region) scores highest
    assert int(t[f"{bank_name}.nn9.pred_score"].argmax()) == 1


def test_anomaly_map_is_nearest_upsampling_then_blur(ref):
    t, meta = ref
    maps = anomaly_map(t["full.patch_scores"], meta["input_size"], 4.0, "nearest")
    torch.testing.assert_close(maps, t["full.nn1.anomaly_map"], **TOL)


def test_euclidean_dist_and_reweighting_by_hand():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 6, generator=g), torch.randn(7, 6, generator=g)
    torch.testing.assert_close(euclidean_dist(x, y), torch.cdist(x, y), atol=1e-5, rtol=1e-5)
    # one image, one bank: s = (1 - softmax(distances to m* and its neighbours)[0]) * s*
    bank = torch.randn(10, 6, generator=g)
    emb = torch.randn(4, 6, generator=g)
    d = torch.cdist(emb, bank)
    patch, loc = d.min(1)
    i = int(patch.argmax())
    m_star = int(loc[i])
    neigh = torch.cdist(bank[m_star : m_star + 1], bank)[0].argsort()[:3]
    w = 1 - torch.softmax(torch.cdist(emb[i : i + 1], bank[neigh])[0], 0)[0]
    expected = w * patch[i]
    ours = image_score_reweighted(patch[None], loc[None], emb, bank, 3)
    torch.testing.assert_close(ours, expected[None], atol=1e-5, rtol=1e-5)


def test_own_coreset_is_seeded_distinct_and_covers():
    g = torch.Generator().manual_seed(0)
    # one big cluster and seven small far ones (in 256 d, projected to 147 d for the distances)
    centres = 20 * torch.randn(8, 256, generator=g)
    labels = torch.cat([torch.zeros(344, dtype=torch.long), torch.arange(1, 8).repeat_interleave(8)])
    bank = centres[labels] + torch.randn(400, 256, generator=g)
    a = k_center_greedy(bank, 0.1, seed=3)
    assert a.tolist() == k_center_greedy(bank, 0.1, seed=3).tolist() != k_center_greedy(bank, 0.1, seed=4).tolist()
    assert len(a) == 40 and len(set(a.tolist())) == 40
    assert set(labels[a].tolist()) == set(range(8))  # every cluster has a centre (a random 10% misses some)
    radius = torch.cdist(bank, bank[a]).min(1).values.max()
    rand = [torch.cdist(bank, bank[torch.randperm(400, generator=g)[:40]]).min(1).values.max() for _ in range(5)]
    assert radius < min(rand)
    proj = sparse_random_projection(400, 256, 0.9, torch.Generator().manual_seed(0))
    assert proj.shape == (147, 256)  # int(4 ln 400 / (0.9^2/2 - 0.9^3/3))
    nz = proj[proj != 0]
    assert abs((proj != 0).float().mean() - 1 / 16) < 0.01 and torch.allclose(nz.abs(), nz.abs()[0])
    assert sparse_random_projection(400, 100) is None  # no projection up: exact distances
    with pytest.raises(ValueError, match="keeps none"):
        k_center_greedy(bank[:5], 0.1)


def test_config_refuses_unknown_fields_and_values():
    with pytest.raises(ValueError, match="unknown PatchCoreConfig field"):
        PatchCoreConfig.from_dict({"coreset": 0.1})
    for bad in (dict(coreset_ratio=0.0), dict(coreset_ratio=1.5), dict(neighborhood=2), dict(upsample="cubic"),
                dict(site="hook_nope"), dict(layers=()), dict(layers=(1.5,)), dict(num_neighbors=0),
                dict(final_norm=True, site="mlp.hook_post"), dict(embed_dim=0), dict(sigma=-1)):
        with pytest.raises(ValueError):
            PatchCoreConfig(**bad)
    cfg = PatchCoreConfig(layers=(1, 2), coreset_ratio=0.5)
    assert PatchCoreConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_end_to_end_on_tiny_model(tiny_model, magenta_root, tmp_path):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    test = MVTecAD(magenta_root, "disc", "test")
    pc = PatchCore(tiny_model, PatchCoreConfig(coreset_ratio=0.5), class_name="disc").fit(support)
    assert pc.hooks == ["visual.blocks.1.hook_resid_post", "visual.blocks.2.hook_resid_post"]
    assert pc.memory_bank.shape == (64, 128) and pc.n_support_patches == 128  # 2 images x 8 x 8, 2 x d=64
    res = pc.score([s.image for s in test][:3])
    assert res.image_scores.shape == (3,) and res.maps.shape == (3, 64, 64)
    assert res.parts["patch_scores"].shape == (3, 8, 8) and res.maps.device.type == "cpu"
    # a support image is its own nearest neighbour: patch scores 0 with the full bank
    full = PatchCore(tiny_model).fit(support)
    assert full.score(support[:1]).parts["patch_scores"].abs().max() < 1e-2
    pooled = PatchCore(tiny_model, PatchCoreConfig(embed_dim=32)).fit(support[:1])
    assert pooled.memory_bank.shape == (64, 32)
    raw = PatchCore(tiny_model, PatchCoreConfig(final_norm=False)).fit(support[:1])
    normed = PatchCore(tiny_model).fit(support[:1])
    assert raw.memory_bank.shape == normed.memory_bank.shape == (64, 128)
    assert not torch.allclose(raw.memory_bank, normed.memory_bank)
    pc.save(tmp_path / "pc")
    back = PatchCore.load(tmp_path / "pc", tiny_model)
    torch.testing.assert_close(back.score([s.image for s in test][:3]).maps, res.maps)
    assert back.config == pc.config and back.coreset_indices.tolist() == pc.coreset_indices.tolist()
    with pytest.raises(ValueError, match="already holds"):
        pc.save(tmp_path / "pc")


def test_planted_defects_score_above_normal_images(planted_model, magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    test = list(MVTecAD(magenta_root, "disc", "test"))
    res = PatchCore(planted_model).fit(support).score(test)
    labels = torch.tensor([s.label for s in test]).bool()
    assert labels.any() and (~labels).any()
    # 10 anomalous vs 4 normal: one normal image above one anomalous one at most (0.975 measured)
    assert image_metrics(res.image_scores.numpy(), labels.numpy())["auroc"] >= 0.97
    assert res.image_scores[labels].median() > 1.5 * res.image_scores[~labels].max()
    # and the maps localise the defects
    masks = np.stack([resize_mask(s.mask, res.maps.shape[-1]) for s in test])
    assert pixel_metrics(res.maps.numpy(), masks)["auroc"] > 0.9
