"""HookedCLIP as a TransformerLens user uses it: ActivationCache and its analysis methods, hook
semantics, weight views, short names, patching utilities. References are open_clip's own modules
(block outputs via module hooks, its ln_post / ln_final, its attention weights), or the
definitions computed by hand, never the code under test."""

import warnings

import open_clip
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformer_lens.utilities as tl_utils
from open_clip.model import CustomTextCLIP
from transformer_lens import ActivationCache, FactoredMatrix, patching

from lake_interp import HookedCLIP
from lake_interp.model import hook_sites
from tests.test_hooked_clip import build, capture_blocks, inputs

TOL = dict(atol=1e-5, rtol=1e-5)


def close(a, b, **kw):
    torch.testing.assert_close(a.float(), b.float(), **{**TOL, **kw})


@pytest.fixture(scope="module")
def vitb():
    oc = build("ViT-B-16")
    return oc, HookedCLIP.from_open_clip(oc, "ViT-B-16")


@pytest.fixture(scope="module")
def layerscale():
    oc = build("layerscale-avgpool-lnafter")
    return oc, HookedCLIP.from_open_clip(oc, "layerscale-avgpool-lnafter")


def text_modules(oc):
    if isinstance(oc, CustomTextCLIP):
        return oc.text.transformer.resblocks, oc.text.ln_final
    return oc.transformer.resblocks, oc.ln_final


def test_run_with_cache_returns_transformer_lens_cache(tiny_model):
    images, tokens = inputs(tiny_model, 2)
    _, cache = tiny_model.run_with_cache(images, tokens)
    assert isinstance(cache, ActivationCache)
    assert isinstance(cache.visual, ActivationCache) and isinstance(cache.text, ActivationCache)
    _, plain = tiny_model.run_with_cache(images, return_cache_object=False)
    assert type(plain) is dict and set(plain) == {n for n in cache.keys() if n.startswith("visual.")}
    # short keys resolve in the vision tower; the text tower through cache.text
    full = cache["visual.blocks.1.hook_resid_post"]
    assert cache["resid_post", 1] is full
    assert cache[tl_utils.get_act_name("resid_post", 1)] is full
    assert cache["blocks.1.hook_resid_post"] is full
    assert cache["resid_post", -1] is cache[f"visual.blocks.{tiny_model.cfg.vision.n_layers - 1}.hook_resid_post"]
    assert cache.text["resid_post", 0] is cache["text.blocks.0.hook_resid_post"]
    assert cache.visual["scale", 0, "ln1"] is cache["visual.blocks.0.ln1.hook_scale"]
    with pytest.raises(KeyError, match="not in this cache"):
        cache["blocks.40.hook_resid_post"]
    # the same short names in hooks and names filters
    _, short = tiny_model.run_with_cache(images, names_filter=[tl_utils.get_act_name("resid_post", 1)])
    assert list(short.keys()) == ["visual.blocks.1.hook_resid_post"]
    seen = []
    tiny_model.run_with_hooks(images, fwd_hooks=[("blocks.0.hook_mlp_out", lambda a, hook: seen.append(hook.name))])
    assert seen == ["visual.blocks.0.hook_mlp_out"]
    one, _ = inputs(tiny_model, 1)
    _, single = tiny_model.run_with_cache(one, remove_batch_dim=True)
    assert single["resid_post", 0].shape == full.shape[1:]


def test_layer_norm_hooks_follow_transformer_lens(tiny_model):
    images, _ = inputs(tiny_model, 2)
    _, cache = tiny_model.run_with_cache(images)
    for layer in range(tiny_model.cfg.vision.n_layers):
        for ln in ("ln1", "ln2"):
            x = cache[f"visual.blocks.{layer}.{'hook_resid_pre' if ln == 'ln1' else 'hook_resid_mid'}"]
            module = getattr(tiny_model.visual.blocks[layer], ln)
            norm = F.layer_norm(x, x.shape[-1:], eps=module.eps)  # no weight, no bias
            close(cache[f"visual.blocks.{layer}.{ln}.hook_normalized"], norm)
            close(cache[f"visual.blocks.{layer}.{ln}.hook_out"], F.layer_norm(x, x.shape[-1:], module.weight, module.bias, module.eps))
            scale = (x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True).add(module.eps).sqrt()
            close(cache[f"visual.blocks.{layer}.{ln}.hook_scale"], scale)


@pytest.mark.parametrize("which", ["vitb", "layerscale"])
def test_decompositions_sum_to_the_residual_stream(which, request):
    oc, model = request.getfixturevalue(which)
    images, tokens = inputs(model, 2)
    v_outs, handles = capture_blocks(oc.visual.transformer.resblocks)
    text_blocks, ln_final = text_modules(oc)
    t_outs, more = capture_blocks(text_blocks)
    with torch.no_grad():
        oc.encode_image(images), oc.encode_text(tokens)
        for h in handles + more:
            h.remove()
        _, cache = model.run_with_cache(images, tokens)
    for tower, ref_final, final_ln in (("visual", v_outs[-1], oc.visual.ln_post), ("text", t_outs[-1], ln_final)):
        view = cache.tower(tower)
        n = model.cfg.vision.n_layers if tower == "visual" else model.cfg.text.n_layers
        stack, labels = view.decompose_resid(return_labels=True)
        assert labels[0] == "embed" and labels[-1] == f"{n - 1}_mlp_out" and len(labels) == 1 + 2 * n
        close(stack.sum(0), ref_final)
        close(view.accumulated_resid(n)[-1], ref_final)
        acc, acc_labels = view.accumulated_resid(return_labels=True, incl_mid=True)
        assert acc_labels[-1] == "final_post" and acc.shape[0] == 2 * n + 1
        close(view.accumulated_resid(2)[-1], cache[f"{tower}.blocks.2.hook_resid_pre"] if n > 2 else ref_final)
        # every head, every neuron, the embedding and the biases (LayerScale folded in)
        full, names = view.get_full_resid_decomposition(return_labels=True, pos_slice=0)
        assert len(names) == n * model.cfg.vision.n_heads * 0 + full.shape[0]
        close(full.sum(0), ref_final[:, 0], atol=2e-5)
        # apply_ln_to_stack at the final layer: final LayerNorm with the cached scale == open_clip's own LN
        if not (tower == "visual" and model.cfg.vision.final_ln_after_pool):
            normed = view.apply_ln_to_stack(view.accumulated_resid(n)[-1:], -1)[0]
            with torch.no_grad():
                close(normed * final_ln.weight + final_ln.bias, final_ln(ref_final))
            # every apply_ln path gives the same tensor (before the LayerNorm's weight and bias)
            close(view.accumulated_resid(n, apply_ln=True)[-1], normed)
            close(view.decompose_resid(apply_ln=True).sum(0), normed, atol=2e-5)
        # per-head results sum to attention's output minus its bias (times LayerScale)
        heads = view.stack_head_results(layer=1)
        blk = (model.visual if tower == "visual" else model.text).blocks[0]
        gamma = getattr(blk.ls1, "gamma", torch.ones(1))
        close(heads.sum(0) + blk.attn.b_O * gamma, cache[f"{tower}.blocks.0.hook_attn_out"])
    # the same methods on the cache itself act on the vision tower, or on the text tower when asked
    close(cache.decompose_resid().sum(0), v_outs[-1])
    close(cache.decompose_resid(tower="text").sum(0), t_outs[-1])


def test_logit_attrs_is_direct_attribution_to_a_text_direction(vitb):
    oc, model = vitb
    images, _ = inputs(model, 2)
    with torch.no_grad():
        _, cache = model.run_with_cache(images)
        text = F.normalize(oc.encode_text(open_clip.tokenize(["a photo of a scratch"])), dim=-1)[0]
        emb = oc.encode_image(images)
    stack = cache.visual.decompose_resid(pos_slice=0)  # the class token: what tok pooling embeds
    attrs = cache.logit_attrs(stack, text, pos_slice=0)
    assert attrs.shape == (stack.shape[0], 2)
    const = oc.visual.ln_post.bias @ oc.visual.proj @ text  # the LayerNorm bias: the same for every component
    close(attrs.sum(0) + const, emb @ text, atol=1e-4)
    per_image = cache.logit_attrs(stack, torch.stack([text, -text]), pos_slice=0)
    close(per_image[:, 1], -attrs[:, 1])


def test_weights_recompute_attention_and_mlp(layerscale, tiny_model):
    for model in (layerscale[1], tiny_model):
        images, _ = inputs(model, 2)
        _, cache = model.run_with_cache(images)
        cfg = model.cfg.vision
        assert model.W_Q.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
        assert model.W_O.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model)
        assert model.W_in.shape == (cfg.n_layers, cfg.d_model, cfg.d_mlp) and model.W_out.shape == (cfg.n_layers, cfg.d_mlp, cfg.d_model)
        assert model.W_E.shape == (3 * cfg.block.d_model * 0 + 3 * model.cfg.vision.patch_size ** 2, cfg.d_model)
        assert model.W_pos.shape == (cfg.n_ctx, cfg.d_model)
        assert isinstance(model.OV, FactoredMatrix) and model.OV.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_model)
        with torch.no_grad():
            for layer in range(cfg.n_layers):
                blk = model.visual.blocks[layer]
                x = cache[f"visual.blocks.{layer}.ln1.hook_out"]
                q = torch.einsum("bpm,hme->bphe", x, model.W_Q[layer]) + model.b_Q[layer]
                k = torch.einsum("bpm,hme->bphe", x, model.W_K[layer]) + model.b_K[layer]
                v = torch.einsum("bpm,hme->bphe", x, model.W_V[layer]) + model.b_V[layer]
                pattern = (torch.einsum("bqhe,bkhe->bhqk", q, k) / cfg.d_head ** 0.5).softmax(-1)
                z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
                out = torch.einsum("bqhe,hem->bqm", z, model.W_O[layer]) + model.b_O[layer]
                gamma = getattr(blk.ls1, "gamma", None)
                close(out * (gamma if gamma is not None else 1), cache[f"visual.blocks.{layer}.hook_attn_out"])
                close(model.QK[layer].AB, model.W_Q[layer] @ model.W_K[layer].transpose(-1, -2))
                h = cache[f"visual.blocks.{layer}.ln2.hook_out"] @ model.W_in[layer] + model.b_in[layer]
                act = {"gelu": F.gelu, "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}[cfg.act_fn]
                mlp = act(h) @ model.W_out[layer] + model.b_out[layer]
                gamma = getattr(blk.ls2, "gamma", None)
                close(mlp * (gamma if gamma is not None else 1), cache[f"visual.blocks.{layer}.hook_mlp_out"])
        # the patch embedding as a matrix: pixels of patch (0, 0) -> its token before positions
        p = cfg.patch_size
        pixels = images[:, :, :p, :p].reshape(2, -1)
        close(pixels @ model.W_E + model.W_pos[1], cache["visual.hook_embed"][:, 1])


def test_transformer_lens_config_fields(tiny_model):
    for tower in (tiny_model.cfg.vision, tiny_model.cfg.text):
        for field in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "act_fn", "n_ctx", "normalization_type", "d_vocab"):
            assert getattr(tower, field) is not None
        assert tower.d_head * tower.n_heads == tower.d_model
    assert tiny_model.cfg.vision.n_ctx == tiny_model.cfg.vision.grid_size ** 2 + 1
    assert tiny_model.cfg.text.d_vocab == tiny_model.text.token_embedding.num_embeddings
    assert tiny_model.cfg.n_layers == tiny_model.cfg.vision.n_layers


def test_tutorial_steps_run_as_written(tiny_model):
    """The TransformerLens main-demo steps that make sense for a vision tower."""
    model = tiny_model
    clean, _ = inputs(model, 2, seed=0)
    corrupted, _ = inputs(model, 2, seed=1)
    clean_out, clean_cache = model.run_with_cache(clean)
    # stack and decompose
    resid = clean_cache.stack_activation("resid_post")
    assert resid.shape[0] == model.cfg.n_layers
    per_layer, labels = clean_cache.decompose_resid(layer=-1, mode="attn", return_labels=True)
    assert labels[1] == "0_attn_out"
    clean_cache.compute_head_results()
    heads, head_labels = clean_cache.stack_head_results(layer=-1, return_labels=True)
    assert head_labels[0] == "L0H0" and heads.shape[0] == model.cfg.n_layers * model.cfg.n_heads
    neurons = clean_cache.get_neuron_results(1, neuron_slice=[0, 1, 2])
    assert neurons.shape[-2:] == (3, model.cfg.d_model)
    # activation patching with transformer_lens.patching: a patch of every position of resid_pre
    # restores the clean output at the last layer
    target = clean_out.detach()

    def metric(out):
        return -(out - target).pow(2).mean()

    n, pos = model.cfg.n_layers, model.cfg.vision.n_ctx
    index = pd.DataFrame({"layer": [0, n - 1, n - 1], "pos": [0, 0, 5]})
    result = patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric, index_axis_names=None, index_df=index)
    assert result.shape == (3,)
    # by hand: the same patch through run_with_hooks
    def patch(act, hook, p=0):
        act[:, p] = clean_cache[hook.name][:, p]
        return act
    manual = metric(model.run_with_hooks(corrupted, fwd_hooks=[(tl_utils.get_act_name("resid_pre", n - 1), patch)]))
    close(result[1], manual)
    # patching every position of the first block's input gives back the clean output exactly
    def patch_all(act, hook):
        return clean_cache[hook.name]
    restored = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.0.hook_resid_pre", patch_all)])
    close(restored, clean_out)
    assert pos == clean_cache["resid_pre", 0].shape[1]


def test_hook_site_registry(tiny_model):
    names = tiny_model.hook_names()
    for name in names:  # every hook point of the model parses and round-trips
        assert hook_sites.parse_hook_name(name).name == name
    parsed = hook_sites.parse_hook_name("visual.blocks.3.mlp.hook_post")
    assert (parsed.tower, parsed.block, parsed.site, parsed.label) == ("visual", 3, "mlp.hook_post", "L3.mlp.hook_post")
    for bad in ("visual.blocks.x.hook_resid_post", "visual.blocks.1.hook_nothing", "vision.hook_embed", "blocks.1.hook_resid_post"):
        with pytest.raises(ValueError, match="not a HookedCLIP hook name"):
            hook_sites.parse_hook_name(bad)
    _, cache = tiny_model.run_with_cache(inputs(tiny_model, 1)[0])
    for name, width in hook_sites.channel_widths(tiny_model).items():
        assert cache[name].shape[-1] == width and cache[name].ndim == 3
    assert hook_sites.channel_width(tiny_model, "visual.blocks.0.attn.hook_q") is None
    with pytest.raises(ValueError, match=r"channel 256 out of range for visual.blocks.0.mlp.hook_post \(width 256"):
        hook_sites.check_channels(tiny_model, "visual.blocks.0.mlp.hook_post", [3, 256])
    with pytest.raises(ValueError, match="has no neuron axis"):
        hook_sites.check_channels(tiny_model, "visual.blocks.0.attn.hook_pattern", [0])
    with pytest.raises(ValueError, match="unknown hook name 'visual.blocks.9.hook_resid_post'"):
        hook_sites.check_channels(tiny_model, "visual.blocks.9.hook_resid_post", [0])


def test_old_detector_on_ln_normalized_is_refused(tiny_model, tmp_path):
    from lake_interp import Lake, LakeConfig
    import json

    images, _ = inputs(tiny_model, 2)
    lake = Lake(tiny_model, LakeConfig(sites=("ln1.hook_normalized",), layers=(1.0,), k_neurons=4, text_weight=0.0)).fit(images)
    lake.save(tmp_path / "d")
    Lake.load(tmp_path / "d", tiny_model)  # written now: loads
    meta = json.loads((tmp_path / "d" / "lake.json").read_text())
    del meta["hook_semantics"]  # as written before the semantics changed
    (tmp_path / "d" / "lake.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"now \['ln1.hook_out'\].*refit"):
        Lake.load(tmp_path / "d", tiny_model)
