"""Predict like a deployed detector: thresholds chosen on data the detector may see (checked against
brute force with sklearn), stored with the detector, decisions and masks at them, contour overlays."""

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import f1_score

from lake_interp.lake import Lake, LakeConfig
from lake_interp.lake.threshold import Threshold, f1_optimal, from_validation


def brute_force_f1(scores, labels):
    """(best F1, highest threshold reaching it) over every candidate cut, with sklearn's f1_score."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).astype(int).ravel()
    best, best_t = -1.0, None
    for t in sorted(set(scores.tolist())):  # ascending: among equal maxima the last, highest threshold wins
        f = f1_score(labels, (scores >= t).astype(int), zero_division=0)
        if f > best + 1e-12:
            best, best_t = f, t
        elif abs(f - best) <= 1e-12:
            best_t = t
    return best, best_t


@pytest.mark.parametrize("seed", range(6))
def test_f1_optimal_is_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    labels = rng.random(n) < 0.4
    labels[0] = True
    scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 2), 1)  # rounded: many ties
    t, f1 = f1_optimal(scores, labels)
    best, best_t = brute_force_f1(scores, labels)
    assert f1 == pytest.approx(best, abs=1e-12)
    assert t == best_t
    assert f1_score(labels, scores >= t) == pytest.approx(f1, abs=1e-12)


def test_f1_ties_take_the_highest_threshold():
    # cut at 4: tp 1, fp 0 -> F1 2/3; cut at 1: tp 2, fp 2 -> F1 2/3 as well
    assert f1_optimal([4.0, 3.0, 2.0, 1.0], [1, 0, 0, 1]) == (4.0, pytest.approx(2 / 3))
    assert brute_force_f1([4.0, 3.0, 2.0, 1.0], [1, 0, 0, 1]) == (pytest.approx(2 / 3), 4.0)


def test_validation_rules_against_brute_force():
    rng = np.random.default_rng(3)
    n, s = 7, 6
    labels = np.array([0, 0, 1, 1, 1, 0, 1])
    maps = rng.random((n, s, s)).astype(np.float32)
    masks = [None] * n
    for i in (2, 3):  # two anomalous images with masks; image 4 anomalous without one; image 6 a mask too
        m = np.zeros((s, s), bool)
        m[1:4, 2:5] = True
        maps[i][m] += 0.5
        masks[i] = m
    masks[6] = np.zeros((s, s), bool)
    masks[6][0, 0] = True
    scores = maps.reshape(n, -1).max(1)
    t = from_validation(scores, maps, labels, masks)
    assert t.method == "validation_f1"
    assert (t.details["image_f1"], t.image) == pytest.approx(brute_force_f1(scores, labels))
    used = [0, 1, 2, 3, 5, 6]  # normal images (all-normal pixels) and anomalous ones with masks; not image 4
    truth = np.stack([masks[i] if labels[i] else np.zeros((s, s), bool) for i in used])
    best, best_t = brute_force_f1(maps[used], truth)
    assert (t.details["pixel_f1"], t.pixel) == pytest.approx((best, best_t))

    normal_only = from_validation(scores[labels == 0], maps[labels == 0])
    assert normal_only.method == "validation_normal_quantile"
    assert normal_only.image == max(scores[labels == 0])  # q = 1: the highest normal score
    assert normal_only.pixel == max(maps[labels == 0].ravel())
    v = np.sort(scores[labels == 0])  # q = 0.5 by hand: linear interpolation between order statistics
    pos = 0.5 * (len(v) - 1)
    expected = v[int(np.floor(pos))] + (pos - np.floor(pos)) * (v[int(np.ceil(pos))] - v[int(np.floor(pos))])
    assert from_validation(scores[labels == 0], maps[labels == 0], q=0.5).image == pytest.approx(expected)
    with pytest.raises(ValueError, match="quantile"):
        from_validation(scores, maps, q=0.0)
    with pytest.raises(ValueError, match="no normal image"):
        from_validation(scores[labels == 1], maps[labels == 1], labels[labels == 1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from lake_interp.data import MVTecAD, make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc"], seed=2, image_size=64,
                                  n_train=3, n_test_good=2, n_test_defect=1, defects=["hole", "scratch"])
    return MVTecAD(root, "disc", "train").few_shot(3, 0), list(MVTecAD(root, "disc", "test"))


@pytest.fixture(scope="module")
def lake(tiny_model, data):
    support, _ = data
    return Lake(tiny_model, LakeConfig(k_neurons=8), class_name="disc").fit(support)


def test_support_threshold_is_leave_one_out(tiny_model, data, lake):
    support, _ = data
    # a bank holding an image's own patches gives it distance 0 everywhere: why leave-one-out
    assert float(lake.score(support).visual_maps.abs().max()) < 1e-5
    calibrated = Lake(tiny_model, lake.config, "disc").fit(support).calibrate_support(support)
    held_out = []
    for i in range(len(support)):  # independently: refit on the others with the same neurons, score the one left out
        rest = [s for j, s in enumerate(support) if j != i]
        other = Lake(tiny_model, lake.config, "disc").fit(rest, neurons=lake.neurons, text_features=lake.text_features)
        held_out.append(other.score([support[i]]))
    scores = torch.cat([r.image_scores for r in held_out])
    maxima = torch.cat([r.maps for r in held_out]).flatten(1).max(1).values
    t = calibrated.threshold
    assert t.method == "support_leave_one_out_quantile" and t.details["n_normal"] == 3
    assert t.image == pytest.approx(float(scores.max()), rel=1e-6)
    assert t.pixel == pytest.approx(float(maxima.max()), rel=1e-6)
    assert t.image > 1e-3  # not the 0 of an image scored against itself
    with pytest.raises(ValueError, match="at least 2 support images"):
        calibrated.calibrate_support(support[:1])


def test_predict_decides_at_the_thresholds(lake, data):
    _, test = data
    lake.calibrate(test[:4])  # labelled images: F1-optimal (a validation split in real use)
    assert lake.threshold.method == "validation_f1"
    pred = lake.predict(test)
    r = lake.score(test)
    assert torch.equal(pred.image_scores, r.image_scores) and torch.equal(pred.maps, r.maps)
    assert pred.labels.tolist() == [float(s) >= lake.threshold.image for s in r.image_scores]
    assert np.array_equal(pred.masks.numpy(), r.maps.numpy().astype(np.float64) >= lake.threshold.pixel)
    given = lake.predict(test, threshold=0.25, pixel_threshold=0.2)
    assert given.threshold.method == "given"
    assert given.labels.tolist() == [float(s) >= 0.25 for s in r.image_scores]
    assert np.array_equal(given.masks.numpy(), r.maps.numpy() >= 0.2)
    # a pixel threshold alone keeps the stored image threshold
    pix = lake.predict(test, pixel_threshold=0.2)
    assert pix.threshold.image == lake.threshold.image and np.array_equal(pix.masks.numpy(), r.maps.numpy() >= 0.2)
    # at an image's own size: the resized map thresholded; the overlay carries the mask's contour
    from lake_interp.lake.inputs import resize_map

    image = test[2].image.resize((90, 50))
    expected_full = resize_map(r.maps[2], 50, 90)
    at = float(np.sort(expected_full.ravel())[int(0.7 * expected_full.size)])  # a value the map takes: >= vs >
    pred = lake.predict(test, pixel_threshold=at)
    full, mask = pred.full_size(2, 90, 50)
    assert np.array_equal(full, expected_full) and np.array_equal(mask, expected_full >= at)
    assert 0.2 < mask.mean() < 0.4
    check_contour_overlay(pred.overlay(2, image), image, full, mask)


def check_contour_overlay(drawn, image, full, mask, vmin=None, vmax=None):
    """White exactly on the mask's inner boundary (scipy's erosion, border counted as outside); the
    plain overlay everywhere else."""
    from lake_interp.render import overlay

    drawn = np.asarray(drawn)
    assert drawn.shape == (image.size[1], image.size[0], 3)
    boundary = mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    assert np.all(drawn[boundary] == 255)
    plain = np.asarray(overlay(image, full, vmin=vmin, vmax=vmax))
    assert np.array_equal(drawn[~boundary], plain[~boundary])
    assert not np.any(np.all(plain == 255, axis=-1))  # white never comes from the blend itself


def test_contour_on_a_known_mask():
    from lake_interp.render import contour

    m = np.zeros((7, 8), bool)
    m[1:5, 2:7] = True
    m[6, 0:3] = True  # touching the border
    expected = m.copy()
    expected[2:4, 3:6] = False  # the interior of the rectangle
    assert np.array_equal(contour(m), expected)


def test_threshold_is_saved_versioned_and_old_detectors_say_what_to_do(tiny_model, lake, data, tmp_path):
    _, test = data
    lake.calibrate(test[:4])
    lake.save(tmp_path / "det")
    back = Lake.load(tmp_path / "det", tiny_model)
    assert back.threshold == lake.threshold
    meta = json.loads((tmp_path / "det" / "lake.json").read_text())
    assert meta["threshold"]["version"] == 1 and meta["threshold"]["image"] == lake.threshold.image
    # a detector saved before thresholds existed: no field
    old = tmp_path / "old"
    old.mkdir()
    (old / "tensors.safetensors").write_bytes((tmp_path / "det" / "tensors.safetensors").read_bytes())
    (old / "lake.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "threshold"}))
    loaded = Lake.load(old, tiny_model)
    assert loaded.threshold is None
    with pytest.raises(ValueError, match="no decision threshold.*refit.*--threshold"):
        loaded.predict(test[:1])
    assert loaded.predict(test[:1], threshold=0.3).labels.dtype == torch.bool
    meta["threshold"]["version"] = 99
    (old / "lake.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="field 'threshold': version 99"):
        Lake.load(old, tiny_model)
    meta["threshold"].update(version=1, image=float("nan"))
    (old / "lake.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="field 'threshold'.*finite"):
        Lake.load(old, tiny_model)
    # a bank rebuilt on other images does not keep thresholds chosen for the old one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert lake.with_bank_from(data[0][:2]).threshold is None


def test_threshold_values_are_checked():
    with pytest.raises(ValueError, match="finite"):
        Threshold.given(float("inf"))
    assert Threshold.given(0.4).pixel == 0.4
    with pytest.raises(ValueError, match="method"):
        Threshold(0.1, 0.1, "guess")
    with pytest.raises(ValueError, match="at least one anomalous"):
        f1_optimal([0.1, 0.2], [0, 0])


def test_one_default_k_rule(tiny_model, capsys):
    """The paper's K = 100 where the hooks are wide enough, a quarter of the narrowest hook's channels
    otherwise, said on stdout: LakeConfig.for_model and the CLI's with_default_k agree."""
    from types import SimpleNamespace

    from lake_interp.cli import with_default_k

    d_model, d_mlp = tiny_model.cfg.vision.d_model, tiny_model.cfg.vision.d_mlp
    assert LakeConfig.for_model(tiny_model).k_neurons == d_model // 4 == 16
    assert f"k_neurons 16 (a quarter of the {d_model} channels" in capsys.readouterr().out
    assert LakeConfig.for_model(tiny_model, sites=["mlp.hook_post"]).k_neurons == d_mlp // 4
    assert LakeConfig.for_model(tiny_model, sites=["mlp.hook_post", "hook_resid_post"]).k_neurons == d_model // 4
    assert LakeConfig.for_model(tiny_model, k_neurons=5).k_neurons == 5
    assert capsys.readouterr().out.count("a quarter of") == 2  # said where chosen, not where given
    assert with_default_k({}, tiny_model) == {"k_neurons": 16}
    assert with_default_k({"sites": ["mlp.hook_post"]}, tiny_model)["k_neurons"] == d_mlp // 4
    assert with_default_k({"k_neurons": 3}, tiny_model) == {"k_neurons": 3}
    wide = SimpleNamespace(cfg=SimpleNamespace(name="wide", vision=SimpleNamespace(n_layers=12)))
    import lake_interp.model.hook_sites as hook_sites

    original = hook_sites.channel_width
    try:
        hook_sites.channel_width = lambda model, hook: 768  # a ViT-B-wide stand-in
        capsys.readouterr()
        assert LakeConfig.for_model(wide).k_neurons == 100 and with_default_k({}, wide) == {}
        assert capsys.readouterr().out == ""  # the paper's K: nothing to say
    finally:
        hook_sites.channel_width = original
