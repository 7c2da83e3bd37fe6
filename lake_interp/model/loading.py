"""Create open_clip models by name and pretrained tag or checkpoint, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import open_clip
import torch
from torch import nn

from lake_interp.model.convert import check_model_config
from lake_interp.model.tokenizer import load_tokenizer, local_spec, spec_for_name

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)  # makes `lake-tiny` an open_clip model name

NONE_TAGS = {None, "", "none", "None", "random"}
RANDOM_INIT_SEED = 0


def load_open_clip(name: str, pretrained: Optional[str], tokenizer=None, **kwargs) -> tuple[nn.Module, Callable, Callable]:
    """(open_clip model in eval mode, eval preprocess, tokenizer). `pretrained`: tag, path or None.
    `tokenizer`: None (open_clip's for `name`, loaded before the model is built or downloaded, so that
    a hub tokenizer that cannot be had offline fails at once), a callable, or a local Hugging Face
    tokenizer folder."""
    pretrained = None if pretrained in NONE_TAGS else str(pretrained)
    if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise ValueError(
            f"unknown model {name!r}: expected an open_clip model name (open_clip.list_models()), "
            f"'hf-hub:org/repo', or 'lake-tiny'"
        )
    check_model_config(name)  # refuse unsupported towers before building or downloading anything
    if kwargs.get("device") is not None:
        check_device(kwargs["device"])
    is_path = pretrained is not None and (Path(pretrained).suffix or "/" in pretrained or Path(pretrained).exists())
    if is_path and not Path(pretrained).is_file():
        raise FileNotFoundError(f"checkpoint file {pretrained!r} does not exist (--pretrained)")
    if pretrained is not None and not is_path and open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"):
        kwargs.setdefault("force_quick_gelu", True)  # e.g. the openai weights: trained with QuickGELU
    if pretrained is not None and not is_path:
        check_weights_reachable(name, pretrained, kwargs.get("cache_dir"))  # offline: the clear error at once
    built_here = not callable(tokenizer)
    if built_here:
        spec = spec_for_name(name) if tokenizer is None else local_spec(tokenizer, name)
        tokenizer = load_tokenizer(spec, _context_length(name, kwargs), name, kwargs.get("cache_dir"))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # random weights are the same in every process
            oc, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
    except Exception as e:  # open_clip raises RuntimeError, AssertionError, OSError, KeyError...
        if is_path:
            raise ValueError(
                f"checkpoint {pretrained!r} does not fit model {name!r} (expected an open_clip "
                f"state dict for this architecture): {type(e).__name__}: {e}"
            ) from e
        raise _download_error(name, pretrained, e) from e
    if built_here and getattr(tokenizer, "context_length", oc.context_length) != oc.context_length:
        tokenizer.context_length = oc.context_length  # the built model's, as get_tokenizer(context_length=)
    return oc.eval(), preprocess, tokenizer


def _context_length(name: str, kwargs: dict) -> Optional[int]:
    """The text context length the model will be built with (None for hf-hub:/local-dir: names)."""
    if kwargs.get("force_context_length"):
        return kwargs["force_context_length"]
    text_cfg = kwargs.get("text_cfg") or (open_clip.get_model_config(name) or {}).get("text_cfg")
    return None if text_cfg is None else text_cfg.get("context_length", 77)


def check_device(device) -> torch.device:
    """The torch device, or a ValueError naming it (not a download error later on)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1; CLI: --device): {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here (torch.cuda.is_available() is False); "
                         f"use device='cpu' (CLI: --device cpu)")
    return dev


def _cached_weights(cfg: dict, cache_dir: Optional[str]) -> bool:
    """Whether the weights of an open_clip pretrained config are already on disk (so no network is needed)."""
    import os

    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

        repo, filename = os.path.split(hub)
        names = [*_get_safe_alternatives(filename or HF_WEIGHTS_NAME), filename or HF_WEIGHTS_NAME]
        return any(isinstance(try_to_load_from_cache(repo, n, cache_dir=cache_dir), str) for n in names)
    url = cfg.get("url", "")
    root = Path(cache_dir or os.path.expanduser("~/.cache/clip"))
    return bool(url) and (root / os.path.basename(url)).is_file()


def check_weights_reachable(name: str, tag: str, cache_dir: Optional[str] = None) -> None:
    """Refuse at once (a few seconds, no retries) a pretrained tag whose weights are neither in the
    local cache nor downloadable because the hub does not answer; online, or cached, nothing happens."""
    from lake_interp.model.tokenizer import _hub_offline

    cfg = open_clip.get_pretrained_cfg(name, tag)
    needs_network = bool(cfg) and not cfg.get("file") and bool(cfg.get("hf_hub") or cfg.get("url"))
    if not needs_network or _cached_weights(cfg, cache_dir) or not _hub_offline():
        return
    raise _download_error(name, tag, ConnectionError(
        "no network: the Hugging Face hub does not answer (or HF_HUB_OFFLINE is set) and the weights are not in "
        "the local cache"))


def _download_error(name: str, tag: str, cause: Exception) -> RuntimeError:
    tags = [t for m, t in open_clip.list_pretrained() if m == name]
    return RuntimeError(
        f"could not load pretrained weights {tag!r} for {name!r} ({type(cause).__name__}: {cause}). "
        f"Known tags for {name}: {tags or 'none'}. Without network, download the checkpoint "
        f"elsewhere (e.g. open_clip_pytorch_model.bin or .safetensors from the Hugging Face hub) "
        f"and pass its local path: --pretrained /path/to/checkpoint (or "
        f"HookedCLIP.from_pretrained({name!r}, pretrained='/path/to/checkpoint')); for weights trained "
        f"with QuickGELU (the openai tag) name the '-quickgelu' model, e.g. ViT-B-16-quickgelu. A smoke test "
        f"that needs no weights: --model lake-tiny --pretrained none (random weights, meaningless scores)."
    )


# ------------------------------------------------------------------------------------ timm (vision-only)
def is_timm_name(name: str) -> bool:
    """Whether `name` is a timm model name that is not an open_clip model name."""
    if not isinstance(name, str) or name in open_clip.list_models() or name.startswith(("hf-hub:", "local-dir:")):
        return False
    import timm

    return timm.is_model(name)


def read_state_dict(path: str) -> dict:
    """A state dict from a local file: safetensors, or a torch file read with weights_only=True
    (a dict nested under 'model' or 'state_dict' is unwrapped); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist (--pretrained)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} could not be read as safetensors or a weights-only torch file: "
                         f"{type(e).__name__}: {e}") from e
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path!r} is not a state dict (a mapping of names to tensors)")
    return state


TIMM_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                   "pure_fp16": torch.float16, "pure_bf16": torch.bfloat16}


def load_timm(name: str, pretrained: Optional[str], img_size: Optional[int] = None, device=None,
              precision: str = "fp32") -> nn.Module:
    """A timm VisionTransformer / Eva by name in eval mode, built with pretrained=False, then the weights
    of the local checkpoint `pretrained` (timm's layout or torch-hub DINOv2's, through timm's own
    checkpoint filter: key renames, register tokens, position resampling), or random weights for None."""
    import timm

    from lake_interp.model.convert import timm_family, timm_module

    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: expected an open_clip model name (open_clip.list_models()), "
                         f"a timm model name (timm.list_models(), e.g. vit_small_patch14_reg4_dinov2), or 'lake-tiny'")
    if timm_family(name) is None:
        raise NotImplementedError(f"{name}: timm {timm_module(name)} models are not supported by HookedViT "
                                  f"(only timm VisionTransformer and Eva)")
    if precision not in TIMM_PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {sorted(TIMM_PRECISIONS)}")
    if device is not None:
        check_device(device)
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(
            f"checkpoint file {pretrained!r} does not exist (--pretrained): timm models load from a local file "
            f"(safetensors or a torch state dict, timm's or torch-hub DINOv2's layout), or 'none' for random weights")
    kwargs = {} if img_size is None else {"img_size": int(img_size)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)  # random weights are the same in every process
        model = timm.create_model(name, pretrained=False, **kwargs)
    if pretrained is not None:
        state = read_state_dict(pretrained)
        module = __import__(type(model).__module__, fromlist=["checkpoint_filter_fn"])
        where = f"checkpoint {pretrained!r} does not fit timm model {name!r}" + (
            "" if img_size is None else f" at img_size={img_size}")
        try:
            if hasattr(module, "checkpoint_filter_fn"):
                state = module.checkpoint_filter_fn(state, model)
            missing, unexpected = model.load_state_dict(state, strict=False)
        except Exception as e:  # shape mismatches, a layout timm's filter cannot read
            raise ValueError(f"{where}: {type(e).__name__}: {str(e)[:400]}") from e
        if missing or unexpected:
            raise ValueError(f"{where}: {len(missing)} missing parameters {missing[:4]}, {len(unexpected)} unexpected "
                             f"{unexpected[:4]} (expected timm's or torch-hub DINOv2's layout of this architecture)")
    model = model.to(device=device or "cpu", dtype=TIMM_PRECISIONS[precision])
    return model.eval()
