"""The interp tools and detectors on the timm towers (SigLIP's MAP head and no class token,
DINOv2 with 4 registers, EVA02's rotary attention): they skip the right prefix tokens, forward-mode
attribution runs through every attention (the MAP head's included) and equals finite differences,
and what cannot run is refused by name."""

import warnings

import numpy as np
import open_clip
import pytest
import timm
import torch

from lake_interp import HookedCLIP
from lake_interp.data import MVTecAD
from lake_interp.data.synthetic import make_synthetic_dataset
from lake_interp.detectors.patchcore import PatchCore, PatchCoreConfig
from lake_interp.detectors.winclip import WinCLIP
from lake_interp.interp import ablation_effect, attribute, top_activating_patches
from lake_interp.lake import Lake, LakeConfig
from lake_interp.model.hooked_vit import HookedViT
from tests.conftest import perturbed

SMALL = dict(depth=2, embed_dim=64, num_heads=2)


def _open_clip_small(name):
    create = timm.create_model
    text = dict(open_clip.get_model_config(name)["text_cfg"], layers=2, width=64, heads=2)
    torch.manual_seed(0)
    try:
        timm.create_model = lambda n, **kw: create(n, **{**kw, **SMALL})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oc = perturbed(open_clip.create_model(name, pretrained=None, text_cfg=text, embed_dim=64))
    finally:
        timm.create_model = create
    ids = lambda texts: torch.randint(1, 1000, (len(texts), oc.text.context_length),  # noqa: E731
                                      generator=torch.Generator().manual_seed(len(texts)))
    tok = ids if "SigLIP" in name else None  # SigLIP's hub tokenizer cannot be had offline
    return HookedCLIP.from_open_clip(oc, name, tokenizer=tok) if tok else HookedCLIP.from_open_clip(oc, name)


@pytest.fixture(scope="module", params=["ViT-B-16-SigLIP", "EVA02-B-16", "dinov2_reg4"])
def tower(request):
    if request.param == "dinov2_reg4":
        torch.manual_seed(0)
        trunk = perturbed(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=112, depth=2))
        model = HookedViT.from_timm(trunk, "vit_small_patch14_reg4_dinov2")
    else:
        model = _open_clip_small(request.param)
    return request.param, model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("towers"), categories=["disc"], seed=0, image_size=112)
    test = list(MVTecAD(root, "disc", "test"))
    anomalous = [s for s in test if s.label][:2]
    return list(MVTecAD(root, "disc", "train"))[:2], anomalous + [s for s in test if not s.label][:2]


def test_prefix_tokens_are_skipped_by_the_detector_and_the_tools(tower, data):
    name, model = tower
    expected = {"ViT-B-16-SigLIP": 0, "EVA02-B-16": 1, "dinov2_reg4": 5}[name]
    assert model.n_prefix == expected
    support, test = data
    lake = Lake(model, LakeConfig(k_neurons=8, text_weight=0.0), "disc").fit(support)
    hook = lake.hooks[0]
    acts = lake.patch_activations(support, [hook])[hook]
    _, cache = model.run_with_cache(model.preprocess(support[0].image).unsqueeze(0), names_filter=[hook])
    assert acts.shape[1] == model.grid_size ** 2
    torch.testing.assert_close(acts[0], cache[hook][0, expected:])  # the patches, in order, prefix dropped
    top = top_activating_patches(model, [s.image for s in test], [(hook, 0)], n=2)
    assert top is not None
    result = lake.score([s.image for s in test])
    assert result.maps.shape == (4, model.image_size, model.image_size)
    pc = PatchCore(model, PatchCoreConfig(layers=(0, -1))).fit(support).score([s.image for s in test])
    assert pc.maps.shape == (4, model.image_size, model.image_size)


def test_attribution_pixel_maps_equal_finite_differences_through_every_attention(tower, data):
    """Forward-mode AD (the per-pixel maps) through the explicit attention of every block and, on
    SigLIP, of the MAP head; compared with central differences of Lake.score."""
    name, model = tower
    support, test = data
    lake = Lake(model, LakeConfig(k_neurons=8, text_weight=0.0), "disc").fit(support)
    images = [s.image for s in test[:2]]
    every = [("visual.blocks.0.mlp.hook_post", c) for c in range(model.cfg.vision.d_mlp)]
    first = attribute(lake, images, "score", every, readout="detector", n_maps=0)
    unit = first.units[int(np.argmax(np.abs(first.mean)))]  # an effect well above float32 noise
    r = attribute(lake, images, "map", [unit], readout="detector", map_units=[unit])
    eps = 1e-2

    def moved(e):
        def fn(act, hook):
            act = act.clone()
            act[..., unit[1]] = act[..., unit[1]] * (1 - e)
            return act
        with model.hooks(fwd_hooks=[(unit[0], fn)]):
            return lake.score(images)

    plus, minus = moved(eps), moved(-eps)
    fd = (minus.image_scores - plus.image_scores).double().numpy() / (2 * eps)
    np.testing.assert_allclose(r.values[:, 0], fd, rtol=0.05, atol=0.02 * np.abs(fd).max())
    fd_map = (minus.maps - plus.maps).double().numpy() / (2 * eps)
    assert np.abs(r.pixel_maps[unit] - fd_map).max() <= 0.05 * np.abs(fd_map).max()


def test_ablation_reads_downstream_and_winclip_is_refused_by_name(tower, data):
    name, model = tower
    support, test = data
    lake = Lake(model, LakeConfig(k_neurons=4, text_weight=0.0, layers=(0,)), "disc").fit(support)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default readout (the last block) reads none of the block-0 units
        effect = ablation_effect(lake, lake.neurons, support, test, n_random=2, progress=False)
    assert effect.meta["readout_hooks"] == [f"visual.blocks.{model.cfg.vision.n_layers - 1}.hook_resid_post"]
    assert effect.delta and all(np.isfinite(v) for v in effect.delta.values())
    with pytest.raises(NotImplementedError, match=name if name != "dinov2_reg4" else "vit_small_patch14_reg4_dinov2"):
        WinCLIP(model, class_name="disc", k_shot=1)
