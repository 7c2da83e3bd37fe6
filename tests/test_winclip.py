"""WinCLIP / WinCLIP+ (lake_interp.detectors.winclip) against anomalib 2.x's WinClipModel.

The fixture (tests/reference/winclip_fixture.*) was written by anomalib itself, in its own venv,
on seeded random open_clip weights (tests/reference/make_winclip_fixture.py). Here the same
seeded weights are wrapped as a HookedCLIP and must give the same numbers to 1e-4 relative.

`python tests/test_winclip.py` prints the measured agreement (max abs / rel difference) on the
whole fixture. The pytest run keeps to its time budget on 2 CPU cores: on ViT-B-16-plus-240 it
scores test image 0 only and takes the text embeddings from the fixture (our text path is
checked on lake-tiny, and on ViT-B-16-plus-240 too with WINCLIP_FULL_CHECK=1, which also scores
both test images: about 40 s more CPU).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lake_interp import HookedCLIP
from lake_interp.detectors import winclip as wc
from lake_interp.detectors.winclip import WinCLIP, WinCLIPConfig
from lake_interp.lake.config import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES

REF = Path(__file__).resolve().parent / "reference"
_spec = importlib.util.spec_from_file_location("make_winclip_fixture", REF / "make_winclip_fixture.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

META = json.loads(fx.META.read_text())
TENSORS = load_file(str(fx.FIXTURE))
FULL = os.environ.get("WINCLIP_FULL_CHECK") == "1"
RTOL = 1e-4
ATOL = 1e-7  # floor for values near 0 (few-shot distances); far below every compared value's 1e-4


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |ours - ref|, max |ours - ref| / |ref|)."""
    d = (ours.double() - ref.double()).abs()
    return d.max().item(), (d / ref.double().abs().clamp_min(1e-12)).max().item()


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs anomalib {tuple(ref.shape)}"
    torch.testing.assert_close(ours.float(), ref.float(), rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


class Case:
    """One fixture case: our detectors on the fixture's seeded model and inputs, embedded once."""

    def __init__(self, name: str, full: bool = True):
        spec = META["cases"][name]
        self.name, self.spec = name, spec
        oc = fx.build_open_clip(spec["model"], spec["model_seed"], spec["perturb_seed"], META["perturb_std"])
        if fx.state_sha256(oc) != spec["state_sha256"]:
            pytest.fail(f"random init of {spec['model']} drifted from the fixture (torch / open_clip version "
                        f"change?): regenerate with `{META['command']}`")
        self.model = HookedCLIP.from_open_clip(oc, spec["model"])
        del oc
        self.test, self.ref = fx.make_inputs(spec["image_size"], spec["input_seed"])
        if fx.tensor_sha256(self.test) != spec["test_sha256"] or fx.tensor_sha256(self.ref) != spec["reference_sha256"]:
            pytest.fail(f"seeded inputs drifted from the fixture: regenerate with `{META['command']}`")
        self.zero_shot = WinCLIP(self.model, class_name=META["class_name"])
        if full:
            self.zero_shot.fit(None)
        else:  # anomalib's own text embeddings: ~25 s of CPU less on ViT-B-16-plus-240
            self.zero_shot.text_embeddings = TENSORS[f"{name}/text_embeddings"].clone()
            self.test = self.test[:1]
        self.n_test = len(self.test)
        self.emb = self.zero_shot.embed(self.test)
        self.ref_emb = self.zero_shot.embed(self.ref)
        self.results = {k: self.detector(k).score_embeddings(self.emb) for k in META["shots"]}

    def detector(self, k: int) -> WinCLIP:
        return self.zero_shot if k == 0 else self.zero_shot.with_support(self.ref_emb[:k])

    def expected(self, k: int, name: str, mode: str = "fixed") -> torch.Tensor:
        return TENSORS[fx.key(self.name, mode, k, name)][: self.n_test]


_CASES: dict[str, Case] = {}


def get_case(name: str, full: bool = True) -> Case:
    """lake-tiny is always checked whole; ViT-B-16-plus-240 whole only when `full`."""
    full = full or name == "lake_tiny"
    if (name, full) not in _CASES:
        _CASES[name, full] = Case(name, full)
    return _CASES[name, full]


@pytest.fixture(scope="module", params=list(META["cases"]))
def case(request):
    yield get_case(request.param, FULL)


@pytest.fixture(scope="module")
def tiny():
    return get_case("lake_tiny")


# ------------------------------------------------------------------------------------------ agreement
def test_fixture_is_anomalib_2x():
    assert META["versions"]["anomalib"].startswith("2."), META["versions"]
    assert set(META["cases"]) == {"vit_b16_plus", "lake_tiny"}
    assert META["cases"]["vit_b16_plus"]["model"] == "ViT-B-16-plus-240"  # anomalib's default backbone
    assert fx.FIXTURE.stat().st_size < 2e6


def test_prompts_are_anomalib_not_lake_config():
    normal, anomalous = len(wc.ANOMALIB_NORMAL_STATES), len(wc.ANOMALIB_ANOMALOUS_STATES)
    assert (normal, anomalous, len(wc.ANOMALIB_TEMPLATES)) == (7, 4, 21)
    assert wc.ANOMALIB_NORMAL_STATES == NORMAL_STATES
    assert set(ANOMALOUS_STATES) - set(wc.ANOMALIB_ANOMALOUS_STATES) == {"broken {}"}
    assert wc.ANOMALIB_TEMPLATES.count("a jpeg corrupted photo of the {}.") == 2
    assert set(TEMPLATES) - set(wc.ANOMALIB_TEMPLATES) == {"a cropped photo of a {}.", "a jpeg corrupted photo of a {}."}


def test_text_embeddings_match_anomalib(case):
    if case.name != "lake_tiny" and not FULL:
        pytest.skip("text embeddings taken from the fixture here (WINCLIP_FULL_CHECK=1 computes them)")
    assert_matches(case.zero_shot.text_embeddings.cpu(), TENSORS[f"{case.name}/text_embeddings"], "text embeddings")


@pytest.mark.parametrize("k", [0, 1, 2])
def test_matches_anomalib(case, k):
    res = case.results[k]
    s = case.spec["image_size"]
    assert res.maps.shape == (case.n_test, s, s) and res.maps.device.type == "cpu"
    assert_matches(res.image_scores, case.expected(k, "pred_score"), f"{case.name} k={k} image scores")
    assert_matches(res.maps, case.expected(k, "anomaly_map"), f"{case.name} k={k} maps")
    assert_matches(res.parts["zero_shot_grid"], case.expected(k, "zero_shot_grid"), f"{case.name} k={k} zero-shot grid")
    if k:
        assert_matches(res.parts["few_shot_grid"], case.expected(k, "few_shot_grid"), f"{case.name} k={k} few-shot grid")
    assert torch.equal(res.parts["raw_maps"], res.maps)  # anomalib smooths nothing


@pytest.mark.parametrize("k", [0, 2])
def test_public_api_matches_anomalib(tiny, k):
    """fit(images) / score(images) end to end (tensor batch, list of tensors), small batches."""
    det = WinCLIP(tiny.model, {"batch_size": 1, "window_batch_size": 7}, class_name=META["class_name"], k_shot=k)
    det.fit(list(tiny.ref[:k]) if k else None)
    res = det.score(tiny.test)
    assert det.method == ("winclip_plus" if k else "winclip")
    assert_matches(res.image_scores, tiny.expected(k, "pred_score"), "image scores")
    assert_matches(res.maps, tiny.expected(k, "anomaly_map"), "maps")
    assert set(res.parts) >= {"raw_maps", "class_score", "zero_shot_map"} | ({"few_shot_map", "few_shot_max"} if k else set())


def test_stock_anomalib_window_pass_is_degenerate_and_differs(case):
    """Stock anomalib 2.7 + batch-first open_clip: every window embedding equal (recorded by the
    fixture script); our per-window attention gives other maps, well beyond tolerance."""
    assert META["cases"][case.name]["stock_window_spread"] == [0.0, 0.0]
    for w in case.emb.windows:  # ours: windows differ
        assert (w - w[:, :1]).abs().amax() > 1e-3
    ours = case.results[0].parts["zero_shot_grid"]
    assert rel_diff(ours, case.expected(0, "zero_shot_grid", "stock"))[1] > 100 * RTOL
    # the whole-image class score does not use the window pass: stock equals fixed there
    assert_matches(case.results[0].image_scores, case.expected(0, "pred_score", "stock"), "stock class score")


# ------------------------------------------------------------------------------------------ sensitivity
def _max_rel(res, case, k) -> float:
    return max(rel_diff(res.maps, case.expected(k, "anomaly_map"))[1],
               rel_diff(res.image_scores, case.expected(k, "pred_score"))[1])


@pytest.mark.parametrize("scales", [(2,), (3,), (2, 3, 4), (1, 2, 3)])
def test_wrong_scale_set_is_caught(tiny, scales):
    det = WinCLIP(tiny.model, WinCLIPConfig(scales=scales), class_name=META["class_name"])
    det.text_embeddings = tiny.zero_shot.text_embeddings
    plus = det.with_support(tiny.ref[:2])
    for k, d in ((0, det), (2, plus)):
        assert _max_rel(d.score(tiny.test), tiny, k) > 3 * RTOL, (scales, k)


def test_arithmetic_instead_of_harmonic_mean_is_caught(tiny, monkeypatch):
    def arithmetic(window_scores, cover, grid):
        return (window_scores.unsqueeze(1) * cover).sum(-1).div(cover.sum(1)).reshape(-1, grid, grid)

    monkeypatch.setattr(wc, "harmonic_aggregation", arithmetic)
    for k in (0, 2):
        res = tiny.detector(k).score_embeddings(tiny.emb)
        assert rel_diff(res.maps, tiny.expected(k, "anomaly_map"))[1] > 3 * RTOL, k


def test_other_prompts_or_normalised_mean_are_caught(tiny, monkeypatch):
    lake_prompts = WinCLIP(tiny.model, {"anomalous_states": ANOMALOUS_STATES, "templates": TEMPLATES},
                           class_name=META["class_name"]).fit(None)
    assert _max_rel(lake_prompts.score_embeddings(tiny.emb), tiny, 0) > 3 * RTOL
    from lake_interp.lake.semantic import text_features  # unit mean of unit prompt embeddings

    normalised = WinCLIP(tiny.model, class_name=META["class_name"])
    c = normalised.config
    normalised.text_embeddings = text_features(tiny.model, META["class_name"], c.normal_states, c.anomalous_states, c.templates)
    assert _max_rel(normalised.score_embeddings(tiny.emb), tiny, 0) > 3 * RTOL
    other_class = WinCLIP(tiny.model, class_name="object").fit(None)
    assert _max_rel(other_class.score_embeddings(tiny.emb), tiny, 0) > 3 * RTOL


# ------------------------------------------------------------------------------------------ hooks, protocol
def test_hooks_fire_on_every_window_pass(tiny):
    model, shapes = tiny.model, []
    det = WinCLIP(model, {"window_batch_size": 50}, class_name=META["class_name"])
    det.text_embeddings = tiny.zero_shot.text_embeddings
    with model.hooks(fwd_hooks=[("visual.blocks.0.hook_resid_post", lambda x, hook: shapes.append(tuple(x.shape)))]):
        det.embed(tiny.test)
    g, d = model.grid_size, model.cfg.vision.block.d_model
    n2, n3 = 2 * (g - 1) ** 2, 2 * (g - 2) ** 2  # windows of 2 images
    expected = [(2, 1 + g * g, d)] + [(min(50, n2 - i), 5, d) for i in range(0, n2, 50)] \
        + [(min(50, n3 - i), 10, d) for i in range(0, n3, 50)]
    assert shapes == expected

    def zero_attn(x, hook):
        return torch.zeros_like(x)

    with model.hooks(fwd_hooks=[("visual.blocks.1.hook_attn_out", zero_attn)]):
        ablated = det.embed(tiny.test)
    for w, w0 in zip(ablated.windows, tiny.emb.windows):
        assert (w - w0).abs().amax() > 1e-3  # the ablation acts on the window passes too


def test_protocol_and_refusals(tiny):
    m, s = tiny.model, tiny.spec["image_size"]
    for empty in (None, [], torch.empty(0, 3, s, s)):
        assert WinCLIP(m, class_name="bottle").fit(empty) is not None
    with pytest.raises(ValueError, match="zero-shot WinCLIP takes no support"):
        WinCLIP(m).fit(tiny.ref[:1])
    with pytest.raises(ValueError, match="k_shot=2"):
        WinCLIP(m, k_shot=2).fit(tiny.ref[:1])
    with pytest.raises(RuntimeError, match="not fitted"):
        WinCLIP(m, k_shot=1).score(tiny.test)
    with pytest.raises(ValueError, match="unknown WinCLIPConfig fields"):
        WinCLIP(m, {"scale": (2, 3)})
    with pytest.raises(ValueError, match="scales"):
        WinCLIPConfig(scales=(0,))
    with pytest.raises(ValueError, match="larger than the patch grid"):
        WinCLIP(m, {"scales": (m.grid_size + 1,)})
    assert WinCLIPConfig.from_dict(json.loads(json.dumps(WinCLIPConfig().to_dict()))) == WinCLIPConfig()
    gen = tiny.zero_shot.with_support(im for im in tiny.ref[:2])  # a generator is read once, not consumed by counting
    assert (gen.k_shot, gen.method, tiny.zero_shot.k_shot) == (2, "winclip_plus", 0)
    assert gen.text_embeddings is tiny.zero_shot.text_embeddings
    assert tiny.zero_shot.with_support(None).method == "winclip"
    res = tiny.results[2]
    assert res.image_scores.shape == (2,) and res.parts["few_shot_map"].shape == (2, s, s)
    assert res.parts["few_shot_grid"].shape == (2, m.grid_size, m.grid_size)


# ------------------------------------------------------------------------------------------ live anomalib
def test_live_anomalib_equals_ours(tiny):
    """Runs anomalib itself where it is importable (not in the project's venv: skipped there)."""
    pytest.importorskip("anomalib")
    spec = tiny.spec
    oc = fx.build_open_clip(spec["model"], spec["model_seed"], spec["perturb_seed"], META["perturb_std"])
    out = fx.run_anomalib(oc, tiny.test, tiny.ref, "fixed")
    for k in META["shots"]:
        assert_matches(tiny.results[k].image_scores, out[(k, "pred_score")], f"live k={k} scores")
        assert_matches(tiny.results[k].maps, out[(k, "anomaly_map")], f"live k={k} maps")


def agreement_table() -> list[tuple]:
    rows = []
    for name in META["cases"]:
        c = get_case(name)
        rows.append((c.spec["model"], "-", "text emb.", *rel_diff(c.zero_shot.text_embeddings.cpu(), TENSORS[f"{name}/text_embeddings"])))
        for k in META["shots"]:
            res = c.results[k]
            rows.append((c.spec["model"], k, "image scores", *rel_diff(res.image_scores, c.expected(k, "pred_score"))))
            rows.append((c.spec["model"], k, "maps", *rel_diff(res.maps, c.expected(k, "anomaly_map"))))
    return rows


if __name__ == "__main__":
    for model, k, what, a, r in agreement_table():
        print(f"{model:20s} k={k} {what:13s} max abs {a:.2e}  max rel {r:.2e}")
    sys.exit(0)
