"""timm `Eva` vision towers (EVA02-B-16, PE-Core-B-16 as open_clip builds them, and small timm Eva
variants) hooked, against their reference implementations: open_clip's `encode_image` /
`encode_text`, timm's own block outputs (forward hooks on `trunk.blocks[i]`), timm's rotary
function on timm's own projections, weight surgery on the reference model for MLP-unit ablations.

Random init, perturbed (every parameter, LayerNorm weights and LayerScale included), no downloads.
"""

import os
import warnings

import open_clip
import pytest
import timm
import torch
from timm.layers import apply_rot_embed_cat
from timm.models import model_entrypoint, register_model

from lake_interp import HookedCLIP
from lake_interp.model import hook_sites
from lake_interp.model.components.eva import EvaTower, config_from_timm_eva, state_dict_from_timm_eva
from lake_interp.model.convert import check_model_config
from lake_interp.model.tokens import patch_tokens
from tests.conftest import perturbed

IMAGES = torch.Generator().manual_seed(1)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# The same architectures smaller, through timm kwargs (the model's own timm entry point, registered under
# a test name that open_clip's TimmModel builds as it builds the real one) and a small open_clip text
# tower. LAKE_INTERP_FULL_SIZE=1 runs them at full size instead (minutes on 2 CPU cores; run by hand).
SMALL_VISION = dict(img_size=64, embed_dim=64, depth=2, num_heads=4)
SMALL_TEXT = dict(width=64, heads=4, layers=2)
FULL = os.environ.get("LAKE_INTERP_FULL_SIZE") == "1"
NAMES = ["EVA02-B-16", "PE-Core-B-16"]


def small_timm_name(arch: str) -> str:
    small = f"lake_test_small_{arch}"
    if not timm.is_model(small):
        real = model_entrypoint(arch)

        def entry(pretrained: bool = False, **kwargs):
            return real(pretrained=False, **{**SMALL_VISION, **kwargs})

        entry.__name__ = entry.__qualname__ = small
        entry.__module__ = real.__module__
        register_model(entry)
    return small


def build(name: str, small: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {}
    if small:
        cfg = open_clip.get_model_config(name)
        vision = dict(cfg["vision_cfg"], timm_model_name=small_timm_name(cfg["vision_cfg"]["timm_model_name"]),
                      image_size=SMALL_VISION["img_size"])
        kwargs = dict(vision_cfg=vision, text_cfg=dict(cfg["text_cfg"], **SMALL_TEXT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return perturbed(open_clip.create_model(name, pretrained=None, **kwargs))


@pytest.fixture(scope="module", params=[(n, False) for n in NAMES] if FULL else [(n, True) for n in NAMES],
                ids=lambda p: p[0] + ("" if p[1] else "-full"))
def pair(request):
    """(name, open_clip model, its HookedCLIP)."""
    name, small = request.param
    oc = build(name, small)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedCLIP.from_open_clip(oc, name)
    return name, oc, model


def images(n: int = 2, size: int = SMALL_VISION["img_size"]) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=IMAGES)


def model_images(model, n: int = 2) -> torch.Tensor:
    return images(n, model.cfg.vision.image_size)


def block_outputs(trunk: torch.nn.Module, run) -> list[torch.Tensor]:
    """The reference's own block outputs, from forward hooks on trunk.blocks[i], while `run()` runs."""
    outs = []
    handles = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach())) for b in trunk.blocks]
    try:
        with torch.no_grad():
            result = run()
    finally:
        for h in handles:
            h.remove()
    return outs, result


# ------------------------------------------------------------------------------------ full size, via open_clip
def test_architecture_read_off_as_expected(pair):
    name, oc, model = pair
    v = model.cfg.vision
    assert type(oc.visual.trunk).__name__ == "Eva" and v.family == "timm_eva"
    assert v.n_prefix == 1 and v.class_token and v.options["rope"] == "interleaved"
    if name == "EVA02-B-16":  # SwiGLU with sub-LN in MLP and attention, eps 1e-6, token pooling, head with bias
        assert (v.options["mlp"], v.options["mlp_ln"], v.options["attn_ln"]) == ("swiglu", True, True)
        d_mlp = oc.visual.trunk.blocks[0].mlp.fc1_g.out_features  # 2048 at full size
        assert v.block.act == "silu" and v.block.d_mlp == d_mlp and v.block.ln_eps == 1e-6 and v.pool_type == "tok"
        assert not v.ln_pre and v.projection == "linear_bias"
    else:  # PE-Core: GELU MLP, ln_pre (patch embedding without bias), attention pool, eps 1e-5
        assert (v.options["mlp"], v.options["mlp_ln"], v.options["attn_ln"]) == ("mlp", False, False)
        assert v.block.ln_eps == 1e-5 and v.ln_pre and not v.patch_bias and v.pool_type == "map"
        assert v.attn_pool_heads == 8 and v.attn_pool_d_mlp == 4 * v.d_model


def test_image_embedding_and_every_block_equal_open_clip(pair):
    name, oc, model = pair
    x = model_images(model)
    ref_blocks, ref = block_outputs(oc.visual.trunk, lambda: oc.encode_image(x))
    names = [f"visual.blocks.{i}.hook_resid_post" for i in range(len(ref_blocks))]
    with torch.no_grad():
        out, cache = model.run_with_cache(x, names_filter=names + ["visual.hook_pooled"])
    assert rel(out, ref) < 1e-5, name
    assert len(ref_blocks) == model.cfg.vision.n_layers == len(oc.visual.trunk.blocks)
    for i, r in enumerate(ref_blocks):
        assert rel(cache[names[i]], r) < 1e-5, (name, i)
    # the patch tokens are what timm returns as spatial features (the prefix skipped)
    with torch.no_grad():
        spatial = oc.visual.trunk.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)[0]
    assert rel(model.patch_tokens(cache[names[1]]), spatial) < 1e-6
    g = model.cfg.vision.grid_size
    assert model.patch_grid(cache[names[1]]).shape == (2, g, g, model.cfg.vision.d_model)


def test_text_embedding_equals_open_clip(pair):
    name, oc, model = pair
    assert type(oc.text).__name__ == "TextTransformer"
    tokens = open_clip.get_tokenizer(name)(["a photo of a scratched bottle", "a flawless metal nut"])
    assert torch.equal(model.tokenizer(["a photo of a scratched bottle", "a flawless metal nut"]), tokens)
    with torch.no_grad():
        ref, out = oc.encode_text(tokens), model.encode_text(tokens)
    assert rel(out, ref) < 1e-5 and rel(out[0], out[1]) > 1e-2, name


def test_rotary_hooks_against_timm(pair):
    """hook_q / hook_k: the projections before the rotation; hook_rot_q / hook_rot_k: after it, as
    timm's apply_rot_embed_cat on timm's own projections and rope table (last block)."""
    name, oc, model = pair
    trunk, x, n, d = oc.visual.trunk, model_images(model, 1), model.cfg.vision.n_heads, model.cfg.vision.d_head
    layer = len(trunk.blocks) - 1
    ins = []
    h = trunk.blocks[layer].norm1.register_forward_hook(lambda m, i, o: ins.append(o.detach()))
    try:
        with torch.no_grad():
            oc.encode_image(x)
    finally:
        h.remove()
    a = trunk.blocks[layer].attn
    with torch.no_grad():
        if a.qkv is not None:
            bias = a.qkv.bias if a.qkv.bias is not None else torch.cat([a.q_bias, a.k_bias, a.v_bias])
            q, k, _ = torch.nn.functional.linear(ins[0], a.qkv.weight, bias).reshape(1, -1, 3, n, d).unbind(2)
        else:
            q, k = a.q_proj(ins[0]).reshape(1, -1, n, d), a.k_proj(ins[0]).reshape(1, -1, n, d)
        rope = trunk.rope.get_embed()
        rot_q = torch.cat([q[:, :1], apply_rot_embed_cat(q[:, 1:].transpose(1, 2), rope).transpose(1, 2)], 1)
        rot_k = torch.cat([k[:, :1], apply_rot_embed_cat(k[:, 1:].transpose(1, 2), rope).transpose(1, 2)], 1)
        sites = ["hook_q", "hook_k", "hook_rot_q", "hook_rot_k"]
        _, cache = model.run_with_cache(x, names_filter=[f"visual.blocks.{layer}.attn.{s}" for s in sites])
    for site, ref in zip(sites, (q, k, rot_q, rot_k)):
        assert rel(cache[f"visual.blocks.{layer}.attn.{site}"], ref) < 1e-5, (name, site)
    assert rel(q, rot_q) > 0.1  # the rotation does something


def test_mlp_unit_ablation_equals_weight_surgery(pair):
    """Zeroing unit u at mlp.hook_post == zeroing column u of timm's fc2 (EVA02: after the MLP's
    sub-LayerNorm); zeroing it at mlp.hook_mid (EVA02's gated product, before the sub-LN) == zeroing
    row u of fc1_x and its bias."""
    name, oc, model = pair
    layer, unit, x = len(oc.visual.trunk.blocks) - 1, 37, model_images(model)
    fc2 = oc.visual.trunk.blocks[layer].mlp.fc2

    def zero_unit(act, hook):
        act[..., unit] = 0
        return act

    with torch.no_grad():
        clean = oc.encode_image(x)
        saved = fc2.weight[:, unit].clone()
        fc2.weight[:, unit] = 0
        try:
            surgery = oc.encode_image(x)
        finally:
            fc2.weight[:, unit] = saved
        ablated = model.run_with_hooks(x, fwd_hooks=[(f"visual.blocks.{layer}.mlp.hook_post", zero_unit)])
    assert rel(ablated, surgery) < 1e-5 and rel(surgery, clean) > 1e-4, name
    if name != "EVA02-B-16":
        return
    fc1_x = oc.visual.trunk.blocks[layer].mlp.fc1_x
    with torch.no_grad():
        saved_w, saved_b = fc1_x.weight[unit].clone(), fc1_x.bias[unit].clone()
        fc1_x.weight[unit], fc1_x.bias[unit] = 0, 0
        try:
            surgery = oc.encode_image(x)
        finally:
            fc1_x.weight[unit], fc1_x.bias[unit] = saved_w, saved_b
        ablated = model.run_with_hooks(x, fwd_hooks=[(f"visual.blocks.{layer}.mlp.hook_mid", zero_unit)])
    assert rel(ablated, surgery) < 1e-5 and rel(surgery, clean) > 1e-4


def test_every_hook_is_registered_and_mlp_decomposes(pair):
    """Every hook point parses in the hook registry (so every tool can use it); the MLP output is
    hook_post @ W_out + b_out (the neuron decomposition); EVA02's attention, with a sub-LN across
    heads, refuses per-head weights."""
    name, oc, model = pair
    for hook in model.hook_dict:
        hook_sites.parse_hook_name(hook)
    assert hook_sites.channel_widths(model)[f"visual.blocks.0.mlp.hook_post"] == model.cfg.vision.d_mlp
    mlp = model.visual.blocks[1].mlp
    with torch.no_grad():
        _, cache = model.run_with_cache(model_images(model, 1), names_filter=["visual.blocks.1.mlp.hook_post",
                                                                             "visual.blocks.1.hook_mlp_out"])
    post = cache["visual.blocks.1.mlp.hook_post"]
    assert rel(post @ mlp.W_out + mlp.b_out, cache["visual.blocks.1.hook_mlp_out"]) < 1e-5
    if name == "EVA02-B-16":
        with pytest.raises(NotImplementedError, match="sub-LayerNorm"):
            model.W_O
    else:
        v = model.cfg.vision
        assert model.W_O.shape == (v.n_layers, v.n_heads, v.d_head, v.d_model)


# ------------------------------------------------------------------------------------ small timm Eva variants
SMALL = dict(SMALL_VISION, num_classes=24)
VARIANTS = {
    # EVA02's architecture, with LayerScale, registers, QK-norm, half-rotation rope
    "eva02_ls_reg_qknorm_half": ("eva02_base_patch16_clip_224", dict(
        ref_feat_shape=(4, 4), init_values=0.5, num_reg_tokens=2, qk_norm=True, rope_rotate_half=True)),
    # packed SwiGLU (GluMlp: no sub-LN), fused qkv with EVA's q/v biases, no positions for the prefix,
    # average pooling with fc_norm, LayerScale on attention only
    "glu_fused_avg_noembedcls": ("eva02_base_patch16_clip_224", dict(
        ref_feat_shape=(4, 4), scale_mlp=False, scale_attn_inner=False, qkv_fused=True, no_embed_class=True,
        global_pool="avg", init_values=0.3, attn_only_layer_scale=True, num_reg_tokens=1)),
    # PE-Core's architecture (AttentionRope, ln_pre, attention pool over every token), with registers
    "pe_core_reg": ("vit_pe_core_base_patch16_224", dict(ref_feat_shape=(4, 4), attn_pool_num_heads=2,
                                                       num_reg_tokens=2)),
    # DINOv3: rotary positions only (DINOv3's table, half rotation), 4 registers, LayerScale, no qkv bias,
    # dynamic_img_size (the hooked tower at the built size), average pooling
    "dinov3": ("vit_small_patch16_dinov3", {}),
    # DINOv3 S+: packed SwiGLU, class-token pooling
    "dinov3_splus_token": ("vit_small_plus_patch16_dinov3", dict(global_pool="token")),
}


def small_trunk(variant: str) -> torch.nn.Module:
    arch, kwargs = VARIANTS[variant]
    torch.manual_seed(0)
    return perturbed(timm.create_model(arch, pretrained=False, **SMALL, **kwargs))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_small_variant_tower_equals_timm(variant):
    trunk = small_trunk(variant)
    cfg = config_from_timm_eva(trunk, trunk.head, variant)
    tower = EvaTower(cfg).eval()
    tower.load_state_dict(state_dict_from_timm_eva(trunk, trunk.head), strict=True)
    x = images()
    ref_blocks, ref = block_outputs(trunk, lambda: trunk(x))
    ours = []
    handles = [b.hook_resid_post.add_hook(lambda t, hook: ours.append(t.detach())) for b in tower.blocks]
    with torch.no_grad():
        out = tower(x)
    for b in tower.blocks:
        b.hook_resid_post.remove_hooks()
    assert rel(out, ref) < 1e-5, variant
    assert len(ours) == len(ref_blocks) == 2
    for i, (a, r) in enumerate(zip(ours, ref_blocks)):
        assert rel(a, r) < 1e-5, (variant, i)
    assert cfg.n_prefix == trunk.num_prefix_tokens and cfg.n_registers == trunk.reg_token.shape[1]
    with torch.no_grad():
        spatial = trunk.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)[0]
    assert rel(patch_tokens(ours[1], cfg.n_prefix), spatial) < 1e-6  # the registers are skipped too


def test_small_variant_mlp_ablation_equals_surgery():
    """GluMlp (packed fc1) with LayerScale on attention only: zeroing a unit at hook_post == fc2 column."""
    trunk = small_trunk("glu_fused_avg_noembedcls")
    tower = EvaTower(config_from_timm_eva(trunk, trunk.head, "glu")).eval()
    tower.load_state_dict(state_dict_from_timm_eva(trunk, trunk.head), strict=True)
    x, unit = images(), 17
    fc2 = trunk.blocks[1].mlp.fc2
    with torch.no_grad():
        clean = trunk(x)
        fc2.weight[:, unit] = 0
        surgery = trunk(x)
        tower.blocks[1].mlp.hook_post.add_hook(lambda t, hook: t.index_fill(-1, torch.tensor([unit]), 0.0))
        ablated = tower(x)
    assert rel(ablated, surgery) < 1e-5 and rel(surgery, clean) > 1e-4


# ------------------------------------------------------------------------------------ refusals
REFUSED = {
    "post-norm blocks": (dict(use_post_norm=True), "EvaBlockPostNorm"),
    "mixed rope": (dict(rope_type="mixed", rope_rotate_half=False), "rotary embedding RotaryEmbeddingMixed"),
    "grouped-query attention": (dict(attn_type="rope", qkv_fused=False, num_kv_heads=2), "grouped-query"),
    "max pooling": (dict(global_pool="max"), "global_pool='max'"),
    "no positions at all": (dict(use_abs_pos_emb=False, use_rot_pos_emb=False), "without any positions"),
    "dynamic size with positions": (dict(dynamic_img_size=True), "dynamic_img_size with absolute positions"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_options_refused_by_name(case):
    kwargs, option = REFUSED[case]
    torch.manual_seed(0)
    trunk = timm.create_model("eva02_base_patch16_clip_224", pretrained=False, **SMALL, ref_feat_shape=(4, 4), **kwargs)
    with pytest.raises(NotImplementedError, match="my-eva") as err:
        config_from_timm_eva(trunk, trunk.head, "my-eva")
    assert option in str(err.value) and "not supported by HookedCLIP" in str(err.value)


def test_refused_from_the_open_clip_config_before_anything_is_built(monkeypatch):
    """EVA02-E-14 (post-norm blocks) is refused by name from its config: the trunk is read on the meta
    device, open_clip never builds (or downloads) the 4.4B-parameter model."""
    def no_build(*args, **kwargs):
        raise AssertionError("open_clip.create_model called")

    monkeypatch.setattr(open_clip, "create_model", no_build)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_build)
    with pytest.raises(NotImplementedError, match="EVA02-E-14: timm Eva block 0 type EvaBlockPostNorm"):
        HookedCLIP.from_pretrained("EVA02-E-14", pretrained=None)
    for name in NAMES:  # and the supported ones pass the same check
        check_model_config(name)


def test_bare_timm_eva_through_hooked_vit():
    """A timm Eva without open_clip (HookedViT.from_timm, vision only) is the same EvaTower."""
    from lake_interp.model.hooked_vit import HookedViT

    trunk = small_trunk("eva02_ls_reg_qknorm_half")
    model = HookedViT.from_timm(trunk, "eva02-small")
    x = images()
    with torch.no_grad():
        assert rel(model.encode_image(x), trunk(x)) < 1e-5
    assert model.cfg.vision.family == "timm_eva" and model.n_prefix == 3 and model.text is None


def test_dinov3_from_a_local_checkpoint(tmp_path):
    """timm's DINOv3 loaded as users do (a timm name + a local checkpoint, built at img_size) equals
    the timm model holding the same weights."""
    from safetensors.torch import save_file

    from lake_interp.model.hooked_vit import HookedViT

    torch.manual_seed(0)
    ref = perturbed(timm.create_model("vit_tiny_patch16_dinov3_qkvb", pretrained=False, img_size=64))
    path = tmp_path / "dinov3.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = HookedViT.from_pretrained("vit_tiny_patch16_dinov3_qkvb", str(path), img_size=64)
    x = images()
    with torch.no_grad():
        assert rel(model.encode_image(x), ref(x)) < 1e-5
    assert model.cfg.vision.n_prefix == 5 and model.cfg.vision.options["abs_pos"] is False
    with pytest.raises(ValueError, match=r"\[batch, 3, 64, 64\]"):
        model.encode_image(images(1, 96))  # timm's dynamic size is not mirrored: other sizes are refused
