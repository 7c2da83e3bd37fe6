"""The LAKE detector on a tiny model: end-to-end proof with a planted colour channel, and behaviour."""

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from lake_interp import HookedCLIP, Lake, LakeConfig
from lake_interp.data import MVTecAD
from lake_interp.lake.inputs import to_batch
from lake_interp.metrics import image_metrics, pixel_metrics
from tests.conftest import CHANNEL


def evaluate(lake, root):
    test = list(MVTecAD(root, "disc", "test"))
    result = lake.score(test)
    size = lake.model.image_size
    masks = np.stack([np.zeros((size, size), bool) if s.mask is None else s.mask for s in test])
    labels = np.array([s.label for s in test])
    return pixel_metrics(result.maps.numpy(), masks), image_metrics(result.image_scores.numpy(), labels)


def test_planted_channel_is_selected_and_localises_defects(planted_model, magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    cfg = LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0)
    lake = Lake(planted_model, cfg, class_name="disc").fit(support)
    assert set(lake.neurons) == {(h, CHANNEL) for h in lake.hooks}  # variance sees the planted channel
    pixel, image = evaluate(lake, magenta_root)
    assert pixel["auroc"] > 0.98 and image["auroc"] > 0.95

    # the same single-neuron detector on any other channel does much worse
    def not_planted(acts):
        s = acts.var(0)
        s[CHANNEL] = -1.0
        return s

    other = Lake(planted_model, cfg.replace(criterion=not_planted), class_name="disc").fit(support)
    assert all(CHANNEL not in idx.tolist() for idx in other.neurons.indices.values())
    other_pixel, other_image = evaluate(other, magenta_root)
    assert other_image["auroc"] < image["auroc"] - 0.05


def test_default_distance_with_top_k_contains_planted_channel(planted_model, magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    lake = Lake(planted_model, LakeConfig(k_neurons=8, text_weight=0.0), class_name="disc").fit(support)
    assert all(CHANNEL in idx.tolist() for idx in lake.neurons.indices.values())
    pixel, _ = evaluate(lake, magenta_root)
    assert pixel["auroc"] > 0.95


def test_visual_map_equals_independent_nearest_neighbour(tiny_model, magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2)
    cfg = LakeConfig(k_neurons=5, layers=(2,), text_weight=0.0, sigma=0.0)
    lake = Lake(tiny_model, cfg).fit(support)
    test = [s.image for s in MVTecAD(magenta_root, "disc", "test")][:3]
    hook = "visual.blocks.2.hook_resid_post"

    with torch.no_grad():
        _, sup_cache = tiny_model.run_with_cache(to_batch(support, tiny_model), names_filter=hook)
        _, test_cache = tiny_model.run_with_cache(to_batch(test, tiny_model), names_filter=hook)
    sup = sup_cache[hook][:, 1:].reshape(-1, 64).numpy()
    top = np.argsort(-sup.var(axis=0))[:5]
    assert sorted(lake.neurons.indices[hook].tolist()) == sorted(top.tolist())
    bank = sup[:, top]
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = test_cache[hook][:, 1:, top].numpy()
    q = q / np.linalg.norm(q, axis=2, keepdims=True)
    patch = 1 - (q @ bank.T).max(axis=2)  # [B, P]
    g = tiny_model.grid_size
    expected = F.interpolate(torch.tensor(patch).view(-1, 1, g, g), size=64, mode="bilinear", align_corners=False)[:, 0]
    result = lake.score(test)
    torch.testing.assert_close(result.visual_maps, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.maps, result.visual_maps)
    torch.testing.assert_close(result.image_scores, result.maps.flatten(1).amax(1))


def test_fusion_invariant_and_inputs_agree(tiny_model, magenta_root, tmp_path):
    train = MVTecAD(magenta_root, "disc", "train")
    lake = Lake(tiny_model, LakeConfig(k_neurons=8), class_name="disc").fit(train.few_shot(k=1))
    paths = [str(p) for p in MVTecAD(magenta_root, "disc", "test").paths[:2]]
    from PIL import Image

    by_path = lake.score(paths)
    by_pil = lake.score([Image.open(p) for p in paths])
    torch.testing.assert_close(by_path.maps, by_pil.maps)
    w = lake.config.text_weight
    torch.testing.assert_close(by_path.maps, (1 - w) * by_path.visual_maps + w * by_path.semantic_maps)
    assert by_path.maps.shape == (2, 64, 64) and by_path.image_scores.shape == (2,)
    assert by_path.semantic_maps.min() >= 0 and by_path.semantic_maps.max() <= 1
    with pytest.raises(ValueError, match="expected \\[B, 3, 64, 64\\]"):
        lake.score(torch.zeros(2, 3, 32, 32))
    batch = to_batch(paths, tiny_model)
    torch.testing.assert_close(lake.score(list(batch)).maps, by_path.maps)  # a list of [3, S, S] tensors
    with pytest.raises(ValueError, match="different shapes"):
        lake.score([batch[0], batch[0, :, :32]])


def test_text_features_are_the_prompt_ensemble(tiny_open_clip, tiny_model):
    """Against open_clip directly: mean of the unit prompt embeddings per state, renormalised."""
    from lake_interp.lake.config import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES

    tokenizer = open_clip.get_tokenizer("lake-tiny")
    expected = []
    for states in (NORMAL_STATES, ANOMALOUS_STATES):
        texts = []
        for state in states:
            for template in TEMPLATES:
                texts.append(template.replace("{}", state.replace("{}", "metal nut")))
        with torch.no_grad():
            emb = tiny_open_clip.encode_text(tokenizer(texts))
        mean = (emb / emb.norm(dim=-1, keepdim=True)).mean(dim=0)
        expected.append(mean / mean.norm())
    lake = Lake(tiny_model, LakeConfig(text_weight=1.0), class_name="metal nut").fit([])
    torch.testing.assert_close(lake.text_features, torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_standardized_bank_is_the_z_scored_support(tiny_model):
    g = torch.Generator().manual_seed(0)
    lake = Lake(tiny_model, LakeConfig(k_neurons=5, standardize=True, text_weight=0.0, layers=(1.0,)))
    hook = lake.hooks[0]
    acts = torch.randn(2, 16, 64, generator=g) * torch.linspace(0.1, 3, 64) + 2.0
    lake.fit_activations({hook: acts})
    idx = lake.neurons.indices[hook].numpy()
    support = acts.flatten(0, 1).numpy()[:, idx]
    z = (support - support.mean(0)) / support.std(0)  # population std
    np.testing.assert_allclose(lake.banks[hook].numpy(), z, rtol=1e-4, atol=1e-5)
    g_side = tiny_model.grid_size
    query = torch.randn(1, g_side * g_side, 64, generator=g) * 2
    q = (query[0].numpy()[:, idx] - support.mean(0)) / support.std(0)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (z / np.linalg.norm(z, axis=1, keepdims=True)).T
    per_patch = torch.tensor(1 - cos.max(1), dtype=torch.float32).view(1, 1, g_side, g_side)  # row-major patches
    expected = F.interpolate(per_patch, size=(64, 64), mode="bilinear", align_corners=False)[0]
    unblurred = Lake(tiny_model, lake.config.replace(sigma=0.0)).fit_activations({hook: acts})
    torch.testing.assert_close(unblurred.score_activations({hook: query}).visual_maps, expected, atol=1e-5, rtol=1e-4)


def test_text_embedded_once_per_category(tiny_model, magenta_root, monkeypatch):
    lake = Lake(tiny_model, LakeConfig(k_neurons=4), class_name="disc").fit(MVTecAD(magenta_root, "disc", "train").few_shot(1))
    calls = []
    monkeypatch.setattr(tiny_model, "encode_text", lambda *a, **k: calls.append(1))
    lake.score(MVTecAD(magenta_root, "disc", "test").paths[:2])
    assert calls == []


def test_mlp_neurons_and_k_too_large(tiny_model, magenta_root):
    cfg = LakeConfig(sites=("mlp.hook_post",), layers=(0.5, 1.0), k_neurons=100, text_weight=0.0)
    lake = Lake(tiny_model, cfg).fit(MVTecAD(magenta_root, "disc", "train").few_shot(1))
    assert lake.hooks == ["visual.blocks.1.mlp.hook_post", "visual.blocks.3.mlp.hook_post"]
    assert all(len(i) == 100 and int(i.max()) < 256 for i in lake.neurons.indices.values())
    with pytest.raises(ValueError, match="k_neurons=300 is larger than the width 256 of visual.blocks.1.mlp.hook_post"):
        Lake(tiny_model, cfg.replace(k_neurons=300))
    with pytest.raises(ValueError, match="k_neurons=100 is larger than the width 64"):
        Lake(tiny_model, LakeConfig())
    with pytest.raises(RuntimeError, match="before fit"):
        Lake(tiny_model, LakeConfig(k_neurons=4)).score(MVTecAD(magenta_root, "disc", "test").paths[:1])


def test_text_only_needs_no_support(tiny_model, magenta_root):
    lake = Lake(tiny_model, LakeConfig(text_weight=1.0), class_name="disc").fit([])
    result = lake.score(MVTecAD(magenta_root, "disc", "test").paths[:2])
    assert torch.all(result.visual_maps == 0) and lake.neurons is None
    torch.testing.assert_close(result.maps, result.semantic_maps)


def test_save_load_round_trip_and_refuses_other_model(tiny_model, tiny_open_clip, magenta_root, tmp_path):
    import copy

    import json

    lake = Lake(tiny_model, LakeConfig(k_neurons=6, standardize=True), class_name="disc")
    support = MVTecAD(magenta_root, "disc", "train").few_shot(2)
    lake.fit(iter(support))  # a generator: read once, its files recorded
    lake.save(tmp_path / "det")
    meta = json.loads((tmp_path / "det" / "lake.json").read_text())
    assert meta["support"] == [str(s.path) for s in support]
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["lake_interp"] not in ("", "unknown")
    loaded = Lake.load(tmp_path / "det", tiny_model)
    assert loaded.support_sources == meta["support"]
    paths = MVTecAD(magenta_root, "disc", "test").paths[:3]
    torch.testing.assert_close(loaded.score(paths).maps, lake.score(paths).maps)
    assert list(loaded.neurons) == list(lake.neurons) and loaded.class_name == "disc"

    for change in (lambda m: m.visual.proj, lambda m: m.visual.transformer.resblocks[2].mlp.c_proj.weight):
        other_oc = copy.deepcopy(tiny_open_clip)  # any weight, not only the first and last
        with torch.no_grad():
            change(other_oc).add_(0.1)
        with pytest.raises(ValueError, match="different weights"):
            Lake.load(tmp_path / "det", HookedCLIP.from_open_clip(other_oc, "lake-tiny"))
    with pytest.raises(FileNotFoundError, match="lake.json"):
        Lake.load(tmp_path / "nothing", tiny_model)


def test_detector_fitted_in_fp16_loads_in_fp32_and_not_the_reverse(tiny_model, tiny_open_clip, magenta_root, tmp_path):
    import copy

    half = HookedCLIP.from_open_clip(copy.deepcopy(tiny_open_clip).half(), "lake-tiny")
    assert half.dtype == torch.float16
    support = MVTecAD(magenta_root, "disc", "train").few_shot(2)
    paths = MVTecAD(magenta_root, "disc", "test").paths[:3]
    fitted_half = Lake(half, LakeConfig(k_neurons=6), class_name="disc").fit(support)
    fitted_half.save(tmp_path / "fp16")
    with pytest.warns(UserWarning, match="fitted in fp16; scoring in fp32"):
        in_fp32 = Lake.load(tmp_path / "fp16", tiny_model)  # the same checkpoint, the fp32 copy
    assert list(in_fp32.neurons) == list(fitted_half.neurons)
    torch.testing.assert_close(in_fp32.score(paths).maps, fitted_half.score(paths).maps, rtol=0, atol=5e-3)

    Lake(tiny_model, LakeConfig(k_neurons=6), class_name="disc").fit(support).save(tmp_path / "fp32")
    with pytest.raises(ValueError, match="fitted in fp32 and the model runs in fp16"):
        Lake.load(tmp_path / "fp32", half)  # fp16 has lost what the fp32 hash covers
    other = copy.deepcopy(tiny_open_clip)
    with torch.no_grad():
        other.visual.proj.add_(0.1)
    with pytest.raises(ValueError, match="different weights") as err:
        Lake.load(tmp_path / "fp16", HookedCLIP.from_open_clip(other, "lake-tiny"))
    assert "--precision" not in str(err.value)  # an fp32 model sees an fp16 fit: no precision to blame

    # a detector written before the dtype was recorded: its hash is of the weights as stored
    import hashlib
    import json

    legacy = hashlib.sha256()
    for name, tensor in sorted(half.state_dict().items()):
        legacy.update(name.encode())
        legacy.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    meta = json.loads((tmp_path / "fp16" / "lake.json").read_text())
    del meta["model"]["dtype"]
    meta["model"]["weights_sha256"] = legacy.hexdigest()
    (tmp_path / "fp16" / "lake.json").write_text(json.dumps(meta))
    close = Lake.load(tmp_path / "fp16", half).score(paths).maps
    torch.testing.assert_close(close, fitted_half.score(paths).maps, rtol=0, atol=0)


def test_score_accepts_a_dataset_and_a_generator(tiny_model, magenta_root):
    test = MVTecAD(magenta_root, "disc", "test")
    lake = Lake(tiny_model, LakeConfig(k_neurons=4), class_name="disc").fit(MVTecAD(magenta_root, "disc", "train").few_shot(1))
    by_dataset = lake.score(test)
    by_generator = lake.score(s.image for s in test)
    assert by_dataset.maps.shape == (len(test), 64, 64)
    torch.testing.assert_close(by_dataset.maps, by_generator.maps)
    with pytest.raises(ValueError, match="no images"):
        lake.score([])


def test_low_precision_model_keeps_its_dtype():
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        model = HookedCLIP.from_pretrained("lake-tiny", pretrained=None, precision="bf16")
    assert model.dtype == torch.bfloat16 and model.visual.blocks[0].mlp.c_fc.weight.dtype == torch.bfloat16
