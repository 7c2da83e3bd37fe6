"""HookedCLIP against open_clip itself: outputs, block outputs, ablation, patching, hook names."""

import copy
import math
import warnings

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

from lake_interp import HookedCLIP
from lake_interp.model import patch_grid
from tests.conftest import perturbed

ATOL, RTOL = 1e-5, 1e-4

TINY_HOOK_NAMES = [
    'visual.hook_embed',
    'visual.ln_pre.hook_scale',
    'visual.ln_pre.hook_normalized',
    'visual.ln_pre.hook_out',
    'visual.blocks.0.hook_resid_pre',
    'visual.blocks.0.ln1.hook_scale',
    'visual.blocks.0.ln1.hook_normalized',
    'visual.blocks.0.ln1.hook_out',
    'visual.blocks.0.attn.hook_q',
    'visual.blocks.0.attn.hook_k',
    'visual.blocks.0.attn.hook_v',
    'visual.blocks.0.attn.hook_attn_scores',
    'visual.blocks.0.attn.hook_pattern',
    'visual.blocks.0.attn.hook_z',
    'visual.blocks.0.hook_attn_out',
    'visual.blocks.0.hook_resid_mid',
    'visual.blocks.0.ln2.hook_scale',
    'visual.blocks.0.ln2.hook_normalized',
    'visual.blocks.0.ln2.hook_out',
    'visual.blocks.0.mlp.hook_pre',
    'visual.blocks.0.mlp.hook_post',
    'visual.blocks.0.hook_mlp_out',
    'visual.blocks.0.hook_resid_post',
    'visual.blocks.1.hook_resid_pre',
    'visual.blocks.1.ln1.hook_scale',
    'visual.blocks.1.ln1.hook_normalized',
    'visual.blocks.1.ln1.hook_out',
    'visual.blocks.1.attn.hook_q',
    'visual.blocks.1.attn.hook_k',
    'visual.blocks.1.attn.hook_v',
    'visual.blocks.1.attn.hook_attn_scores',
    'visual.blocks.1.attn.hook_pattern',
    'visual.blocks.1.attn.hook_z',
    'visual.blocks.1.hook_attn_out',
    'visual.blocks.1.hook_resid_mid',
    'visual.blocks.1.ln2.hook_scale',
    'visual.blocks.1.ln2.hook_normalized',
    'visual.blocks.1.ln2.hook_out',
    'visual.blocks.1.mlp.hook_pre',
    'visual.blocks.1.mlp.hook_post',
    'visual.blocks.1.hook_mlp_out',
    'visual.blocks.1.hook_resid_post',
    'visual.blocks.2.hook_resid_pre',
    'visual.blocks.2.ln1.hook_scale',
    'visual.blocks.2.ln1.hook_normalized',
    'visual.blocks.2.ln1.hook_out',
    'visual.blocks.2.attn.hook_q',
    'visual.blocks.2.attn.hook_k',
    'visual.blocks.2.attn.hook_v',
    'visual.blocks.2.attn.hook_attn_scores',
    'visual.blocks.2.attn.hook_pattern',
    'visual.blocks.2.attn.hook_z',
    'visual.blocks.2.hook_attn_out',
    'visual.blocks.2.hook_resid_mid',
    'visual.blocks.2.ln2.hook_scale',
    'visual.blocks.2.ln2.hook_normalized',
    'visual.blocks.2.ln2.hook_out',
    'visual.blocks.2.mlp.hook_pre',
    'visual.blocks.2.mlp.hook_post',
    'visual.blocks.2.hook_mlp_out',
    'visual.blocks.2.hook_resid_post',
    'visual.blocks.3.hook_resid_pre',
    'visual.blocks.3.ln1.hook_scale',
    'visual.blocks.3.ln1.hook_normalized',
    'visual.blocks.3.ln1.hook_out',
    'visual.blocks.3.attn.hook_q',
    'visual.blocks.3.attn.hook_k',
    'visual.blocks.3.attn.hook_v',
    'visual.blocks.3.attn.hook_attn_scores',
    'visual.blocks.3.attn.hook_pattern',
    'visual.blocks.3.attn.hook_z',
    'visual.blocks.3.hook_attn_out',
    'visual.blocks.3.hook_resid_mid',
    'visual.blocks.3.ln2.hook_scale',
    'visual.blocks.3.ln2.hook_normalized',
    'visual.blocks.3.ln2.hook_out',
    'visual.blocks.3.mlp.hook_pre',
    'visual.blocks.3.mlp.hook_post',
    'visual.blocks.3.hook_mlp_out',
    'visual.blocks.3.hook_resid_post',
    'visual.ln_post.hook_scale',
    'visual.ln_post.hook_normalized',
    'visual.ln_post.hook_out',
    'visual.hook_pooled',
    'visual.hook_image_embed',
    'text.hook_embed',
    'text.blocks.0.hook_resid_pre',
    'text.blocks.0.ln1.hook_scale',
    'text.blocks.0.ln1.hook_normalized',
    'text.blocks.0.ln1.hook_out',
    'text.blocks.0.attn.hook_q',
    'text.blocks.0.attn.hook_k',
    'text.blocks.0.attn.hook_v',
    'text.blocks.0.attn.hook_attn_scores',
    'text.blocks.0.attn.hook_pattern',
    'text.blocks.0.attn.hook_z',
    'text.blocks.0.hook_attn_out',
    'text.blocks.0.hook_resid_mid',
    'text.blocks.0.ln2.hook_scale',
    'text.blocks.0.ln2.hook_normalized',
    'text.blocks.0.ln2.hook_out',
    'text.blocks.0.mlp.hook_pre',
    'text.blocks.0.mlp.hook_post',
    'text.blocks.0.hook_mlp_out',
    'text.blocks.0.hook_resid_post',
    'text.blocks.1.hook_resid_pre',
    'text.blocks.1.ln1.hook_scale',
    'text.blocks.1.ln1.hook_normalized',
    'text.blocks.1.ln1.hook_out',
    'text.blocks.1.attn.hook_q',
    'text.blocks.1.attn.hook_k',
    'text.blocks.1.attn.hook_v',
    'text.blocks.1.attn.hook_attn_scores',
    'text.blocks.1.attn.hook_pattern',
    'text.blocks.1.attn.hook_z',
    'text.blocks.1.hook_attn_out',
    'text.blocks.1.hook_resid_mid',
    'text.blocks.1.ln2.hook_scale',
    'text.blocks.1.ln2.hook_normalized',
    'text.blocks.1.ln2.hook_out',
    'text.blocks.1.mlp.hook_pre',
    'text.blocks.1.mlp.hook_post',
    'text.blocks.1.hook_mlp_out',
    'text.blocks.1.hook_resid_post',
    'text.ln_final.hook_scale',
    'text.ln_final.hook_normalized',
    'text.ln_final.hook_out',
    'text.hook_pooled',
    'text.hook_text_embed',
]


def small_vision(**kw):
    return CLIPVisionCfg(**{"layers": 2, "width": 48, "head_width": 16, "patch_size": 8, "image_size": 32, **kw})


def small_text(**kw):
    return CLIPTextCfg(**{"context_length": 77, "width": 32, "heads": 2, "layers": 2, **kw})


# name -> builder of a randomly initialised open_clip model. The named configs are open_clip's own.
CONFIGS = {
    "lake-tiny": lambda: open_clip.create_model("lake-tiny", pretrained=None),
    "ViT-B-16": lambda: open_clip.create_model("ViT-B-16", pretrained=None),
    "ViT-B-32-quickgelu": lambda: open_clip.create_model("ViT-B-32-quickgelu", pretrained=None),
    "ViT-B-16-plus-240": lambda: open_clip.create_model("ViT-B-16-plus-240", pretrained=None),
    "layerscale-avgpool-lnafter": lambda: CLIP(
        24, small_vision(ls_init_value=0.1, pool_type="avg", final_ln_after_pool=True, no_ln_pre=True),
        small_text(ls_init_value=0.1), quick_gelu=True, init_logit_bias=-3.0,
    ),
    "custom-text-last-nocausal-bias": lambda: CustomTextCLIP(
        24, small_vision(image_size=40, patch_size=10, mlp_ratio=2.0),
        small_text(pool_type="last", no_causal_mask=True, proj_bias=True),
    ),
    "custom-text-eos-tanh": lambda: CustomTextCLIP(
        24, small_vision(act_kwargs={"approximate": "tanh"}, image_size=336, patch_size=48),
        small_text(pool_type="eos", eos_id=49407, act_kwargs={"approximate": "tanh"}),
    ),
}
BIG = {"ViT-B-16", "ViT-B-32-quickgelu", "ViT-B-16-plus-240"}


def build(name, seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = CONFIGS[name]()
    return perturbed(oc, seed, std=0.005 if name in BIG else 0.02)


def inputs(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, model.image_size, model.image_size, generator=g)
    tokens = open_clip.tokenize(["a photo of a scratched bottle", "flawless metal", "x"] * batch)[:batch]
    return images, tokens


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def capture_blocks(resblocks):
    """Outputs of open_clip's own blocks, via module forward hooks."""
    outs, handles = [], []
    for block in resblocks:
        handles.append(block.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone())))
    return outs, handles


@pytest.mark.parametrize("name", list(CONFIGS))
def test_equivalence_with_open_clip(name):
    oc = build(name)
    model = HookedCLIP.from_open_clip(oc, name)
    batch = 2 if name in BIG else 3
    images, tokens = inputs(model, batch)
    with torch.no_grad():
        close(model.encode_image(images), oc.encode_image(images))
        close(model.encode_text(tokens), oc.encode_text(tokens))
        close(model(images), oc.encode_image(images))
        close(model(text=tokens), oc.encode_text(tokens))
        per_image, per_text = model(images, tokens)
        ref_image, ref_text = oc.get_logits(images, tokens)
        close(per_image, ref_image)
        close(per_text, ref_text)

        text_blocks = oc.text.transformer.resblocks if isinstance(oc, CustomTextCLIP) else oc.transformer.resblocks
        v_outs, handles = capture_blocks(oc.visual.transformer.resblocks)
        t_outs, more = capture_blocks(text_blocks)
        oc.encode_image(images), oc.encode_text(tokens)
        for h in handles + more:
            h.remove()
        _, cache = model.run_with_cache(images, names_filter=lambda n: n.endswith("hook_resid_post"))
        _, tcache = model.run_with_cache(text=tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert len(v_outs) == len(model.visual.blocks) and len(t_outs) == len(model.text.blocks)
    for layer, ref in enumerate(v_outs):
        close(cache[f"visual.blocks.{layer}.hook_resid_post"], ref)
    for layer, ref in enumerate(t_outs):
        close(tcache[f"text.blocks.{layer}.hook_resid_post"], ref)


def test_batch_sizes_are_independent(tiny_model, tiny_open_clip):
    images, _ = inputs(tiny_model, 5, seed=1)
    with torch.no_grad():
        full = tiny_model.encode_image(images)
        one = torch.cat([tiny_model.encode_image(images[i : i + 1]) for i in range(5)])
        close(full, one)
        close(full, tiny_open_clip.encode_image(images))


def test_mlp_neuron_ablation_equals_weight_surgery(tiny_model, tiny_open_clip):
    layer, neuron = 2, 17
    images, _ = inputs(tiny_model, 3, seed=2)

    def zero(act, hook):
        act[..., neuron] = 0.0
        return act

    surgery = copy.deepcopy(tiny_open_clip)
    with torch.no_grad():
        surgery.visual.transformer.resblocks[layer].mlp.c_proj.weight[:, neuron] = 0.0
        ablated = tiny_model.run_with_hooks(images, fwd_hooks=[(f"visual.blocks.{layer}.mlp.hook_post", zero)])
        expected = surgery.encode_image(images)
        clean = tiny_model.encode_image(images)
    close(ablated, expected)
    assert (clean - expected).abs().max() > 1e-4  # the neuron matters, so the test can fail


def test_residual_patching_makes_outputs_equal(tiny_model):
    images, _ = inputs(tiny_model, 4, seed=3)
    a, b = images[:2], images[2:]
    name = "visual.blocks.1.hook_resid_post"
    with torch.no_grad():
        out_a, cache_a = tiny_model.run_with_cache(a, names_filter=name)
        patched = tiny_model.run_with_hooks(b, fwd_hooks=[(name, lambda act, hook: cache_a[name])])
        out_b = tiny_model.encode_image(b)
    close(patched, out_a)
    assert (out_b - out_a).abs().max() > 1e-3


def test_hook_names_are_pinned(tiny_model):
    assert tiny_model.hook_names() == TINY_HOOK_NAMES
    assert tiny_model.hook_names("text.") == [n for n in TINY_HOOK_NAMES if n.startswith("text.")]


def test_run_with_cache_stores_only_filtered(tiny_model):
    images, _ = inputs(tiny_model, 2)
    wanted = ["visual.blocks.0.mlp.hook_post", "visual.blocks.3.attn.hook_pattern"]
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(images, names_filter=wanted)
    assert sorted(cache.keys()) == sorted(wanted)
    cfg = tiny_model.cfg.vision
    n_pos = cfg.grid_size**2 + 1
    assert cache[wanted[0]].shape == (2, n_pos, cfg.block.d_mlp)
    assert cache[wanted[1]].shape == (2, cfg.block.n_heads, n_pos, n_pos)
    torch.testing.assert_close(cache[wanted[1]].sum(-1), torch.ones(2, cfg.block.n_heads, n_pos))


def test_hook_shapes_and_attention_paths_agree(tiny_model):
    """Hooking the pattern switches attention to the explicit path; both give the same output."""
    images, tokens = inputs(tiny_model, 2)
    with torch.no_grad():
        fused = tiny_model.encode_text(tokens)
        explicit, cache = tiny_model.run_with_cache(text=tokens, names_filter=lambda n: "text.blocks.0" in n)
    close(explicit, fused)
    cfg = tiny_model.cfg.text
    heads, d_head = cfg.block.n_heads, cfg.block.d_head
    assert cache["text.blocks.0.attn.hook_q"].shape == (2, 77, heads, d_head)
    assert cache["text.blocks.0.ln1.hook_scale"].shape == (2, 77, 1)
    pattern = cache["text.blocks.0.attn.hook_pattern"]
    assert torch.all(pattern.triu(1) == 0)  # causal


def test_patch_grid_is_row_major(tiny_model):
    images, _ = inputs(tiny_model, 2)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(images, names_filter="visual.blocks.3.hook_resid_post")
    tokens = cache["visual.blocks.3.hook_resid_post"]
    grid = patch_grid(tokens)
    g = tiny_model.grid_size
    assert grid.shape == (2, g, g, tokens.shape[-1])
    for r, c in [(0, 0), (0, g - 1), (g - 1, 0), (3, 5)]:
        assert torch.equal(grid[:, r, c], tokens[:, 1 + r * g + c])
    assert torch.equal(patch_grid(tokens[:, 1:]), grid)
    with pytest.raises(ValueError, match="tokens"):
        patch_grid(tokens[:, :7])


def test_dense_projection_matches_open_clip_modules(tiny_model, tiny_open_clip):
    images, _ = inputs(tiny_model, 2)
    with torch.no_grad():
        dense = tiny_model.encode_image_tokens(images)
        v = tiny_open_clip.visual
        x = v.transformer(v._embeds(images))
        ref = v.ln_post(x) @ v.proj
    close(dense, ref)
    close(dense[:, 0], tiny_model.encode_image(images))  # class token pooling


def test_patch_token_conv_layout(tiny_model, tiny_open_clip):
    """The patch at grid (r, c) comes from pixels [r*p:(r+1)*p, c*p:(c+1)*p]."""
    images, _ = inputs(tiny_model, 1)
    p = tiny_model.cfg.vision.patch_size
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(images, names_filter="visual.hook_embed")
        embed = patch_grid(cache["visual.hook_embed"])
        r, c = 2, 5
        crop = images[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
        v = tiny_open_clip.visual
        expected = (crop.flatten(1) @ v.conv1.weight.flatten(1).T) + v.positional_embedding[1 + r * tiny_model.grid_size + c]
    close(embed[:, r, c], expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(tiny_open_clip, dtype):
    oc = copy.deepcopy(tiny_open_clip).to(dtype)
    model = HookedCLIP.from_open_clip(oc, "lake-tiny")
    assert model.dtype == dtype
    images, tokens = inputs(model, 2)
    with torch.no_grad():
        ours, ref = model.encode_image(images.to(dtype)), oc.encode_image(images.to(dtype))
        ours_t, ref_t = model.encode_text(tokens), oc.encode_text(tokens)
    assert ours.dtype == dtype
    cos = torch.nn.functional.cosine_similarity
    assert cos(ours.float(), ref.float()).min() > 0.99
    assert cos(ours_t.float(), ref_t.float()).min() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fp16(tiny_open_clip):
    oc = copy.deepcopy(tiny_open_clip).cuda().half()
    model = HookedCLIP.from_open_clip(oc, "lake-tiny")
    images, tokens = inputs(model, 2)
    with torch.no_grad():
        ours = model.encode_image(images.cuda().half())
        ref = oc.encode_image(images.cuda().half())
    assert torch.nn.functional.cosine_similarity(ours.float(), ref.float()).min() > 0.99


def unsupported_models():
    return {
        "block_type=custom": lambda: CLIP(24, small_vision(qk_norm=True), small_text()),
        "attentional_pool": lambda: CLIP(24, small_vision(attentional_pool=True, attn_pooler_queries=4), small_text()),
        "ModifiedResNet": lambda: CLIP(24, CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, image_size=64), small_text()),
        "embed_cls": lambda: CustomTextCLIP(24, small_vision(), small_text(embed_cls=True)),
        "pool_type='none'": lambda: CLIP(24, small_vision(pool_type="none"), small_text()),
    }


@pytest.mark.parametrize("option", list(unsupported_models()))
def test_unsupported_configs_raise_naming_model_and_option(option):
    torch.manual_seed(0)
    oc = unsupported_models()[option]()
    with pytest.raises(NotImplementedError) as err:
        HookedCLIP.from_open_clip(oc, "my-model")
    msg = str(err.value)
    assert "my-model" in msg
    assert option.split("=")[0] in msg


def test_from_pretrained_random_weights_warns_loudly():
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        model = HookedCLIP.from_pretrained("lake-tiny", pretrained=None)
    assert model.random_weights
    assert model.image_size == 64 and model.grid_size == 8
    image = model.preprocess(__import__("PIL.Image").Image.new("RGB", (100, 80), "red"))
    assert image.shape == (3, 64, 64)
    assert model.tokenizer(["a photo"]).shape == (1, 77)


def test_from_pretrained_local_checkpoint(tmp_path, tiny_open_clip):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_open_clip.state_dict().items()}, str(path))
    model = HookedCLIP.from_pretrained("lake-tiny", pretrained=str(path))
    assert not model.random_weights and model.pretrained == str(path)
    images, tokens = inputs(model, 2)
    with torch.no_grad():
        close(model.encode_image(images), tiny_open_clip.encode_image(images))
        close(model.encode_text(tokens), tiny_open_clip.encode_text(tokens))


def test_from_pretrained_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        HookedCLIP.from_pretrained("lake-tiny", pretrained=str(tmp_path / "missing.bin"))
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        HookedCLIP.from_pretrained("no-such-model", pretrained=None)
    wrong = tmp_path / "wrong.bin"
    torch.save({"visual.proj": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ValueError, match="does not fit model 'lake-tiny'"):
        HookedCLIP.from_pretrained("lake-tiny", pretrained=str(wrong))
    with pytest.raises(RuntimeError, match="local path"):
        HookedCLIP.from_pretrained("lake-tiny", pretrained="not-a-tag")


# ----------------------------------------------------------------------------- loading by name and tag


def test_quick_gelu_tags_load_with_quick_gelu(monkeypatch, tmp_path, tiny_open_clip):
    """A tag trained with QuickGELU (the openai weights) gets it, as open_clip's `-quickgelu` names do."""
    import open_clip.factory

    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_open_clip.state_dict(), checkpoint)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "lake-tiny", {"fake_openai": {"quick_gelu": True}})
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: str(checkpoint))  # no network
    model = HookedCLIP.from_pretrained("lake-tiny", pretrained="fake_openai")
    assert model.cfg.vision.block.act == model.cfg.text.block.act == "quick_gelu"
    ref = open_clip.create_model("lake-tiny", pretrained=str(checkpoint), force_quick_gelu=True).eval()
    assert isinstance(ref.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    images, tokens = inputs(model, 2)
    with torch.no_grad():
        close(model.encode_image(images), ref.encode_image(images))
        close(model.encode_text(tokens), ref.encode_text(tokens))


@pytest.mark.parametrize("name", ["convnext_base", "MobileCLIP-B", "coca_ViT-B-32", "RN50", "nllb-clip-base"])
def test_unsupported_names_refused_before_building_or_downloading(monkeypatch, name):
    def no_build(*args, **kwargs):
        raise AssertionError("the model must be refused from its config, before it is built or downloaded")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_build)
    with pytest.raises(NotImplementedError, match=name):
        HookedCLIP.from_pretrained(name, pretrained="some_tag")


def test_bf16_keeps_logit_scale_fp32():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = open_clip.create_model("lake-tiny", pretrained=None, precision="bf16").eval()
    with torch.no_grad():
        oc.logit_scale.fill_(math.log(100.0))
    assert oc.logit_scale.dtype == torch.float32  # open_clip's own choice
    model = HookedCLIP.from_open_clip(oc, "lake-tiny")
    assert model.dtype == torch.bfloat16 and model.logit_scale.dtype == torch.float32
    images, tokens = inputs(model, 3)
    with torch.no_grad():
        ours, ref = model(images.bfloat16(), tokens)[0].float(), oc.get_logits(images.bfloat16(), tokens)[0].float()
    torch.testing.assert_close(ours, ref, rtol=5e-3, atol=0.5)


def test_preprocess_follows_the_model_resize_mode(tiny_open_clip):
    from PIL import Image
    from open_clip.transform import PreprocessCfg, image_transform_v2

    oc = copy.deepcopy(tiny_open_clip)
    oc.visual.preprocess_cfg = dict(oc.visual.preprocess_cfg, resize_mode="squash", interpolation="bilinear")
    model = HookedCLIP.from_open_clip(oc, "lake-tiny")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 100, 3), dtype=np.uint8))
    expected = image_transform_v2(PreprocessCfg(**oc.visual.preprocess_cfg), is_train=False)(image)
    centre_crop = open_clip.image_transform(model.image_size, is_train=False)(image)
    assert torch.equal(model.open_clip_preprocess(image), expected) and not torch.equal(expected, centre_crop)
    # the package's own preprocessing squashes with bicubic interpolation, whatever open_clip's config says
    squash = PreprocessCfg(**dict(oc.visual.preprocess_cfg, interpolation="bicubic"))
    assert torch.equal(model.preprocess(image), image_transform_v2(squash, is_train=False)(image))


def test_tokenizer_follows_a_forced_context_length():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedCLIP.from_pretrained("lake-tiny", pretrained=None, force_context_length=32)
    tokens = model.tokenizer(["a photo of a scratched bottle"])
    assert tokens.shape == (1, 32) and model.encode_text(tokens).shape[0] == 1


def test_unknown_hook_names_and_wrong_image_sizes_are_named(tiny_model):
    images, _ = inputs(tiny_model, 1)
    noop = lambda act, hook: act  # noqa: E731
    with pytest.raises(ValueError, match="unknown hook name 'visual.blocks.50.mlp.hook_post'.*blocks.0.mlp.hook_post"):
        tiny_model.run_with_hooks(images, fwd_hooks=[("visual.blocks.50.mlp.hook_post", noop)])
    with pytest.raises(ValueError, match="unknown hook name 'visual.blocks.1.hook_resid_pots'"):
        tiny_model.run_with_cache(images, names_filter=["visual.blocks.1.hook_resid_post", "visual.blocks.1.hook_resid_pots"])
    with pytest.raises(ValueError, match="unknown hook name"):
        tiny_model.run_with_cache(images, names_filter="visual.hook_embedd")
    assert not tiny_model.hook_dict["visual.blocks.1.hook_resid_post"].fwd_hooks  # nothing left behind
    seen = []
    tiny_model.run_with_hooks(images, fwd_hooks=((n, lambda a, hook: seen.append(hook.name)) for n in
                                                 ["visual.blocks.0.hook_resid_post"]))  # a generator works too
    assert seen == ["visual.blocks.0.hook_resid_post"]
    _, cache = tiny_model.run_with_cache(images, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert len(cache) == tiny_model.cfg.vision.n_layers  # a filter function is not a list of names
    size = tiny_model.image_size
    for bad in (images[:, :, : size - 8], images[:, :1], images[0]):
        with pytest.raises(ValueError, match=rf"this model takes \[batch, 3, {size}, {size}\]"):
            tiny_model.encode_image(bad)


def test_offline_tag_fails_fast_with_the_clear_error(monkeypatch):
    """No network and weights not cached: the error comes at once (no download retries, nothing built)
    and says how to pass a local checkpoint; cached weights or a reachable hub go ahead."""
    import time

    from lake_interp.model import loading, tokenizer

    built = []
    monkeypatch.setattr(tokenizer, "_hub_offline", lambda: True)
    monkeypatch.setattr(loading.open_clip, "create_model_and_transforms",
                        lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError("built")))
    monkeypatch.setattr(loading, "_cached_weights", lambda cfg, cache_dir: False)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"no network.*--pretrained /path/to/checkpoint.*--model lake-tiny --pretrained none"):
        HookedCLIP.from_pretrained("ViT-B-32", pretrained="openai")
    assert time.perf_counter() - start < 5 and built == []
    monkeypatch.setattr(loading, "_cached_weights", lambda cfg, cache_dir: True)  # in the cache: goes on to build
    with pytest.raises(RuntimeError, match="could not load pretrained weights"):
        HookedCLIP.from_pretrained("ViT-B-32", pretrained="openai")
    assert built == [1]
