"""open_clip's model zoo through HookedCLIP: the sweep of scripts/sweep_open_clip.py on one model per
tokenizer family and pooling, the tokenizer refusals, the fast offline error for hub tokenizers,
open_clip's mixed precision parameter by parameter, and refusals that name the model.

References are open_clip's own (its forward, its tokenizers, its parameters), never HookedCLIP's code.
"""

import importlib.util
import socket
import time
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.model import CLIP

from lake_interp import HookedCLIP
from lake_interp.model.convert import COMPUTE_DTYPE_PARAMS, state_dict_from_open_clip
from lake_interp.model.tokenizer import TokenizerUnavailableError
from tests.conftest import perturbed

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_open_clip.py"


def _load_sweep():
    spec = importlib.util.spec_from_file_location("sweep_open_clip", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sweep = _load_sweep()


@pytest.fixture
def no_network(monkeypatch):
    """Hugging Face offline, and every socket connection refused (recorded), for the test only."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    return attempts


# ------------------------------------------------------------------------------------ the sweep, on a subset
# one model per tokenizer family / pooling, and refusals of each kind
SUBSET = {
    "ViT-B-32": "equal",  # CLIP BPE tokenizer, argmax pooling
    "ViT-B-16-quickgelu": "equal",  # the MetaCLIP (1) architecture: QuickGELU, CLIP tokenizer
    "ViT-H-14-CLIPA": "equal",  # bert-base-uncased (strip_sep_token), 'last' pooling, no causal mask
    "ViT-H-14-worldwide": "equal",  # MetaCLIP 2: facebook/xlm-v-base, 'eos' pooling, eos_id 2
    "ViT-L-14-worldwide": "equal",  # google/mt5-base (canonicalize), 'eos' pooling, eos_id 1
    "RN50": "refused",  # ResNet, refused from its config and built
    "coca_ViT-B-32": "refused",  # CoCa, refused from its config and built
    "ViT-B-16-SigLIP2": "equal",  # timm VisionTransformer tower (MAP head, no class token), hub tokenizer: ids
    "convnext_base": "refused",  # timm tower of another family (ConvNeXt)
    "xlm-roberta-base-ViT-B-32": "refused",  # Hugging Face text tower
}


@pytest.mark.parametrize("name", list(SUBSET))
def test_sweep_subset(name, tmp_path, no_network):
    row = sweep.check_name(name, tmp_path)
    assert row["status"] == SUBSET[name], row
    if row["status"] == "equal":
        assert "prompts apart" in row["detail"]
    assert not no_network  # nothing tried to reach the network


def test_without_name_the_tokenizer_comes_from_the_model(tmp_path, no_network):
    clip = sweep.build_small("ViT-B-32")
    tokens = HookedCLIP.from_open_clip(clip).tokenizer(sweep.PROMPTS)
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-B-32")(sweep.PROMPTS))
    with pytest.raises(TokenizerUnavailableError, match="facebook/xlm-v-base") as err:
        HookedCLIP.from_open_clip(sweep.build_small("ViT-H-14-worldwide"))
    assert err.value.source == open_clip.get_model_config("ViT-H-14-worldwide")["text_cfg"]["hf_tokenizer_name"]
    # CLIPA's tower (vocab 32000, 'last' pooling) is also SigLIP's: ambiguous, refused, says what to pass
    with pytest.raises(ValueError, match="refusing to guess.*name="):
        HookedCLIP.from_open_clip(sweep.build_small("ViT-H-14-CLIPA"))
    custom = CLIP(32, open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
                  open_clip.model.CLIPTextCfg(layers=1, width=32, heads=2, vocab_size=1000))
    with pytest.raises(ValueError, match=r"vocab_size=1000.*refusing to guess.*tokenizer="):
        HookedCLIP.from_open_clip(custom)


def test_a_wrong_tokenizer_is_refused_not_used(tmp_path, no_network):
    """The two bugs of open_clip's default tokenizer on other models, shown on open_clip itself, refused."""
    world = sweep.build_small("ViT-H-14-worldwide", noise=0.02)
    clip_ids = open_clip.SimpleTokenizer(context_length=77)(sweep.PROMPTS)
    with torch.no_grad():
        same = world.encode_text(clip_ids)  # never the end token 2: both prompts pool position 0
    assert torch.equal(same[0], same[1])
    with pytest.raises(ValueError, match="never gives the end token 2"):
        HookedCLIP.from_open_clip(world, "ViT-H-14-worldwide", tokenizer=open_clip.SimpleTokenizer(context_length=77))
    clipa = sweep.build_small("ViT-H-14-CLIPA")
    with pytest.raises(ValueError, match="outside the text tower's vocabulary of 32000"):
        HookedCLIP.from_open_clip(clipa, tokenizer=open_clip.SimpleTokenizer(context_length=32))
    # a local Hugging Face folder works offline and takes the config's options (strip_sep_token)
    folder = sweep.standin_tokenizer("bert-base-uncased", tmp_path)
    model = HookedCLIP.from_open_clip(clipa, "ViT-H-14-CLIPA", tokenizer=str(folder))
    assert 102 not in model.tokenizer(sweep.PROMPTS)  # [SEP] stripped, as open_clip's config asks


# ------------------------------------------------------------------------------------ offline, fast and clear
def test_hub_tokenizer_offline_fails_fast_with_what_to_do(tmp_path, no_network):
    import transformers  # noqa: F401  (its import time is not the call's)

    start = time.perf_counter()
    with pytest.raises(TokenizerUnavailableError) as err:  # before the model (ViT-H-14) is built
        HookedCLIP.from_pretrained("ViT-H-14-CLIPA", pretrained=None, cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 5.0
    msg = str(err.value)
    for part in ("ViT-H-14-CLIPA", "'bert-base-uncased'", "not in the local cache", "save_pretrained",
                 "tokenizer='/path/to/", "Nothing was downloaded"):
        assert part in msg, part
    assert not no_network


def test_offline_detection_without_the_env_flag(monkeypatch, tmp_path, no_network):
    """Without HF_HUB_OFFLINE, a hub that does not answer is found in one short probe (here refused)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    oc = sweep.build_small("ViT-L-14-worldwide")
    start = time.perf_counter()
    with pytest.raises(TokenizerUnavailableError, match="google/mt5-base"):
        HookedCLIP.from_open_clip(oc, "ViT-L-14-worldwide")
    assert time.perf_counter() - start < 5.0
    assert len(no_network) == 1 and no_network[0][0][0] == "huggingface.co"  # the probe, nothing else


# ------------------------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_matches_open_clip_parameter_by_parameter(precision):
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = perturbed(open_clip.create_model("lake-tiny", pretrained=None, precision=precision))
    model = HookedCLIP.from_open_clip(oc, "lake-tiny")
    ours = dict(model.named_parameters())
    theirs = state_dict_from_open_clip(oc)
    assert set(ours) == set(theirs)
    kept_fp32 = {k for k, v in theirs.items() if v.dtype == torch.float32}
    assert any(".ln" in k for k in kept_fp32) and "logit_scale" in kept_fp32  # open_clip's layout
    for key, ref in theirs.items():
        if key in COMPUTE_DTYPE_PARAMS:  # same values, in the dtype open_clip casts it to in forward
            assert ours[key].dtype == dtype and torch.equal(ours[key], ref.to(dtype)), key
            continue
        assert ours[key].dtype == ref.dtype, (key, ours[key].dtype, ref.dtype)
        assert torch.equal(ours[key], ref), key
    # every LayerNorm on the same low-precision input: bit for bit open_clip's LayerNormFp32
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    pairs = [(model.visual.ln_pre, oc.visual.ln_pre), (model.visual.ln_post, oc.visual.ln_post),
             (model.text.ln_final, oc.ln_final)]
    for tower, blocks in (("visual", oc.visual.transformer.resblocks), ("text", oc.transformer.resblocks)):
        for ours_block, block in zip(getattr(model, tower).blocks, blocks):
            pairs += [(ours_block.ln1, block.ln_1), (ours_block.ln2, block.ln_2)]
    with torch.no_grad():
        for ours_ln, ln in pairs:
            assert torch.equal(ours_ln(x), ln(x))
    # end to end: as close as the low-precision attention kernels allow (measured: 8e-4 fp16, 8e-3 bf16)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    tokens = open_clip.get_tokenizer("lake-tiny")(sweep.PROMPTS)
    with torch.no_grad():
        got = [model.encode_image(images), model.encode_text(tokens), model(images, tokens)[0]]
        ref = [oc.encode_image(images), oc.encode_text(tokens), oc.get_logits(images, tokens)[0]]
    tol = {"fp16": 3e-3, "bf16": 3e-2}[precision]
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype
        assert sweep.rel_diff(a, b) < tol


def test_layer_scale_under_mixed_precision_is_refused_by_name():
    """open_clip keeps LayerScale fp32 under precision='fp16' and its own forward then fails."""
    cfg = open_clip.get_model_config("lake-tiny")
    vision, text = dict(cfg["vision_cfg"], ls_init_value=0.1), dict(cfg["text_cfg"], ls_init_value=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = open_clip.create_model("lake-tiny", pretrained=None, precision="fp16", vision_cfg=vision, text_cfg=text)
    with pytest.raises(RuntimeError):
        oc.encode_image(torch.zeros(1, 3, 64, 64, dtype=torch.float16))
    with pytest.raises(NotImplementedError, match=r"^ls-model: vision LayerScale in torch.float32.*pure_fp16"):
        HookedCLIP.from_open_clip(oc, "ls-model")


# ------------------------------------------------------------------------------------ refusals name the model
def test_refusals_name_the_model_or_ask_for_the_name():
    oc = sweep.build_small("RN50")
    with pytest.raises(NotImplementedError, match=r"^RN50: vision tower ModifiedResNet"):
        HookedCLIP.from_open_clip(oc, "RN50")
    with pytest.raises(NotImplementedError, match=r"^open_clip CLIP \(no model name given: pass name=\): vision tower"):
        HookedCLIP.from_open_clip(oc)
    with pytest.raises(NotImplementedError, match=r"^RN50: ResNet vision tower"):
        HookedCLIP.from_pretrained("RN50", pretrained=None)
