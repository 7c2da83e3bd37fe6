"""The whole pipeline in fp16 against fp32 on the same weights: on the CPU here, on CUDA wherever a
GPU is present (the GPU path of the README: `--device cuda --precision fp16`)."""

import copy

import numpy as np
import pytest
import torch

from lake_interp import Lake, LakeConfig
from lake_interp.data import MVTecAD
from lake_interp.interp import (
    ablate,
    neuron_heatmap,
    neuron_stats,
    neuron_words,
    patch_neurons,
    top_activating_patches,
    words_figure,
)

DEVICES = [
    pytest.param("cpu", id="cpu-fp16"),
    pytest.param("cuda", id="cuda-fp16", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
CONFIG = LakeConfig(k_neurons=8, text_weight=0.3)


def close(a, b, atol):
    torch.testing.assert_close(torch.as_tensor(a).float().cpu(), torch.as_tensor(b).float().cpu(), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def data(magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    test = list(MVTecAD(magenta_root, "disc", "test"))
    return support, test


@pytest.fixture(scope="module")
def fp32(planted_model, data):
    return Lake(planted_model, CONFIG, class_name="disc").fit(data[0])


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_pipeline_matches_fp32(planted_model, fp32, data, device, tmp_path):
    support, test = data
    half = copy.deepcopy(planted_model).to(device=device, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.device.type == device
    neurons = list(fp32.neurons)[:4]

    # detector: the same neurons, maps within fp16 rounding, results on the CPU
    lake = Lake(half, CONFIG, class_name="disc").fit(support, neurons=fp32.neurons)
    ref, got = fp32.score(test), lake.score(test)
    assert got.maps.device.type == "cpu" and torch.isfinite(got.maps).all()
    scale = float(ref.maps.abs().max())
    close(got.maps, ref.maps, 5e-3 * scale)
    close(got.image_scores, ref.image_scores, 5e-3 * scale)

    # saved and loaded on the same model: the same maps; fitted state follows a model moved later
    lake.save(tmp_path / "det")
    close(Lake.load(tmp_path / "det", half).score(test[:3]).maps, got.maps[:3], 0)
    on_cpu = Lake(copy.deepcopy(half).cpu(), CONFIG, class_name="disc").fit(support, neurons=fp32.neurons)
    on_cpu.model.to(device)
    close(on_cpu.score(test[:3]).maps, got.maps[:3], 1e-3 * scale)

    # ablation in every mode, the hooks writing into device activations
    for mode in ("zero", "mean", "resample"):
        with ablate(planted_model, neurons, mode=mode, reference=support):
            ref_ab = fp32.score(test[:3]).maps
        with ablate(half, neurons, mode=mode, reference=support):
            got_ab = lake.score(test[:3]).maps
        assert torch.isfinite(got_ab).all(), mode
        if mode != "resample":  # resampling draws other reference patches in another dtype
            close(got_ab, ref_ab, 5e-3 * scale)

    # patching, words, top patches, heatmaps, statistics
    anomalous, normal = [s for s in test if s.label == 1][:3], [s for s in test if s.label == 0][:1]
    p32 = patch_neurons(fp32, normal, anomalous, neurons, support=support)
    p16 = patch_neurons(lake, normal, anomalous, neurons, support=support)
    for label in p32.removed:
        assert p16.removed[label] == pytest.approx(p32.removed[label], abs=0.05), label
    w32, w16 = neuron_words(planted_model, neurons, reference=support), neuron_words(half, neurons, reference=support)
    assert w16.similarity.device.type == "cpu"
    close(w16.similarity, w32.similarity, 3e-3)
    assert len(words_figure(w16).data) == 1
    t32 = top_activating_patches(planted_model, test, neurons, n=3, batch_size=4)
    t16 = top_activating_patches(half, test, neurons, n=3, batch_size=4)
    close(t16.values, t32.values, 5e-3 * float(t32.values.abs().max()))
    h = neuron_heatmap(half, test[-1], neurons, lake=lake)
    assert h.anomaly_map.device.type == "cpu" and h.grid.shape[0] == len(neurons)
    s32, s16 = neuron_stats(planted_model, test, neurons), neuron_stats(half, test, neurons)
    np.testing.assert_allclose(s16.auroc.numpy(), s32.auroc.numpy(), atol=0.02)
