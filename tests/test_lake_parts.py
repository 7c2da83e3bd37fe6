"""Each piece of LAKE against a hand or independent computation on tiny tensors."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from lake_interp.detectors.methods import method_config
from lake_interp.lake import LakeConfig, NeuronSet
from lake_interp.lake.bank import nearest_distance
from lake_interp.lake.fusion import fuse, gaussian_blur, image_scores, upsample
from lake_interp.lake.neurons import criterion_scores
from lake_interp.lake.semantic import anomaly_probability, prompts
from lake_interp.lake.sites import hook_names, resolve_layer


def test_variance_criterion_and_top_k():
    acts = torch.tensor([[0.0, 1.0, 5.0], [0.0, 3.0, -5.0], [0.0, 2.0, 0.0]])
    scores = criterion_scores("variance", acts, torch.Generator())
    np.testing.assert_allclose(scores.numpy(), np.var(acts.numpy(), axis=0), rtol=1e-6)
    ns = NeuronSet.from_scores({"h": scores}, k=2)
    assert ns.indices["h"].tolist() == [2, 1]
    assert list(ns) == [("h", 2), ("h", 1)]
    with pytest.raises(ValueError, match="larger than the width 3 of h"):
        NeuronSet.from_scores({"h": scores}, k=4)


def test_random_criterion_is_seeded_and_differs_per_draw():
    acts = torch.randn(10, 50)
    a = criterion_scores("random", acts, torch.Generator().manual_seed(3))
    b = criterion_scores("random", acts, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    first, second = criterion_scores("random", acts, g), criterion_scores("random", acts, g)
    assert torch.equal(a, b) and not torch.equal(first, second)


def test_callable_criterion_and_bad_shape():
    acts = torch.randn(6, 4)
    scores = criterion_scores(lambda a: a.abs().mean(0), acts, torch.Generator())
    torch.testing.assert_close(scores, acts.abs().mean(0))
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        criterion_scores(lambda a: a.mean(), acts, torch.Generator())


def test_neuron_set_json_round_trip(tmp_path):
    ns = NeuronSet.from_scores({"visual.blocks.1.hook_resid_post": torch.tensor([0.1, 0.9, 0.5])}, k=2)
    ns.save(tmp_path / "n.json")
    back = NeuronSet.load(tmp_path / "n.json")
    assert json.loads((tmp_path / "n.json").read_text())["neurons"]["visual.blocks.1.hook_resid_post"]["indices"] == [1, 2]
    assert list(back) == list(ns)
    torch.testing.assert_close(back.scores["visual.blocks.1.hook_resid_post"], torch.tensor([0.9, 0.5]))
    assert list(back.top(1)) == [("visual.blocks.1.hook_resid_post", 1)]


def test_nearest_distance_against_brute_force():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(2, 5, 3, generator=g), torch.randn(7, 3, generator=g)
    qn, bn = q.numpy(), bank.numpy()
    cos = np.array([[min(1 - qn[b, p] @ m / np.linalg.norm(qn[b, p]) / np.linalg.norm(m) for m in bn) for p in range(5)] for b in range(2)])
    euc = np.array([[min(np.linalg.norm(qn[b, p] - m) for m in bn) for p in range(5)] for b in range(2)])
    np.testing.assert_allclose(nearest_distance(q, bank, "cosine").numpy(), cos, atol=1e-5)
    np.testing.assert_allclose(nearest_distance(q, bank, "euclidean", chunk=3).numpy(), euc, atol=1e-5)


def test_upsample_bilinear_by_hand():
    m = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    np.testing.assert_allclose(upsample(m, 4)[0, 0].numpy(), [0, 0.25, 0.75, 1.0])


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_gaussian_blur_matches_scipy(sigma):
    maps = torch.rand(2, 40, 40, generator=torch.Generator().manual_seed(1))
    ours = gaussian_blur(maps, sigma).numpy()
    ref = np.stack([ndimage.gaussian_filter(m, sigma, mode="mirror", truncate=4.0) for m in maps.numpy()])
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert gaussian_blur(maps, 0) is maps


def test_fusion_and_image_scores_by_hand():
    v, s = torch.full((1, 2, 2), 1.0), torch.tensor([[[0.0, 1.0], [0.5, 0.0]]])
    np.testing.assert_allclose(fuse(v, s, 0.3).numpy(), [[[0.7, 1.0], [0.85, 0.7]]], rtol=1e-6)
    maps = torch.arange(100.0).view(1, 10, 10)
    assert image_scores(maps, "max").item() == 99
    assert image_scores(maps, "top_mean", 0.05).item() == pytest.approx((95 + 96 + 97 + 98 + 99) / 5)


def test_anomaly_probability_by_hand():
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.07
    expected = []
    for tok in tokens[0].numpy():
        tok = tok / np.linalg.norm(tok)
        logits = np.array([tok @ text[0].numpy(), tok @ text[1].numpy()]) / t
        expected.append(np.exp(logits[1]) / np.exp(logits).sum())
    np.testing.assert_allclose(anomaly_probability(tokens, text, t)[0].numpy(), expected, rtol=1e-5)


def test_prompts_fill_class_name():
    ps = prompts(["damaged {}", "{} with flaw"], ["a photo of a {}."], "bottle")
    assert ps == ["a photo of a damaged bottle.", "a photo of a bottle with flaw."]


@pytest.mark.parametrize("n_layers,expected", [(12, [2, 5, 8, 11]), (24, [5, 11, 17, 23]), (32, [7, 15, 23, 31])])
def test_relative_layers(n_layers, expected):
    assert [resolve_layer(f, n_layers) for f in (0.25, 0.5, 0.75, 1.0)] == expected
    assert hook_names(("mlp.hook_post",), (-1, 0), n_layers) == [
        "visual.blocks.0.mlp.hook_post", f"visual.blocks.{n_layers - 1}.mlp.hook_post"]


def test_bad_sites_and_layers():
    with pytest.raises(ValueError, match="unknown site 'mlp.neurons'"):
        hook_names(("mlp.hook_post", "mlp.neurons"), (1.0,), 12)
    with pytest.raises(ValueError, match="layer 12 out of range"):
        resolve_layer(12, 12)
    with pytest.raises(ValueError, match="relative layer 1.5"):
        resolve_layer(1.5, 12)


def test_config_round_trip_and_validation():
    cfg = LakeConfig(k_neurons=7, layers=(0.5, -1), sites=["mlp.hook_post"])
    back = LakeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.layers[0], float) and isinstance(back.layers[1], int)
    with pytest.raises(ValueError, match="unknown LakeConfig fields \\['k'\\]"):
        LakeConfig.from_dict({"k": 3})
    with pytest.raises(ValueError, match="criterion='varience'"):
        LakeConfig(criterion="varience")
    with pytest.raises(ValueError, match="text_weight"):
        LakeConfig(text_weight=2)
    assert method_config("knn_all").criterion == "all" and method_config("knn_all").text_weight == 0.0
    assert method_config("text_dense").text_weight == 1.0
    with pytest.raises(ValueError, match="not a LAKE variant"):  # the faithful PatchCore has no LakeConfig
        method_config("patchcore")
    with pytest.raises(ValueError, match="unknown method"):
        method_config("lake2")


def test_neuron_set_repr_is_short_and_names_the_best_channels():
    scores = {f"visual.blocks.{l}.hook_resid_post": torch.randn(768, generator=torch.Generator().manual_seed(l)) for l in range(4)}
    neurons = NeuronSet.from_scores(scores, 100)
    text = repr(neurons)
    assert len(text) < 400 and text.startswith("NeuronSet(variance, 400 neurons;")
    for hook, s in scores.items():
        assert f"{hook}: 100 [{int(s.argmax())}," in text
