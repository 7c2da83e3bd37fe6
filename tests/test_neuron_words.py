"""Neuron words read where the neuron is read: the carried direction depends on the layer, equals
the direct write at the last block, matches finite differences, and names a planted word."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lake_interp.interp.words import carried_directions, joint_direction, neuron_words
from tests.test_hooked_clip import build, inputs

WORDS = ["scratch", "crack", "metal", "flawless", "magenta", "wood"]


def test_carried_direction_is_the_finite_difference(tiny_model):
    """Independent computation: central differences of the last block's patch tokens (float64)."""
    model = copy.deepcopy(tiny_model).double()
    images, _ = inputs(model, 2)
    images = images.double()
    hook, channel = "visual.blocks.1.hook_resid_mid", 11
    final = f"visual.blocks.{model.cfg.vision.n_layers - 1}.hook_resid_post"

    def final_patches(eps):
        seen = {}

        def bump(act, hook):
            act = act.clone()
            act[:, 1:, channel] += eps
            return act

        with torch.no_grad():
            model.run_with_hooks(images, fwd_hooks=[(hook, bump), (final, lambda a, hook: seen.setdefault("x", a))])
        return seen["x"][:, 1:]

    fd = ((final_patches(1e-4) - final_patches(-1e-4)) / 2e-4).mean(dim=(0, 1))
    got = carried_directions(model, hook, [channel], images)[0]
    torch.testing.assert_close(got.double(), fd, atol=1e-6, rtol=1e-5)


def test_last_block_carried_equals_direct(tiny_model):
    images, _ = inputs(tiny_model, 2)
    last = tiny_model.cfg.vision.n_layers - 1
    neurons = [(f"visual.blocks.{last}.hook_resid_post", 3), (f"visual.blocks.{last}.mlp.hook_post", 9)]
    carried = neuron_words(tiny_model, neurons, WORDS, reference=images)
    direct = neuron_words(tiny_model, neurons, WORDS, path="direct")
    assert carried.path == "carried" and direct.path == "direct" and carried.n_reference == 2
    torch.testing.assert_close(carried.similarity, direct.similarity, atol=1e-4, rtol=0)
    assert {r["path"] for r in carried.rows()} == {"carried"}


def test_residual_channel_profiles_depend_on_the_layer():
    oc = build("ViT-B-16")
    from lake_interp import HookedCLIP

    model = HookedCLIP.from_open_clip(oc, "ViT-B-16")
    images, _ = inputs(model, 1)
    neurons = [("visual.blocks.3.hook_resid_post", 5), ("visual.blocks.9.hook_resid_post", 5)]
    words = neuron_words(model, neurons, WORDS, reference=images)
    assert (words.similarity[0] - words.similarity[1]).abs().max() > 0.05
    with pytest.raises(ValueError, match="same direction at"):  # identical rows by construction: refused
        neuron_words(model, neurons, WORDS, path="direct")
    with pytest.raises(ValueError, match="needs reference images"):
        neuron_words(model, neurons, WORDS)


def test_planted_neuron_is_named_by_its_word(tiny_model):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        text = F.normalize(model.encode_text(model.tokenizer([f"a photo of {w}." for w in WORDS])), dim=-1)
        target = text[WORDS.index("crack")]
        # the direction d whose ln_post-linearised projection is the word's text embedding
        d_model = model.cfg.vision.d_model
        basis = joint_direction(model, torch.eye(d_model))  # [d_model, embed]: row i = joint(e_i)
        d = torch.linalg.lstsq(basis.T, target[:, None]).solution[:, 0]
        assert F.cosine_similarity(joint_direction(model, d), target, dim=0) > 0.95  # centring drops one dimension
        last = model.cfg.vision.n_layers - 1
        model.visual.blocks[last].mlp.c_proj.weight[:, 4] = 10 * d / d.norm()
    images, _ = inputs(model, 2)
    words = neuron_words(model, [(f"visual.blocks.{last}.mlp.hook_post", 4), (f"visual.blocks.{last}.mlp.hook_post", 5)],
                         WORDS, reference=images)
    assert words.top(1)[0]["top"][0][0] == "crack"
    assert words.similarity[0, WORDS.index("crack")] > 0.95
