"""Ablation, patching, sweeps and neuron words, proven on the tiny model with a planted neuron."""

import numpy as np
import pytest
import torch

from lake_interp import Lake, LakeConfig
from lake_interp.data import MVTecAD
from lake_interp.interp.ablation import ablate, ablation_effect, random_like, single_neuron_sweep
from lake_interp.interp.patching import patch_neurons
from lake_interp.interp.sweep import sweep
from lake_interp.interp.words import neuron_words
from lake_interp.lake.inputs import to_batch
from tests.conftest import CHANNEL

ONE_NEURON = LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0)


@pytest.fixture(scope="module")
def data(magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    test = list(MVTecAD(magenta_root, "disc", "test"))
    labels = np.array([s.label for s in test])
    masks = np.stack([np.zeros((64, 64), bool) if s.mask is None else s.mask for s in test])
    return support, test, labels, masks


@pytest.fixture()
def planted_lake(planted_model, data):
    return Lake(planted_model, ONE_NEURON, class_name="disc").fit(data[0])


def test_ablating_planted_neuron_read_downstream_removes_the_response_random_does_not(planted_lake, data):
    """The planted channel ablated at block 0, read at the final block's residual stream (all
    channels, fitted on the clean model): the readout's anomaly response falls, random units' does not."""
    support, test, labels, masks = data
    planted = [("visual.blocks.0.hook_resid_post", CHANNEL)]
    effect = ablation_effect(planted_lake, planted, support, test, labels, masks, n_random=5, progress=False)
    last = f"visual.blocks.{planted_lake.model.cfg.vision.n_layers - 1}.hook_resid_post"
    assert effect.meta["readout"] == "downstream" and effect.meta["readout_hooks"] == [last]
    assert effect.meta["readout_reads_ablated"] == [] and effect.meta["ablated"] == [list(planted[0])]
    assert effect.meta["mode"] == "zero" and effect.meta["reference"] == "none (zero)"
    assert effect.clean["image_auroc"] > 0.9 and effect.clean["pixel_auroc"] > 0.95
    drop = effect.clean["mean_score_anomalous"] - effect.ablated["mean_score_anomalous"]
    random_drops = [effect.clean["mean_score_anomalous"] - r["mean_score_anomalous"] for r in effect.random]
    assert drop > 5 * max(abs(d) for d in random_drops)
    assert effect.map_change > 3 * max(effect.random_map_change)
    assert np.ptp(effect.ablated_scores) > 0.1  # the readout still sees the images: no constant map
    # deltas and their spread over the random draws, against numpy on the reported metrics
    deltas = [r["mean_score_anomalous"] - effect.clean["mean_score_anomalous"] for r in effect.random]
    summary = effect.random_summary["mean_score_anomalous"]
    assert summary["mean"] == pytest.approx(np.mean(deltas)) and summary["std"] == pytest.approx(np.std(deltas, ddof=1))
    assert (summary["low"], summary["high"]) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))
    assert effect.delta["mean_score_anomalous"] == pytest.approx(-drop)
    assert all(len(u) == 1 and u[0][0] == planted[0][0] and u[0][1] != CHANNEL for u in effect.random_units)
    assert [r["condition"] for r in effect.table()][:3] == ["clean", "ablated", "random seed 0"]
    # masks as datasets give them: original size (here 2x the input), None for normal images
    big = [None if s.mask is None else np.kron(s.mask, np.ones((2, 2), bool)) for s in test]
    again = ablation_effect(planted_lake, planted, support, test, labels, big, n_random=0, progress=False)
    assert again.clean == pytest.approx(effect.clean) and again.ablated == pytest.approx(effect.ablated, nan_ok=True)


def test_circular_readout_is_refused_and_overlap_flagged(planted_lake, data):
    """LAKE read on exactly its own ablated neurons is the artefact (a constant map): refused. A
    readout that reads some ablated channels among others says so."""
    support, test, labels, masks = data
    with pytest.raises(ValueError, match="reads exactly the ablated channels"):
        ablation_effect(planted_lake, list(planted_lake.neurons), support, test, labels, masks, n_random=0,
                        readout=None, progress=False)
    with pytest.warns(UserWarning, match="reads 1 of the ablated units directly"):
        effect = ablation_effect(planted_lake, list(planted_lake.neurons), support, test, labels, masks, n_random=1,
                                 progress=False)
    last = planted_lake.hooks[-1]
    assert effect.meta["readout_reads_ablated"] == [[last, CHANNEL]]
    chans = ablation_effect(planted_lake, [(last, CHANNEL)], support, test, labels, masks, n_random=1,
                            readout="all_channels", progress=False)
    assert chans.meta["readout_hooks"] == [last] and chans.meta["readout"] == "all_channels"
    with pytest.raises(ValueError, match="readout='nope'"):
        ablation_effect(planted_lake, [(last, CHANNEL)], support, test, labels, masks, readout="nope", progress=False)


def test_no_constant_ablated_map_unless_read_on_the_ablated_channels(tiny_model, data):
    """On lake-tiny, LAKE's own neurons ablated: every readout but the circular one sees varied maps;
    the circular reading (LAKE on its own zeroed neurons, forced here through ablate) is constant."""
    from lake_interp.evaluation import refit

    support, test, labels, masks = data
    lake = Lake(tiny_model, LakeConfig(k_neurons=8, text_weight=0.0), class_name="disc").fit(support)
    neurons = [p for p in lake.neurons if not p[0].startswith(f"visual.blocks.{tiny_model.cfg.vision.n_layers - 1}.")]
    for readout in ("downstream", "all_channels"):
        effect = ablation_effect(lake, neurons, support, test[:6], labels[:6], n_random=0, readout=readout, progress=False)
        assert np.ptp(effect.ablated_scores) > 1e-3, readout
    own = [p for p in lake.neurons]
    with ablate(tiny_model, own):
        circular = refit(lake, support).score(test[:3])
    assert float(circular.maps.max() - circular.maps.min()) < 1e-5  # what the refusal prevents


def test_mean_ablation_equals_independent_support_mean(tiny_model, data):
    support = data[0]
    hook, idx = "visual.blocks.1.mlp.hook_post", [3, 40, 200]
    images = to_batch(data[1][:3], tiny_model)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(to_batch(support, tiny_model), names_filter=hook)
        mean = cache[hook][:, 1:, idx].reshape(-1, 3).mean(0)

        def by_hand(act, hook):
            act = act.clone()
            act[..., idx] = mean
            return act

        expected = tiny_model.run_with_hooks(images, fwd_hooks=[(hook, by_hand)])
        with ablate(tiny_model, [(hook, i) for i in idx], mode="mean", reference=support):
            got = tiny_model(images)
        clean = tiny_model(images)
    torch.testing.assert_close(got, expected)
    assert (got - clean).abs().max() > 1e-4
    with torch.no_grad():  # the hooks are gone after the block
        torch.testing.assert_close(tiny_model(images), clean)


def test_zero_and_resample_ablation(tiny_model, data):
    hook = "visual.blocks.2.hook_resid_post"
    images = to_batch(data[1][:2], tiny_model)
    with torch.no_grad(), ablate(tiny_model, [(hook, 5)], mode="zero"):
        _, cache = tiny_model.run_with_cache(images, names_filter=hook)
    assert torch.all(cache[hook][..., 5] == 0) and torch.any(cache[hook][..., 4] != 0)
    support = data[0]
    with torch.no_grad():
        _, ref = tiny_model.run_with_cache(to_batch(support, tiny_model), names_filter=hook)
        with ablate(tiny_model, [(hook, 5)], mode="resample", reference=support, seed=1):
            _, cache = tiny_model.run_with_cache(images, names_filter=hook)
    pool = set(np.round(ref[hook][:, 1:, 5].flatten().numpy(), 5).tolist())
    drawn = set(np.round(cache[hook][..., 5].flatten().numpy(), 5).tolist())
    assert drawn <= pool and len(drawn) > len(pool) // 4  # random reference patches, not one of them
    # several neurons take their values from the same reference patch, jointly
    with torch.no_grad(), ablate(tiny_model, [(hook, 5), (hook, 6)], mode="resample", reference=support, seed=2):
        _, cache = tiny_model.run_with_cache(images, names_filter=hook)
    pairs = {tuple(v) for v in np.round(ref[hook][:, 1:, 5:7].flatten(0, 1).numpy(), 5).tolist()}
    assert {tuple(v) for v in np.round(cache[hook][..., 5:7].flatten(0, 1).numpy(), 5).tolist()} <= pairs


def test_ablation_bad_input(tiny_model):
    with pytest.raises(ValueError, match="unknown hook name 'visual.blocks.9.hook_resid_post'"):
        with ablate(tiny_model, [("visual.blocks.9.hook_resid_post", 0)]):
            pass
    with pytest.raises(ValueError, match="channel 64 out of range"):
        with ablate(tiny_model, [("visual.blocks.0.hook_resid_post", 64)]):
            pass
    with pytest.raises(ValueError, match="needs reference images"):
        with ablate(tiny_model, [("visual.blocks.0.hook_resid_post", 1)], mode="mean"):
            pass
    pairs = random_like(tiny_model, [("visual.blocks.0.hook_resid_post", 1), ("visual.blocks.0.hook_resid_post", 2)], seed=0)
    assert len(pairs) == 2 and all(i not in (1, 2) for _, i in pairs)


def test_single_neuron_sweep_ranks_planted_first(planted_model, data):
    support, test, labels, _ = data
    lake = Lake(planted_model, ONE_NEURON.replace(layers=(0,)), class_name="disc").fit(support)
    hook = lake.hooks[0]  # block 0: read downstream, at the final block's residual stream
    rows = single_neuron_sweep(lake, [(hook, 3), (hook, CHANNEL), (hook, 20)], support, test, labels, progress=False)
    assert rows[0]["index"] == CHANNEL and rows[0]["score_drop"] > 0
    assert rows[0]["score_drop"] > 5 * max(abs(r["score_drop"]) for r in rows[1:])
    assert {r["readout"] for r in rows} == {"downstream"} and not any(r["read_directly"] for r in rows)
    with pytest.raises(ValueError, match="reads exactly the ablated channels"):
        single_neuron_sweep(lake, list(lake.neurons), support, test, labels, readout=None, progress=False)


def test_patching_planted_neuron_removes_anomaly_score(planted_lake, data):
    """Normal values of the planted channel patched in at block 0, read downstream (the final
    block's residual stream, all channels, fitted on the support): much of the anomaly gap goes,
    a random channel's patch removes nothing; LAKE read on its own patched neurons is refused."""
    support, test, labels, _ = data
    anomalous = [s for s in test if s.label == 1][:4]
    normal = [s for s in test if s.label == 0][:1]
    first = planted_lake.hooks[0]
    result = patch_neurons(planted_lake, normal, anomalous, [(first, CHANNEL), (first, 3)], support=support)
    assert result.meta["readout"] == "downstream" and result.meta["readout_reads_ablated"] == []
    assert result.meta["patched"] == [[first, CHANNEL], [first, 3]]
    assert result.removed[f"{first}[{CHANNEL}]"] > 0.4 and result.restored[f"{first}[{CHANNEL}]"] > 0.4
    assert abs(result.removed[f"{first}[3]"]) < 0.1
    assert set(result.removed) >= {"all", first}
    assert result.removed_maps["all"].shape == (4, 64, 64)
    with pytest.raises(ValueError, match="reads exactly the ablated channels"):
        patch_neurons(planted_lake, normal, anomalous, list(planted_lake.neurons), readout=None)
    with pytest.raises(ValueError, match="needs support="):
        patch_neurons(planted_lake, normal, anomalous, [(first, CHANNEL)])
    # a pair without a gap (the normal image against itself) neither counts nor breaks the fractions
    units = [(first, CHANNEL)]
    alone = patch_neurons(planted_lake, normal, anomalous, units, per_neuron=False, support=support)
    nearly = patch_neurons(planted_lake, normal, anomalous + normal, units, per_neuron=False, support=support)
    assert nearly.n_pairs == 4 and float(nearly.anomalous_scores[-1] - nearly.normal_scores[-1]) == 0
    assert nearly.removed["all"] == pytest.approx(alone.removed["all"], abs=1e-6)
    with pytest.warns(UserWarning, match="no anomalous image scores above"):
        none = patch_neurons(planted_lake, normal, normal, units, per_neuron=False, support=support)
    assert np.isnan(none.removed["all"]) and none.n_pairs == 0


def test_patching_more_pairs_than_a_batch_matches_pair_by_pair(planted_model, data):
    """With more pairs than the readout's batch_size each scoring batch gets its own source rows:
    the patched scores equal those of patching every pair on its own."""
    support, test, _, _ = data
    small = Lake(planted_model, LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0, batch_size=3,
                                           layers=(0,)), class_name="disc").fit(support)
    anomalous = [s for s in test if s.label == 1][:4]
    normal = [s for s in test if s.label == 0][:4]
    neurons = list(small.neurons)
    together = patch_neurons(small, normal, anomalous, neurons, per_neuron=False, support=support)
    alone = [patch_neurons(small, [n], [a], neurons, per_neuron=False, support=support) for n, a in zip(normal, anomalous)]
    for label in together.patched_scores:
        expected = torch.cat([r.patched_scores[label] for r in alone])
        torch.testing.assert_close(together.patched_scores[label], expected, rtol=1e-5, atol=1e-6)
    assert together.removed_maps["all"].shape == (4, 64, 64)


def test_sweep_over_k_and_text_weight(planted_model, data):
    support, test, _, _ = data
    base = LakeConfig(distance="euclidean", text_weight=0.0)
    res = sweep(planted_model, support, test, "k_neurons", [1, 4], base=base, seeds=(0, 1))
    assert [(r["value"], r["condition"]) for r in res.rows] == [
        (1, "selected"), (1, "random"), (1, "random"), (4, "selected"), (4, "random"), (4, "random")]
    summary = {(r["value"], r["condition"]): r["mean"] for r in res.summary("pixel_auroc")}
    assert summary[(1, "selected")] > 0.98 and summary[(1, "selected")] > summary[(1, "random")]
    tw = sweep(planted_model, support, test, "text_weight", [0.0, 1.0], base=base.replace(k_neurons=4), control=False)
    assert [r["value"] for r in tw.rows] == [0.0, 1.0]
    with pytest.raises(ValueError, match="cannot sweep 'kk'"):
        sweep(planted_model, support, test, "kk", [1])


def test_neuron_words_against_hand_computation(tiny_model):
    hook_mlp, hook_res = "visual.blocks.3.mlp.hook_post", "visual.blocks.2.hook_resid_post"
    words = ["scratch", "metal", "flawless"]
    result = neuron_words(tiny_model, [(hook_mlp, 5), (hook_res, 7)], vocabulary=words, path="direct")
    with torch.no_grad():
        text = tiny_model.encode_text(tiny_model.tokenizer([f"a photo of {w}." for w in words]))
        text = text / text.norm(dim=-1, keepdim=True)
        w, proj = tiny_model.visual.ln_post.weight, tiny_model.visual.proj
        for row, d in enumerate([tiny_model.visual.blocks[3].mlp.c_proj.weight[:, 5], torch.eye(64)[7]]):
            e = ((d - d.mean()) * w) @ proj
            torch.testing.assert_close(result.similarity[row], text @ (e / e.norm()), atol=1e-5, rtol=1e-4)
    assert result.top(1)[0]["top"][0][0] == words[int(result.similarity[0].argmax())]
    with pytest.raises(ValueError, match="not 'visual.blocks.1.ln1.hook_normalized'"):
        neuron_words(tiny_model, [("visual.blocks.1.ln1.hook_normalized", 0)], path="direct")


def test_causal_figures_build_and_export(planted_lake, planted_model, data, tmp_path):
    from lake_interp.export import save_figure
    from lake_interp.interp import ablation_figure, neuron_sweep_figure, patching_figure, sweep_figure, words_figure

    support, test, labels, masks = data
    neurons = list(planted_lake.neurons)
    effect = ablation_effect(planted_lake, neurons, support, test[:6], labels[:6], masks[:6], n_random=1)
    patched = patch_neurons(planted_lake, [s for s in test if s.label == 0][:1], [s for s in test if s.label == 1][:2],
                            neurons, support=support)
    sw = sweep(planted_model, support, test, "k_neurons", [1, 2], base=ONE_NEURON)
    figs = {
        "ablation": ablation_figure(effect),
        "single": neuron_sweep_figure(single_neuron_sweep(planted_lake, neurons[:2], support, test[:4], labels[:4])),
        "patching": patching_figure(patched),
        "sweep": sweep_figure(sw, "pixel_auroc"),
        "words": words_figure(neuron_words(planted_model, neurons, reference=support)),
    }
    assert len(figs["ablation"].data) == 3 and len(figs["sweep"].data) == 2
    assert list(figs["ablation"].data[1].y)[1] == pytest.approx(effect.ablated["pixel_auroc"])
    for name, fig in figs.items():
        written = save_figure(fig, tmp_path / name)
        assert sorted(p.suffix for p in written) == [".html", ".pdf", ".png", ".svg"]
        assert all(p.stat().st_size > 500 for p in written)


def test_neuron_explorer_static_views(planted_lake, data):
    from lake_interp.interp.explorer import NeuronExplorer

    support, test, labels, _ = data
    explorer = NeuronExplorer(planted_lake, test, support, n_top=4)
    hook = explorer.hooks[0]
    assert explorer.channels(hook) == [CHANNEL]
    anomalous = int(np.flatnonzero(labels == 1)[0])
    figs = explorer.figures(hook, CHANNEL, anomalous)
    assert set(figs) == {"top_patches", "heatmap", "ablation", "words", "attribution"}
    heat = next(t for t in figs["attribution"].data if t.type == "heatmap")
    attr = np.asarray(heat.z, float)  # the planted channel's per-pixel attribution: on the defect
    mask = test[anomalous].mask
    assert mask is not None and attr.shape == mask.shape
    assert attr[mask].mean() > attr[~mask].mean()
    clean_s, ablated_s, random_s = [float(a.text.split("score ")[1][:-1]) for a in figs["ablation"].layout.annotations]
    assert clean_s - ablated_s > 3 * abs(clean_s - random_s)  # the planted channel, not any channel of its hook
    shown = explorer.show(static=True)  # no widget front end: the same figures, returned
    assert set(shown) == set(figs)
    with pytest.raises(ValueError, match="not among"):
        explorer.figures(hook, 3)


def test_ablation_views_leave_the_lake_as_it_was_and_reuse_its_text(planted_model, data, monkeypatch):
    """ablation_effect, single_neuron_sweep and the explorer rebuild banks on copies: the user's
    detector keeps its own bank (here fitted on other images than the views get) and text features,
    which are not computed again."""
    from lake_interp.interp.explorer import NeuronExplorer

    support, test, labels, _ = data
    lake = Lake(planted_model, LakeConfig(k_neurons=2, text_weight=0.3), class_name="disc").fit(support[:1])
    before = {h: b.clone() for h, b in lake.banks.items()}
    text, clean = lake.text_features, lake.score(test[:2]).maps
    calls = []
    monkeypatch.setattr(Lake, "compute_text_features", lambda self: calls.append(1) or text)
    neurons = list(lake.neurons)
    ablation_effect(lake, neurons, support, test, labels, n_random=1)
    single_neuron_sweep(lake, neurons[:1], support, test, labels)
    NeuronExplorer(lake, test, support, n_top=2).figures(*neurons[0], 0)
    assert calls == []
    assert lake.text_features is text and all(torch.equal(lake.banks[h], b) for h, b in before.items())
    torch.testing.assert_close(lake.score(test[:2]).maps, clean, rtol=0, atol=0)
    with pytest.raises(ValueError, match="support is None"):
        NeuronExplorer(lake, test)


def test_neuron_explorer_controls_redraw_and_switch_category(planted_model, data, monkeypatch):
    """The widget logic without a front end: every control change draws the neuron it now shows."""
    ipywidgets = pytest.importorskip("ipywidgets")
    from lake_interp.interp.explorer import NeuronExplorer

    support, test, _, _ = data
    disc = Lake(planted_model, ONE_NEURON.replace(k_neurons=2), class_name="disc").fit(support)
    other = Lake(planted_model, ONE_NEURON.replace(k_neurons=3, criterion="random"), class_name="other").fit(support)
    explorer = NeuronExplorer(categories={"disc": (disc, test, support), "other": (other, test[:3], support)})
    drawn = []
    monkeypatch.setattr(explorer, "figures", lambda h, c, i: drawn.append((explorer.category, h, c, i)) or {})
    box = explorer._widget(ipywidgets)
    (category, hook, channel), (prev, step, image) = box.children[0].children, box.children[1].children
    order = list(disc.neurons)  # the order "next" steps through
    assert drawn[-1] == ("disc", *order[0], 0)
    second = explorer.hooks[1]
    n = len(drawn)
    hook.value = second  # a new layer redraws (once) even when its first channel index is the same
    assert len(drawn) == n + 1
    assert drawn[-1] == ("disc", second, explorer.channels(second)[0], 0)
    step.click()
    assert drawn[-1][1:3] == order[(order.index((second, explorer.channels(second)[0])) + 1) % len(order)]
    prev.click()
    assert drawn[-1] == ("disc", second, explorer.channels(second)[0], 0)
    image.value = 2
    assert drawn[-1][3] == 2
    n = len(drawn)
    category.value = "other"  # the layer list, neurons and image range follow the category, drawn once
    assert len(drawn) == n + 1
    assert drawn[-1] == ("other", *list(other.neurons)[0], 0) and image.max == 2
    assert list(hook.options) == explorer.hooks and channel.value == list(other.neurons)[0][1]
    with pytest.raises(ValueError, match="unknown category"):
        explorer.select("nope")
