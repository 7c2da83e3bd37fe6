"""timm VisionTransformer towers (SigLIP, SigLIP2 in open_clip; DINOv2 and other timm ViTs bare, as
HookedViT) against their reference implementations: open_clip's and timm's own forward passes and
their own block outputs (forward hooks on the reference modules), random weights perturbed so that
any mix-up of two parameters shows, nothing downloaded.

Sizes: ViT-B-16-SigLIP / SigLIP2 are built by open_clip with their configs but the timm trunk made
small through timm's own kwargs (depth 2, width 64, 2 heads: the same timm architecture, fewer and
narrower blocks) and 2-block text towers; the vision tower of ViT-B-16-SigLIP at full size (timm's
vit_base_patch16_siglip_224, ~30 s here) runs with LAKE_INTERP_FULL_SIZE=1; DINOv2-S with registers
at full depth and width, built by timm at 112 px (img_size=112: an 8x8 grid) to stay fast.
"""

import copy
import math
import os
import socket
import sys
import time
import warnings

import open_clip
import pytest
import timm
import torch

from lake_interp.lake import Lake, LakeConfig
from lake_interp.model import HookedCLIP, HookedCLIPConfig, HookedViT
from lake_interp.model.components import TimmViTTower, make_vision_tower
from lake_interp.model.tokenizer import TokenizerUnavailableError
from tests.conftest import perturbed

REL_TOL = 1e-5
SMALL_TIMM = dict(depth=2, embed_dim=64, num_heads=2)
DINO = "vit_small_patch14_reg4_dinov2"
DINO_SIZE = 112  # 8 x 8 patches of 14 px


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def block_outputs(blocks, run) -> list[torch.Tensor]:
    """The reference's own block outputs (forward hooks on its block modules) while `run()` runs."""
    outs = []
    handles = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone())) for b in blocks]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return outs


def small_siglip(name: str, monkeypatch) -> torch.nn.Module:
    """open_clip's model of `name` (its config: MAP head, no class token, proj 'none', text tower
    options) with a small timm trunk (timm kwargs) and a 2-block text tower, perturbed."""
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda n, **kw: create(n, **{**kw, **SMALL_TIMM}))
    text = dict(open_clip.get_model_config(name)["text_cfg"], layers=2, width=64, heads=2)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = open_clip.create_model(name, pretrained=None, text_cfg=text, embed_dim=64)
    monkeypatch.setattr(timm, "create_model", create)
    return perturbed(oc)


def random_ids(oc, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Token ids passed directly (SigLIP's hub tokenizer cannot be had offline)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 1000, (n, oc.text.context_length), generator=g)


def id_tokenizer(oc):
    return lambda texts: random_ids(oc, len(texts), seed=len(texts))


# ------------------------------------------------------------------------------------ SigLIP / SigLIP2 in open_clip
@pytest.mark.parametrize("name,act", [("ViT-B-16-SigLIP", "gelu"), ("ViT-B-16-SigLIP2", "gelu_tanh")])
def test_siglip_equals_open_clip_embeddings_blocks_and_pool(name, act, monkeypatch):
    oc = small_siglip(name, monkeypatch)
    model = HookedCLIP.from_open_clip(oc, name, tokenizer=id_tokenizer(oc))
    v, t = model.cfg.vision, model.cfg.text
    assert isinstance(model.visual, TimmViTTower) and v.family == "timm_vit"
    assert (v.n_prefix, v.class_token, v.pool_type, v.projection) == (0, False, "map", "none")
    assert (t.pool_type, t.causal_mask, t.projection, t.block.act) == ("last", False, "linear_bias", act)
    x, ids = images(224), random_ids(oc)
    trunk = oc.visual.trunk
    with torch.no_grad():
        ref_blocks = block_outputs(trunk.blocks, lambda: oc.encode_image(x))
        ref_text_blocks = block_outputs(oc.text.transformer.resblocks, lambda: oc.encode_text(ids))
        pool_io = {}
        h = trunk.attn_pool.register_forward_hook(lambda m, i, o: pool_io.update(x=i[0], out=o))
        ref_img, ref_txt = oc.encode_image(x), oc.encode_text(ids)
        h.remove()
        (logits, _), (ref_logits, _) = model(x, ids), oc.get_logits(x, ids)
        _, cache = model.run_with_cache(x, ids)
    assert rel(cache["visual.hook_image_embed"], ref_img) < REL_TOL
    assert rel(cache["text.hook_text_embed"], ref_txt) < REL_TOL
    assert rel(logits, ref_logits) < REL_TOL  # logit_bias included
    for layer, ref in enumerate(ref_blocks):
        assert rel(cache[f"visual.blocks.{layer}.hook_resid_post"], ref) < REL_TOL, layer
    for layer, ref in enumerate(ref_text_blocks):
        assert rel(cache[f"text.blocks.{layer}.hook_resid_post"], ref) < REL_TOL, layer
    # the MAP head: its output, and its attention recomputed from timm's own weights on timm's input
    assert rel(cache["visual.attn_pool.hook_out"], pool_io["out"]) < REL_TOL
    ap, (b, n, d) = trunk.attn_pool, pool_io["x"].shape
    q = ap.q(ap.latent).reshape(1, 1, ap.num_heads, -1).transpose(1, 2)
    k = ap.kv(pool_io["x"]).reshape(b, n, 2, ap.num_heads, -1)[:, :, 0].transpose(1, 2)
    pattern = (q @ k.transpose(-2, -1) / math.sqrt(d // ap.num_heads)).softmax(-1)
    assert cache["visual.attn_pool.hook_pattern"].shape == (2, v.attn_pool_heads, 1, 196)
    assert rel(cache["visual.attn_pool.hook_pattern"], pattern.detach()) < REL_TOL
    # no prefix: every token is a patch; the grid is the residual reshaped row-major
    resid = cache[f"visual.blocks.{v.n_layers - 1}.hook_resid_post"]
    assert torch.equal(model.patch_grid(resid), resid.reshape(2, 14, 14, -1))
    # per-token projection: timm's MAP head on a sequence of that token alone
    with torch.no_grad():
        ln = trunk.norm(resid[:, :3])
        one_by_one = torch.stack([ap(ln[:, i:i + 1]) for i in range(3)], dim=1)
        assert rel(model.project_visual_tokens(resid[:, :3]), one_by_one) < REL_TOL
    # the config round trip rebuilds the same tower
    assert HookedCLIPConfig.from_dict(model.cfg.to_dict()) == model.cfg
    again = HookedCLIP(HookedCLIPConfig.from_dict(model.cfg.to_dict()))
    again.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(again.encode_image(x), model.encode_image(x))


def test_siglip_mlp_unit_ablation_equals_weight_surgery(monkeypatch):
    oc = small_siglip("ViT-B-16-SigLIP", monkeypatch)
    model = HookedCLIP.from_open_clip(oc, "ViT-B-16-SigLIP", tokenizer=id_tokenizer(oc))
    x, layer, unit = images(224), 1, 37

    def zero(act, hook):
        act[..., unit] = 0.0
        return act

    with torch.no_grad():
        ablated = model.run_with_hooks(x, fwd_hooks=[(f"visual.blocks.{layer}.mlp.hook_post", zero)])
        clean = model.encode_image(x)
        oc.visual.trunk.blocks[layer].mlp.fc2.weight[:, unit] = 0.0  # the unit's output weights
        ref = oc.encode_image(x)
    assert rel(ablated, ref) < REL_TOL
    assert rel(clean, ref) > 1e-4  # the unit matters: the test can tell


def test_siglip_tokenizer_offline_fails_fast_and_by_name(monkeypatch):
    oc = small_siglip("ViT-B-16-SigLIP2", monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a) or (_ for _ in ()).throw(OSError))
    start = time.perf_counter()
    with pytest.raises(TokenizerUnavailableError, match="timm/ViT-B-16-SigLIP2"):
        HookedCLIP.from_open_clip(oc, "ViT-B-16-SigLIP2")
    assert time.perf_counter() - start < 5.0 and not attempts


@pytest.mark.skipif(not os.environ.get("LAKE_INTERP_FULL_SIZE"), reason="full-size ViT-B: LAKE_INTERP_FULL_SIZE=1")
def test_full_size_siglip_vision_tower_equals_timm():
    torch.manual_seed(0)
    trunk = perturbed(timm.create_model("vit_base_patch16_siglip_224", pretrained=False, num_classes=0), std=0.01)
    model = HookedViT.from_timm(trunk, "vit_base_patch16_siglip_224")
    x = images(224, n=1)
    with torch.no_grad():
        ref_blocks = block_outputs(trunk.blocks, lambda: trunk(x))
        ref = trunk(x)
        _, cache = model.run_with_cache(x)
    assert model.cfg.vision.n_layers == 12 and model.cfg.vision.d_model == 768
    assert rel(cache["visual.hook_image_embed"], ref) < REL_TOL
    assert max(rel(cache[f"visual.blocks.{i}.hook_resid_post"], r) for i, r in enumerate(ref_blocks)) < REL_TOL


# ------------------------------------------------------------------------------------ DINOv2 (HookedViT)
@pytest.fixture(scope="module")
def dino():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trunk = perturbed(timm.create_model(DINO, pretrained=False, img_size=DINO_SIZE))
    return trunk, HookedViT.from_timm(trunk, DINO)


def test_dinov2_with_registers_equals_timm(dino):
    trunk, model = dino
    v = model.cfg.vision
    assert (v.n_prefix, v.class_token, v.n_registers, v.pos_embed_prefix) == (5, True, 4, False)
    assert trunk.num_prefix_tokens == 5 and model.text is None and v.block.layer_scale
    x = images(DINO_SIZE)
    with torch.no_grad():
        out = {}  # one timm forward: every block's output and every ls2 (LayerScale of the MLP) output
        ls2 = block_outputs([b.ls2 for b in trunk.blocks],
                            lambda: out.update(blocks=block_outputs(trunk.blocks, lambda: out.update(f=trunk.forward_features(x)))))
        ref_blocks, feats = out["blocks"], out["f"]
        ref = trunk.forward_head(feats)
        _, cache = model.run_with_cache(x)
    assert rel(cache["visual.hook_image_embed"], ref) < REL_TOL
    assert rel(cache["visual.hook_pooled"], trunk.forward_head(feats, pre_logits=True)) < REL_TOL
    for layer, r in enumerate(ref_blocks):
        assert rel(cache[f"visual.blocks.{layer}.hook_resid_post"], r) < REL_TOL, layer
        assert rel(cache[f"visual.blocks.{layer}.hook_mlp_out"], ls2[layer]) < REL_TOL, layer  # after LayerScale
    # patch_grid skips the class token and the 4 registers: timm's patch tokens, row-major
    last = cache[f"visual.blocks.{v.n_layers - 1}.hook_resid_post"]
    expected = ref_blocks[-1][:, trunk.num_prefix_tokens:].reshape(2, 8, 8, -1)
    assert model.patch_grid(last).shape == (2, 8, 8, 384)
    assert rel(model.patch_grid(last), expected) < REL_TOL
    assert rel(model.patch_tokens(cache["visual.ln_post.hook_out"]), feats[:, 5:]) < REL_TOL


def test_dinov2_mlp_unit_ablation_equals_weight_surgery(dino):
    trunk, model = dino
    x, layer, unit = images(DINO_SIZE), 4, 101

    def zero(act, hook):
        act[..., unit] = 0.0
        return act

    surgery = copy.deepcopy(trunk)
    with torch.no_grad():
        surgery.blocks[layer].mlp.fc1.weight[unit] = 0.0  # the unit's input row and bias:
        surgery.blocks[layer].mlp.fc1.bias[unit] = 0.0  # gelu(0) = 0, so its output is zero
        ablated = model.run_with_hooks(x, fwd_hooks=[(f"visual.blocks.{layer}.mlp.hook_post", zero)])
        ref, clean = surgery(x), trunk(x)
    assert rel(ablated, ref) < REL_TOL
    assert rel(clean, ref) > 1e-4


def _to_torch_hub_layout(state: dict, reg: bool) -> dict:
    """timm's DINOv2 state dict in the layout of facebookresearch/dinov2's torch-hub models: positions
    include the class token's, registers as `register_tokens`, a `mask_token` (written here, not by timm)."""
    hub = {k: v.clone() for k, v in state.items()}
    hub["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    if reg:
        cls_pos = 0.01 * torch.randn(1, 1, state["cls_token"].shape[-1], generator=torch.Generator().manual_seed(3))
        hub["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)  # hub adds it to the class token
        hub["cls_token"] = state["cls_token"] - cls_pos
        hub["register_tokens"] = hub.pop("reg_token")
    return hub


@pytest.mark.parametrize("name", [DINO, "vit_small_patch14_dinov2"])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_dinov2_from_a_local_checkpoint_in_timm_or_torch_hub_layout(name, fmt, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = perturbed(timm.create_model(name, pretrained=False, img_size=56, depth=2))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    x = images(56, n=1)
    with torch.no_grad():
        expected = ref(x)
    for layout, sd in (("timm", state), ("hub", _to_torch_hub_layout(state, reg="reg_token" in state))):
        path = tmp_path / f"{layout}.{fmt}"
        save_file(sd, str(path)) if fmt == "safetensors" else torch.save(sd, path)
        model = _from_pretrained_depth2(name, str(path))
        with torch.no_grad():
            assert rel(model.encode_image(x), expected) < REL_TOL, layout
        assert model.pretrained == str(path) and not model.random_weights


def _from_pretrained_depth2(name: str, path: str) -> HookedViT:
    """HookedViT.from_pretrained with timm building 2 blocks (the checkpoint's)."""
    create = timm.create_model
    try:
        timm.create_model = lambda n, **kw: create(n, **{**kw, "depth": 2})
        return HookedViT.from_pretrained(name, path, img_size=56)
    finally:
        timm.create_model = create


def test_timm_loading_never_silently_random(tmp_path):
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        model = HookedViT.from_pretrained("vit_small_patch14_dinov2", "none", img_size=112)
    assert model.random_weights and model.image_size == 112 and model.grid_size == 8
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HookedViT.from_pretrained("vit_small_patch14_dinov2", str(tmp_path / "missing.pth"))
    # a checkpoint of another architecture (2 blocks; timm's config has 12): refused naming the file
    small = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56, depth=2)
    torch.save(small.state_dict(), tmp_path / "small.pth")
    with pytest.raises(ValueError, match=f"checkpoint '{tmp_path / 'small.pth'}' does not fit.*blocks.2"):
        HookedViT.from_pretrained("vit_small_patch14_dinov2", str(tmp_path / "small.pth"), img_size=56)
    with pytest.raises(FileNotFoundError, match="'lvd142m' does not exist"):  # a timm tag is not downloaded
        HookedViT.from_pretrained("vit_small_patch14_dinov2", "lvd142m")
    with pytest.raises(ValueError, match="unknown model 'vit_nosuch'"):
        HookedViT.from_pretrained("vit_nosuch", None)
    with pytest.raises(NotImplementedError, match="^resnet18: timm resnet models are not supported"):
        HookedViT.from_pretrained("resnet18", None)


def test_lake_runs_on_dinov2_visual_branch_and_refuses_the_semantic_one(dino):
    _, model = dino
    support, test = images(DINO_SIZE, n=2, seed=1), images(DINO_SIZE, n=2, seed=2)
    cfg = LakeConfig(layers=(5, 11), k_neurons=16, text_weight=0.0)
    result = Lake(model, cfg, "disc").fit(support).score(test)
    assert result.maps.shape == (2, DINO_SIZE, DINO_SIZE) and torch.isfinite(result.image_scores).all()
    with pytest.raises(ValueError, match="no text tower.*text_weight=0"):
        Lake(model, cfg.replace(text_weight=0.5), "disc")
    with pytest.raises(ValueError, match="needs a text tower"):
        model.encode_text(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="vision-only"):
        model.tokenizer(["a photo"])
    assert not any(n.startswith("text.") for n in model.hook_names())
    rebuilt = HookedViT(HookedCLIPConfig.from_dict(model.cfg.to_dict()))
    assert isinstance(rebuilt.visual, TimmViTTower) and rebuilt.text is None


# ------------------------------------------------------------------------------------ other timm ViT options
OPTIONS = {
    "qk_norm, no qkv bias, norm_pre, no_embed_class": dict(qk_norm=True, qkv_bias=False, pre_norm=True,
                                                           no_embed_class=True, reg_tokens=2),
    "avg pool + fc_norm + classifier head": dict(global_pool="avg", fc_norm=True, num_classes=10),
    "gelu_tanh, LayerScale, token pool": dict(act_layer="gelu_tanh", init_values=0.1),
}


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_timm_vit_options_equal_timm(kind):
    torch.manual_seed(0)
    trunk = perturbed(timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, **{"num_classes": 0, **OPTIONS[kind]}))
    model = HookedViT.from_timm(trunk, kind)
    x = images(32)
    with torch.no_grad():
        ref_blocks = block_outputs(trunk.blocks, lambda: trunk(x))
        ref = trunk(x)
        _, cache = model.run_with_cache(x)
    assert rel(cache["visual.hook_image_embed"], ref) < REL_TOL
    for layer, r in enumerate(ref_blocks):
        assert rel(cache[f"visual.blocks.{layer}.hook_resid_post"], r) < REL_TOL
    assert model.cfg.vision.n_prefix == trunk.num_prefix_tokens
    if "fc_norm" in kind:
        assert "visual.fc_norm.hook_out" in cache and model.cfg.vision.projection == "linear_bias"


def test_timm_options_it_cannot_mirror_are_refused_by_name():
    trunk = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1,
                                                             num_heads=2, global_pool="max", num_classes=0)
    with pytest.raises(NotImplementedError, match=r"^maxpool-vit: timm global_pool='max'"):
        HookedViT.from_timm(trunk, "maxpool-vit")


def test_the_eva_family_is_refused_by_name_where_its_module_is_missing(monkeypatch, dino):
    monkeypatch.setitem(sys.modules, "lake_interp.model.components.eva", None)  # as if the module did not exist
    cfg = HookedCLIPConfig.from_dict(dino[1].cfg.to_dict()).vision
    eva = type(cfg)(**{**cfg.__dict__, "family": "timm_eva"})
    with pytest.raises(NotImplementedError, match="timm Eva towers.*components.eva is missing"):
        make_vision_tower(eva)


# ------------------------------------------------------------------------------------ the command line
def test_benchmark_command_on_a_timm_dinov2_name(tmp_path, monkeypatch, capsys):
    """`lake-interp benchmark --model <timm name> --pretrained none`: HookedViT, image-only methods run,
    the text branch refused by name. timm builds the model small here (56 px, 2 blocks) to stay fast."""
    import csv

    from lake_interp.cli import main
    from lake_interp.data import make_synthetic_dataset

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda n, **kw: create(n, **{**kw, "img_size": 56, "depth": 2}))
    root = make_synthetic_dataset(tmp_path / "syn", categories=["disc"], seed=1, image_size=64, n_train=2,
                                  n_test_good=2, n_test_defect=1)
    common = ["benchmark", "--dataset", "mvtec", "--root", str(root), "--shots", "1", "--seeds", "0",
              "--k-neurons", "8", "--no-progress", "--model", DINO, "--pretrained", "none", "--device", "cpu"]
    assert main([*common, "--methods", "lake", "lake_random", "knn_all", "--text-weight", "0",
                 "--out", str(tmp_path / "b")]) == 0
    with open(tmp_path / "b" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"lake", "lake_random", "knn_all"}
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    assert main([*common, "--methods", "lake", "text_dense", "--out", str(tmp_path / "c")]) == 2
    assert "no text tower" in capsys.readouterr().err
