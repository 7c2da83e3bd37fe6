"""Attribution patching of LAKE scores and maps (lake_interp.interp.attribution), proven against
independent computations: Lake.score (the no-grad scoring), finite differences through hooks,
measured single-unit ablations (ablate + Lake.score), and the planted magenta channel."""

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr

from lake_interp import Lake, LakeConfig
from lake_interp.data import MVTecAD
from lake_interp.evaluation import refit
from lake_interp.interp.ablation import ablate
from lake_interp.interp.attribution import (
    attribute,
    attribution_figure,
    attribution_map_figure,
    comparison_figure,
    compare_with_ablation,
    lake_maps,
)
from lake_interp.interp.readout import make_readout
from lake_interp.lake.inputs import resize_mask, to_batch
from tests.conftest import CHANNEL


@pytest.fixture(scope="module")
def data(magenta_root):
    support = MVTecAD(magenta_root, "disc", "train").few_shot(k=2, seed=0)
    test = list(MVTecAD(magenta_root, "disc", "test"))
    anomalous = [s for s in test if s.label == 1][:4]
    normal = [s for s in test if s.label == 0][:4]
    return support, anomalous, normal


def planted_units(model):
    return {(f"visual.blocks.{b}.hook_resid_post", CHANNEL) for b in range(model.cfg.vision.n_layers)}


def scaled(unit, eps, reference=None):
    """A hook moving the unit by -eps * (act - reference) at every position (reference 0: zero mode)."""
    hook, c = unit

    def fn(act, hook):
        act = act.clone()
        ref = 0.0 if reference is None else reference
        act[..., c] = act[..., c] - eps * (act[..., c] - ref)
        return act

    return [(hook, fn)]


def region_mean(maps, masks):
    m = maps.double().numpy()
    return (m * masks).reshape(len(m), -1).sum(1) / masks.reshape(len(m), -1).sum(1)


@pytest.mark.parametrize("cfg", [LakeConfig(k_neurons=8, standardize=True),
                                 LakeConfig(k_neurons=4, distance="euclidean", image_score="top_mean", text_weight=0.5)])
def test_differentiable_scoring_equals_lake_score(tiny_model, data, cfg):
    support, anomalous, _ = data
    lake = Lake(tiny_model, cfg, class_name="disc").fit(support)
    images = [s.image for s in anomalous[:2]]
    expected = lake.score(images)
    maps, scores = lake_maps(lake, lake.patch_activations(images, lake.required_hooks))
    # (euclidean: cdist there, the difference's norm here: fp32 rounding apart)
    torch.testing.assert_close(maps, expected.maps, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(scores, expected.image_scores, atol=2e-5, rtol=1e-4)
    # with support activations the bank is rebuilt as a refit does
    refitted = refit(lake, support).score(images)
    maps2, _ = lake_maps(lake, lake.patch_activations(images, lake.required_hooks),
                         lake.patch_activations(support, lake.hooks))
    torch.testing.assert_close(maps2, refitted.maps, atol=2e-5, rtol=1e-4)


UNITS = [("visual.blocks.1.mlp.hook_post", 5), ("visual.blocks.2.hook_resid_post", 3),
         ("visual.blocks.0.hook_resid_post", 10)]


def test_attribution_and_pixel_maps_equal_finite_differences(tiny_model, data):
    """The detector's own fused map (semantic branch on, standardised bank): the attribution of each
    unit and its per-pixel map equal central finite differences of Lake.score with the unit moved
    towards its reference through a hook."""
    support, anomalous, _ = data
    lake = Lake(tiny_model, LakeConfig(k_neurons=8, standardize=True), class_name="disc").fit(support)
    images = [s.image for s in anomalous[:2]]
    r = attribute(lake, images, "map", UNITS, readout="detector", map_units=UNITS)
    assert r.meta["cost"]["backward_passes"] == 1 and r.values.shape == (2, 3)
    eps = 1e-2
    for u in UNITS:
        with tiny_model.hooks(fwd_hooks=scaled(u, eps)):
            plus = lake.score(images)
        with tiny_model.hooks(fwd_hooks=scaled(u, -eps)):
            minus = lake.score(images)
        fd = (minus.image_scores - plus.image_scores).double().numpy() / (2 * eps)
        np.testing.assert_allclose(r.values[:, r.units.index(u)], fd, rtol=0.05, atol=2e-6)
        fd_map = (minus.maps - plus.maps).double().numpy() / (2 * eps)
        assert np.abs(r.pixel_maps[u] - fd_map).max() < 0.1 * np.abs(fd_map).max()
        # the patch map and the class token part sum to the attribution
        np.testing.assert_allclose(r.patch_maps[u].sum(axis=(1, 2)) + r.class_token_part[u],
                                   r.values[:, r.units.index(u)], rtol=1e-4, atol=1e-8)


def test_region_mean_mode_and_refit_bank_equal_finite_differences(tiny_model, data):
    """Region target, mean mode (the support's mean), downstream readout with the bank refitted
    under the change (the unit moved in the support images as well)."""
    support, anomalous, _ = data
    lake = Lake(tiny_model, LakeConfig(k_neurons=8), class_name="disc").fit(support)
    images = [s.image for s in anomalous[:2]]
    masks = [s.mask for s in anomalous[:2]]
    r = attribute(lake, images, "region", UNITS, region=masks, mode="mean", support=support, bank="refit")
    assert r.meta["readout"] == "downstream" and r.support_part is not None
    reader = make_readout(lake, UNITS, support, "downstream").detector
    m = np.stack([resize_mask(k, tiny_model.image_size) for k in masks])
    eps = 1e-3  # the nearest neighbours switch within 1e-2 for one unit (piecewise-smooth target)
    for u in UNITS:
        with torch.no_grad():
            _, cache = tiny_model.run_with_cache(to_batch(support, tiny_model), names_filter=u[0])
        mean = cache[u[0]][:, 1:, u[1]].mean()
        out = []
        for e in (eps, -eps):
            with tiny_model.hooks(fwd_hooks=scaled(u, e, mean)):
                out.append(region_mean(refit(reader, support).score(images).maps, m).mean())
        fd = (out[1] - out[0]) / (2 * eps)
        assert r.mean[r.units.index(u)] == pytest.approx(fd, rel=0.05, abs=1e-5)


def test_refit_bank_over_several_batches_forwards_the_support_once(tiny_model, data):
    """bank="refit" with one image per batch: the same attribution as one batch holding every image
    (the support's graph serves every batch), and the support counted as one forward pass."""
    support, anomalous, _ = data
    lake = Lake(tiny_model, LakeConfig(k_neurons=8), class_name="disc").fit(support)
    images = [s.image for s in anomalous[:3]]
    one = attribute(lake, images, "score", UNITS, support=support, bank="refit", n_maps=0)
    per_image = attribute(lake, images, "score", UNITS, support=support, bank="refit", n_maps=0, batch_size=1)
    np.testing.assert_allclose(per_image.values, one.values, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(per_image.mean, one.mean, rtol=1e-4, atol=1e-7)
    assert per_image.meta["cost"]["forward_passes"] == 3 + 1 and one.meta["cost"]["forward_passes"] == 1 + 1


def test_planted_unit_ranks_first_for_anomalous_region_not_for_normal(planted_model, data):
    """Magenta defects, planted channel 7 (the same value at every block: no block writes it), read
    downstream (final block, all channels). Target: the mean map over the defect mask -> a planted
    unit ranks first (bank fixed or refitted). Over a normal region (12 px away from the defect) and
    on normal images with the bank refitted (the ablation acts on the support too, as in
    ablation_effect), no planted unit is near the top. (With a fixed bank the planted unit does matter
    for normal regions: zeroing it in the test image alone moves every patch away from its bank.)"""
    support, anomalous, normal = data
    lake = Lake(planted_model, LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0), class_name="disc")
    lake.fit(support)
    images, masks = [s.image for s in anomalous], [s.mask for s in anomalous]
    planted = planted_units(planted_model)
    for bank in ("fixed", "refit"):
        r = attribute(lake, images, "region", region=masks, support=support, bank=bank, n_maps=0)
        top = r.top(1)[0]
        assert (top["hook"], top["channel"]) in planted, (bank, top)
        assert top["attribution"] > 3 * max(abs(r.mean[j]) for j, u in enumerate(r.units) if u not in planted)
    far = [~binary_dilation(m.astype(bool), iterations=12) for m in masks]
    r = attribute(lake, images, "region", region=far, support=support, bank="refit", n_maps=0)
    assert min(r.rank_of(u) for u in planted) > 3
    r = attribute(lake, [s.image for s in normal], "score", support=support, bank="refit", n_maps=0)
    assert min(r.rank_of(u) for u in planted) > 20


def measured_by_hand(lake, images, units, support):
    """Mean image-score drop when each unit is zeroed alone, read by the downstream readout with its
    bank refitted under the ablation (ablate + Lake.score, no attribution code)."""
    reader = make_readout(lake, units[:1], support, "downstream").detector
    clean = reader.score(images).image_scores.double().numpy()
    out = []
    for u in units:
        with ablate(lake.model, [u]):
            out.append(float((clean - refit(reader, support).score(images).image_scores.double().numpy()).mean()))
    return np.array(out)


@pytest.mark.parametrize("which", ["planted_model", "tiny_model"])
def test_attribution_correlates_with_measured_ablation_of_top_50(which, request, data):
    """Top 50 units by |attribution| of the image score (downstream readout, bank refitted, zero
    mode): Spearman correlation with their measured single-unit ablation effect."""
    model = request.getfixturevalue(which)
    support, anomalous, _ = data
    lake = Lake(model, LakeConfig(k_neurons=8), class_name="disc").fit(support)
    images = [s.image for s in anomalous]
    r = attribute(lake, images, "score", support=support, bank="refit", n_maps=0)
    order = r.order(by="abs")[:50]
    units = [r.units[j] for j in order]
    measured = measured_by_hand(lake, images, units, support)
    rho = spearmanr(r.mean[order], measured).statistic
    assert rho > 0.5, rho
    # the library's comparison measures the same thing
    c = compare_with_ablation(lake, images, r, 50, support=support)
    assert c["spearman"] == pytest.approx(rho, abs=1e-6) and c["n"] == 50
    assert comparison_figure(c).data


def test_plain_data_figures_and_what_the_target_reads(tiny_model, data, tmp_path):
    support, anomalous, _ = data
    lake = Lake(tiny_model, LakeConfig(k_neurons=8, text_weight=0.0), class_name="disc").fit(support)
    images = [s.image for s in anomalous[:2]]
    r = attribute(lake, images, "region", region=(0.25, 0.25, 0.75, 0.75), readout="detector", n_maps=3)
    n_units = 4 * (64 + 256)
    assert len(r.units) == n_units and r.values.shape == (2, n_units) and r.ranks.shape == (2, n_units)
    assert sorted(r.ranks[0]) == list(range(1, n_units + 1))
    # the detector reads its own selected channels: they are listed and flagged
    assert {tuple(p) for p in r.meta["read_directly"]} == set(lake.neurons)
    assert all(row["read_directly"] == ((row["hook"], row["channel"]) in set(lake.neurons)) for row in r.top(30))
    assert "box" in r.meta["target_description"] and r.meta["not_differentiable"]
    rows = r.rows()
    assert len(rows) == 3 * n_units and {"image", "hook", "channel", "block", "site", "attribution", "rank"} <= set(rows[0])
    assert len(r.patch_maps) == 3 and next(iter(r.patch_maps.values())).shape == (2, 8, 8)
    r.save(tmp_path / "a.json")
    back = type(r).load(tmp_path / "a.json")
    np.testing.assert_allclose(back.values, r.values) and json.loads((tmp_path / "a.json").read_text())
    assert back.units == r.units and set(back.patch_maps) == set(r.patch_maps)
    fig = attribution_figure(r, n=10)
    assert sum(len(t.x) for t in fig.data) == 10
    u = next(iter(r.patch_maps))
    assert attribution_map_figure(r, u, 0, images, tiny_model).data
    # several batches: the patch maps come from a second pass for the chosen units, same values
    r2 = attribute(lake, images, "region", region=(0.25, 0.25, 0.75, 0.75), readout="detector", n_maps=3, batch_size=1)
    np.testing.assert_allclose(r2.values, r.values, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(r2.patch_maps[u], r.patch_maps[u], rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="needs region"):
        attribute(lake, images, "region", readout="detector")
    with pytest.raises(ValueError, match="pass support"):
        attribute(lake, images, "score")


# --- section 2: the causal criterion on pseudo-anomalies --------------------------------------------------


def test_pseudo_anomalies_masks_are_exact_and_deterministic(data):
    from lake_interp.data.pseudo import KINDS, pseudo_anomalies

    support = data[0]
    a = pseudo_anomalies(support, seed=3)
    b = pseudo_anomalies(support, seed=3)
    c = pseudo_anomalies(support, seed=4)
    assert [p.kind for p in a] == list(KINDS) * len(support) and [p.source for p in a] == [0, 0, 0, 1, 1, 1]
    for p, q, r in zip(a, b, c):
        clean = np.asarray(support[p.source].image.convert("RGB"))
        img = np.asarray(p.image)
        np.testing.assert_array_equal(p.mask, (img != clean).any(-1))  # True exactly where it differs
        assert p.mask.sum() >= 4
        np.testing.assert_array_equal(img, np.asarray(q.image))
    assert any((np.asarray(p.image) != np.asarray(r.image)).any() for p, r in zip(a, c))


@torch.no_grad()
def plant_quiet_channel(model, channel, coefs):
    """Residual channel `channel` of every block = per patch coefs . mean RGB (pixels in [0, 1]);
    no block writes it (as tests/planted.py, with any colour direction)."""
    v, p = model.visual, model.cfg.vision.patch_size
    std = torch.tensor(model.image_std)
    v.conv1.weight[channel] = (torch.tensor(coefs, dtype=torch.float32) * std).view(3, 1, 1).expand(3, p, p) / p**2
    v.positional_embedding[:, channel] = 0.0
    v.class_embedding[channel] = 0.0
    for block in v.blocks:
        for w in (block.attn.out_proj, block.mlp.c_proj):
            w.weight[channel] = 0.0
            w.bias[channel] = 0.0
    return model


@pytest.fixture(scope="module")
def quiet_model(tiny_open_clip, data):
    """The planted channel reads the colour direction along which the normal support patches vary
    least (smallest eigenvector of their patch-mean colour covariance), with gain 30: nearly
    constant on normal images (low variance), moved by any colour change (magenta defects,
    pseudo-anomalies)."""
    from lake_interp import HookedCLIP

    support = data[0]
    p = 8
    x = np.stack([np.asarray(s.image.convert("RGB"), float) / 255 for s in support])
    n, h, w, _ = x.shape
    patches = x.reshape(n, h // p, p, w // p, p, 3).mean(axis=(2, 4)).reshape(-1, 3)
    quiet = np.linalg.eigh(np.cov(patches.T))[1][:, 0]
    return plant_quiet_channel(HookedCLIP.from_open_clip(tiny_open_clip, "lake-tiny"), CHANNEL, 30.0 * quiet)


def test_causal_criterion_picks_the_low_variance_planted_unit_variance_does_not(quiet_model, data, magenta_root):
    from lake_interp.evaluation import metrics

    support = data[0]
    cfg = LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0)
    var = Lake(quiet_model, cfg, class_name="disc").fit(support)
    attr = Lake(quiet_model, cfg.replace(criterion="attribution"), class_name="disc").fit(support)
    for h in var.hooks:  # variance: the planted channel is among the least varying; attribution: first
        assert int(var.neurons.indices[h][0]) != CHANNEL
        assert (var.neurons.all_scores[h] < var.neurons.all_scores[h][CHANNEL]).sum() < 8
        assert int(attr.neurons.indices[h][0]) == CHANNEL
    assert attr.neurons.criterion == "attribution"
    # and it is the unit that causes the response: the magenta defects are found with it, not without
    test = list(MVTecAD(magenta_root, "disc", "test"))
    labels = np.array([s.label for s in test])
    masks = [s.mask for s in test]
    m_attr, m_var = (metrics(d.score([s.image for s in test]), labels, masks) for d in (attr, var))
    assert m_attr["pixel_auroc"] > 0.95 and m_attr["pixel_auroc"] > m_var["pixel_auroc"] + 0.1
    # deterministic for a seed; another seed draws other pseudo-anomalies (other scores, same pick)
    again = Lake(quiet_model, cfg.replace(criterion="attribution"), class_name="disc").fit(support)
    other = Lake(quiet_model, cfg.replace(criterion="attribution", seed=1), class_name="disc").fit(support)
    for h in attr.hooks:
        torch.testing.assert_close(again.neurons.all_scores[h], attr.neurons.all_scores[h], rtol=0, atol=0)
        assert not torch.equal(other.neurons.all_scores[h], attr.neurons.all_scores[h])
        assert int(other.neurons.indices[h][0]) == CHANNEL
    with pytest.raises(ValueError, match="pseudo-anomalies made from the support"):
        Lake(quiet_model, cfg.replace(criterion="attribution"), class_name="disc").fit_activations(
            var.patch_activations(support, var.hooks))


def test_sweep_compares_the_criteria(quiet_model, data, magenta_root):
    from lake_interp.interp.sweep import sweep

    support = data[0]
    test = list(MVTecAD(magenta_root, "disc", "test"))
    cfg = LakeConfig(k_neurons=1, distance="euclidean", text_weight=0.0)
    res = sweep(quiet_model, support, test, "criterion", ["variance", "random", "attribution"], base=cfg,
                class_name="disc", progress=False)
    auroc = {r["value"]: r["pixel_auroc"] for r in res.rows}
    assert auroc["attribution"] > auroc["variance"] + 0.1
