"""Neuron views (top patches, heatmaps, statistics): planted-neuron proofs, brute-force equality,
bounded memory, figures and input errors."""

import dataclasses
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lake_interp import Lake, LakeConfig
from lake_interp.data import MVTecAD
from lake_interp.export import to_matplotlib
from lake_interp.interp.figures import heatmap_figure, neuron_stats_figure, top_patches_figure
from lake_interp.interp.heatmap import neuron_heatmap
from lake_interp.interp.stats import neuron_stats
from lake_interp.interp.stream import to_pixels
from lake_interp.interp.top_patches import top_activating_patches
from lake_interp.lake.inputs import to_batch
from lake_interp.metrics import auroc
from tests.conftest import CHANNEL
from tests.planted import MAGENTA

HOOK = "visual.blocks.3.hook_resid_post"
OTHER = 3  # an arbitrary non-planted channel
P = 8  # lake-tiny patch size (64 px input, 8 x 8 grid)


@pytest.fixture(scope="module")
def test_set(magenta_root):
    return list(MVTecAD(magenta_root, "disc", "test"))


def magenta_fraction(sample, r, c):
    patch = np.asarray(sample.image)[r * P : (r + 1) * P, c * P : (c + 1) * P]
    return (patch == np.array(MAGENTA)).all(-1).mean()


# ----------------------------------------------------------------- planted neuron
def test_top_patches_of_planted_neuron_lie_on_magenta_defects(planted_model, test_set):
    top = top_activating_patches(planted_model, test_set, [(HOOK, CHANNEL)], n=12, batch_size=4)
    assert top.values.shape == (1, 12) and top.n_images == len(test_set)
    for i, r, c in zip(top.image_index[0].tolist(), top.row[0].tolist(), top.col[0].tolist()):
        s = test_set[i]
        assert s.label == 1 and magenta_fraction(s, r, c) > 0.25
        assert s.mask[r * P : (r + 1) * P, c * P : (c + 1) * P].mean() > 0.25
    # crops are the patch pixels (64 px images: the squash-resize is the identity) with margin context
    m = top.margin
    i, r, c = int(top.image_index[0, 0]), int(top.row[0, 0]), int(top.col[0, 0])
    expected = np.asarray(test_set[i].image)[r * P : (r + 1) * P, c * P : (c + 1) * P]
    np.testing.assert_array_equal(top.crops[0, 0, m : m + P, m : m + P].numpy(), expected)


def test_heatmap_of_planted_neuron_peaks_on_the_colour(planted_model, test_set, magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    lake = Lake(planted_model, LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0)).fit(support)
    other_on_magenta = 0
    for sample in [s for s in test_set if s.label == 1]:
        maps = neuron_heatmap(planted_model, sample, [(HOOK, CHANNEL), (HOOK, OTHER)], lake=lake)
        assert maps.grid.shape == (2, 8, 8) and maps.maps.shape == (2, 64, 64) and maps.image.shape == (64, 64, 3)
        fractions = [magenta_fraction(sample, r, c) for r in range(8) for c in range(8)]
        assert fractions[int(maps.grid[0].argmax())] >= 0.5 * max(fractions) > 0  # peaks on (nearly) the most magenta patch
        other_on_magenta += fractions[int(maps.grid[1].argmax())] > 0
        torch.testing.assert_close(maps.anomaly_map, lake.score([sample]).maps[0])
        np.testing.assert_array_equal(maps.image, np.asarray(sample.image))
    assert other_on_magenta <= 2  # an unrelated channel does not


def test_stats_separate_planted_neuron_and_match_brute_force(planted_model, test_set):
    neurons = [(HOOK, CHANNEL), (HOOK, OTHER), ("visual.blocks.1.mlp.hook_post", 5)]
    stats = neuron_stats(planted_model, test_set, neurons, batch_size=3)
    assert stats.auroc[0] > 0.99 and stats.auroc[1] < 0.9 and stats.ranking()[0] == 0
    assert stats.cohens_d[0] > 2 * abs(stats.cohens_d[1])
    assert stats.hook_counts == {HOOK: 2, "visual.blocks.1.mlp.hook_post": 1}
    assert stats.layer_counts == {1: 1, 3: 2} and stats.site_counts == {"hook_resid_post": 2, "mlp.hook_post": 1}

    # brute force: every patch, labelled from the masks (64 px: no resize)
    with torch.no_grad():
        _, cache = planted_model.run_with_cache(to_batch(test_set, planted_model), names_filter=[n for n, _ in neurons])
    acts = np.stack([cache[h][:, 1:, i].numpy() for h, i in neurons], -1).reshape(-1, 3)
    masks = np.stack([np.zeros((64, 64)) if s.mask is None else s.mask for s in test_set]).astype(float)
    frac = F.avg_pool2d(torch.tensor(masks)[:, None], P).flatten().numpy()
    anom, norm = acts[frac >= 0.5], acts[frac == 0]
    assert (stats.n_anomalous, stats.n_normal, stats.n_boundary) == (len(anom), len(norm), int(((frac > 0) & (frac < 0.5)).sum()))
    y = np.r_[np.ones(len(anom)), np.zeros(len(norm))]
    expected = [auroc(np.r_[anom[:, j], norm[:, j]], y) for j in range(3)]
    np.testing.assert_allclose(stats.auroc.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(stats.anomalous_mean.numpy(), anom.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.normal_std.numpy(), norm.std(0), rtol=1e-4, atol=1e-5)

    # a small reservoir: a sample of real patches; the moments stay exact
    small = neuron_stats(planted_model, test_set, neurons, batch_size=5, max_samples=7)
    assert small.normal_samples.shape == (7, 3) and small.anomalous_samples.shape == (7, 3)
    assert all(np.isclose(norm, row.numpy(), atol=1e-5).all(1).any() for row in small.normal_samples)
    torch.testing.assert_close(small.normal_mean, stats.normal_mean)
    torch.testing.assert_close(small.cohens_d, stats.cohens_d)


# ----------------------------------------------------------------- streaming = brute force
def brute_force_top(model, images, neurons, n):
    with torch.no_grad():
        batch = to_batch(images, model)
        _, cache = model.run_with_cache(batch, names_filter=list(dict.fromkeys(h for h, _ in neurons)))
    out = []
    for h, i in neurons:
        flat = cache[h][:, 1:, i].flatten()  # [B * P], image-major
        order = torch.argsort(flat, descending=True)[:n]
        out.append((flat[order], order // 64, (order % 64) // 8, order % 8))
    return out, to_pixels(batch, model)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_streaming_top_k_equals_brute_force(tiny_model, magenta_root, batch_size):
    images = [s.image for s in MVTecAD(magenta_root, "disc", "train")][:7]
    neurons = [(HOOK, 7), ("visual.blocks.1.mlp.hook_post", 10), (HOOK, 30)]  # grouped by hook in results
    top = top_activating_patches(tiny_model, iter(images), neurons, n=5, batch_size=batch_size, margin=2)
    assert top.neurons == [(HOOK, 7), (HOOK, 30), ("visual.blocks.1.mlp.hook_post", 10)]
    expected, pixels = brute_force_top(tiny_model, images, top.neurons, 5)
    padded = F.pad(pixels.permute(0, 3, 1, 2), (2, 2, 2, 2)).permute(0, 2, 3, 1)
    for k, (values, img, row, col) in enumerate(expected):
        torch.testing.assert_close(top.values[k], values, atol=1e-5, rtol=1e-5)
        assert top.image_index[k].tolist() == img.tolist()
        assert top.row[k].tolist() == row.tolist() and top.col[k].tolist() == col.tolist()
        for j in range(5):
            r, c = int(row[j]) * 8, int(col[j]) * 8
            assert torch.equal(top.crops[k, j], padded[img[j], r : r + 12, c : c + 12])


def test_fewer_patches_than_n_and_tensor_input(tiny_model, magenta_root):
    image = MVTecAD(magenta_root, "disc", "train")[0].image
    top = top_activating_patches(tiny_model, to_batch([image], tiny_model), [(HOOK, 1)], n=100)
    assert top.values.shape == (1, 64) and (top.values[0, :-1] >= top.values[0, 1:]).all()
    assert sorted((top.row[0] * 8 + top.col[0]).tolist()) == list(range(64))


# ----------------------------------------------------------------- bounded memory
class Tracked:
    """A generator of fresh copies that records, at each yield, how many earlier copies are alive."""

    def __init__(self, items, copy):
        self.items, self.copy, self.refs, self.max_alive = items, copy, [], 0

    def __iter__(self):
        for item in self.items:
            self.max_alive = max(self.max_alive, sum(r() is not None for r in self.refs))
            obj = self.copy(item)
            self.refs.append(weakref.ref(obj))
            yield obj


@pytest.mark.parametrize("tool", ["top_patches", "stats"])
def test_memory_is_bounded_by_one_batch(tiny_model, test_set, tool):
    data = test_set * 3  # 42 images
    if tool == "top_patches":
        def run(items):
            gen = Tracked([s.image for s in items], lambda im: im.copy())
            return gen, top_activating_patches(tiny_model, gen, [(HOOK, 1), (HOOK, 2)], n=9, batch_size=4)
    else:
        def run(items):
            gen = Tracked(items, dataclasses.replace)
            return gen, neuron_stats(tiny_model, gen, [(HOOK, 1), (HOOK, 2)], batch_size=4, max_samples=50)
    gen, result = run(data)
    assert len(gen.refs) == len(data)
    assert gen.max_alive <= 2 * 4  # the batch being read and the one before it, never the dataset
    _, small = run(data[:5])
    if tool == "top_patches":
        assert result.values.shape == small.values.shape == (2, 9) and result.crops.shape == small.crops.shape
    else:
        assert result.normal_samples.shape == small.normal_samples.shape == (50, 2)


# ----------------------------------------------------------------- figures and errors
def test_figures_build_and_export(planted_model, test_set, magenta_root):
    neurons = [(HOOK, CHANNEL), (HOOK, OTHER), ("visual.blocks.2.mlp.hook_post", 4)]
    top = top_activating_patches(planted_model, test_set, neurons, n=4)
    fig = top_patches_figure(top, max_neurons=2)
    assert [t.type for t in fig.data] == ["image"] * 8
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=1, seed=0)
    lake = Lake(planted_model, LakeConfig(k_neurons=2, text_weight=0.0)).fit(support)
    maps_fig = heatmap_figure(neuron_heatmap(planted_model, test_set[-1], neurons, lake=lake))
    assert [t.type for t in maps_fig.data] == ["image"] * 5  # input, 3 neurons, anomaly map
    assert len(heatmap_figure(neuron_heatmap(planted_model, test_set[-1], neurons)).data) == 4
    stats_fig = neuron_stats_figure(neuron_stats(planted_model, test_set, neurons), top=2)
    assert [t.type for t in stats_fig.data] == ["histogram"] * 4 + ["bar"]
    assert "[7]" in stats_fig.layout.annotations[0].text  # the planted neuron ranks first
    for f in (fig, maps_fig, stats_fig):
        to_matplotlib(f)
    # a whole NeuronSet works too: depth counts are its per-layer counts
    lake_stats = neuron_stats(planted_model, test_set, lake.neurons)
    assert lake_stats.neurons == list(lake.neurons) and lake_stats.hook_counts == lake.neurons.per_layer_counts()
    assert len(neuron_stats_figure(lake_stats, top=3).data) == 7


@pytest.mark.parametrize("neurons, message", [
    ([("visual.blocks.3.hook_resid_pots", 1)], "unknown hook name"),
    ([(HOOK, 64)], "out of range"),
    ([("visual.blocks.3.attn.hook_pattern", 0)], "no neuron axis"),
    ([], "no neurons"),
])
def test_bad_neurons_raise_clear_errors(tiny_model, test_set, neurons, message):
    for call in (lambda: top_activating_patches(tiny_model, test_set[:2], neurons),
                 lambda: neuron_heatmap(tiny_model, test_set[0], neurons),
                 lambda: neuron_stats(tiny_model, test_set[:2], neurons)):
        with pytest.raises(ValueError, match=message):
            call()


def test_bad_inputs_raise(tiny_model, test_set):
    with pytest.raises(ValueError, match="exactly one image"):
        neuron_heatmap(tiny_model, test_set[:2], [(HOOK, 1)])
    with pytest.raises(ValueError, match="Samples with label and mask"):
        neuron_stats(tiny_model, [s.image for s in test_set], [(HOOK, 1)])
    with pytest.raises(ValueError, match="normal and anomalous patches"):
        neuron_stats(tiny_model, [s for s in test_set if s.label == 0], [(HOOK, 1)])
    with pytest.raises(ValueError, match="batch_size"):
        top_activating_patches(tiny_model, test_set, [(HOOK, 1)], batch_size=0)


def test_channels_must_be_integers_and_a_lake_must_share_the_model(tiny_model, planted_model, test_set):
    from lake_interp.interp.targets import check_neurons

    hook = "visual.blocks.1.hook_resid_post"
    assert check_neurons(tiny_model, [(hook, 3.0), (hook, np.int64(5))])[hook].tolist() == [3, 5]
    for bad in (3.7, True):
        with pytest.raises(ValueError, match=f"channel {bad!r} of {hook} is not an integer"):
            check_neurons(tiny_model, [(hook, bad)])
    other = Lake(planted_model, LakeConfig(k_neurons=2), class_name="disc").fit(test_set[:1])
    with pytest.raises(ValueError, match="fitted on another model"):
        neuron_heatmap(tiny_model, test_set[0], [(hook, 3)], lake=other)
