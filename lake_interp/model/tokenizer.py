"""The tokenizer of an open_clip model: from open_clip's config for its name, or from what the built
text tower says; never a silent guess, never a long wait on a hub that cannot be reached.

open_clip picks the tokenizer from a model's name (`open_clip.get_tokenizer(name)`): its `text_cfg`
names a Hugging Face tokenizer (`hf_tokenizer_name`, e.g. CLIPA's `bert-base-uncased`, the worldwide
models' `facebook/xlm-v-base` / `google/mt5-base`) or none (CLIP's BPE `SimpleTokenizer`). A built
model does not carry its name, so without one the tokenizer is read off the text tower
(vocabulary size, pooling, end token): the open_clip configs with that tower all share one
tokenizer, or the vocabulary is CLIP's own (49408 ids), or it cannot be known and is refused.

Every tokenizer, chosen here or passed by the user, is checked on two prompts against the tower:
ids of the model's context length, inside its vocabulary, with the end token the pooling reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import open_clip
import torch

CLIP_VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer (CLIP BPE): ids 0..49407, end of text 49407
PROBE_PROMPTS = ("a photo of a scratched metal bottle", "flawless")
HUB_PROBE_TIMEOUT_S = 3.0
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


class TokenizerUnavailableError(RuntimeError):
    """A Hugging Face hub tokenizer that is not in the local cache while the hub cannot be reached."""

    def __init__(self, message: str, source: str):
        super().__init__(message)
        self.source = source


@dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer: `kind` "clip" (open_clip.SimpleTokenizer), "hf" (open_clip.HFTokenizer of
    `source`, a hub id or a local folder), "siglip" (open_clip.SigLipTokenizer variant `source`) or
    "open_clip" (open_clip.get_tokenizer(`source`), for hf-hub: and local-dir: names)."""

    kind: str
    source: Optional[str] = None
    kwargs_json: str = "{}"  # tokenizer_kwargs of the config (JSON, so that the spec stays hashable)
    mode: Optional[str] = None  # HFTokenizer tokenizer_mode
    origin: str = ""  # where the choice comes from, for messages

    @property
    def kwargs(self) -> dict:
        return json.loads(self.kwargs_json)

    def describe(self) -> str:
        what = {"clip": "open_clip's CLIP tokenizer (SimpleTokenizer)", "hf": f"Hugging Face tokenizer {self.source!r}",
                "siglip": f"SigLIP tokenizer {self.source!r}", "open_clip": f"open_clip tokenizer of {self.source!r}"}
        return what[self.kind] + (f", {self.origin}" if self.origin else "")


def spec_for_name(name: Optional[str]) -> Optional[TokenizerSpec]:
    """The tokenizer open_clip.get_tokenizer(name) builds, as a spec (nothing is loaded); None if
    `name` is not an open_clip model name."""
    if not name:
        return None
    if name.startswith(("hf-hub:", "local-dir:")):
        return TokenizerSpec("open_clip", name, origin=f"open_clip's config of {name!r}")
    if name not in open_clip.list_models():
        return None
    return _spec_from_text_cfg(name, open_clip.get_model_config(name).get("text_cfg", {}),
                               origin=f"open_clip's config of {name!r}")


def _spec_from_text_cfg(name: str, text: dict, origin: str) -> TokenizerSpec:
    """open_clip.get_tokenizer's choice for a built-in config (factory.get_tokenizer, schema None)."""
    kwargs = json.dumps(text.get("tokenizer_kwargs") or {}, sort_keys=True)
    if text.get("hf_tokenizer_name"):
        return TokenizerSpec("hf", text["hf_tokenizer_name"], kwargs, text.get("tokenizer_mode"), origin)
    if "siglip" in name.lower():
        variant = "gemma" if "siglip2" in name.lower() else "mc4" if "i18n" in name.lower() else "c4-en"
        return TokenizerSpec("siglip", variant, "{}", None, origin)
    return TokenizerSpec("clip", None, kwargs, None, origin)


def spec_from_model(text_cfg, name: Optional[str] = None) -> TokenizerSpec:
    """The tokenizer of a built text tower (`HookedCLIPConfig.text`), read off its vocabulary size,
    pooling and end token; ValueError where these do not determine it."""
    pool, vocab = text_cfg.pool_type, text_cfg.vocab_size
    eos = text_cfg.eos_id if pool == "eos" else None
    tower = f"vocab_size={vocab}, pool_type={pool!r}" + (f", eos_id={eos}" if eos is not None else "")
    specs: dict[TokenizerSpec, list[str]] = {}
    for model_name in open_clip.list_models():
        text = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
        if text.get("hf_model_name"):
            continue  # a Hugging Face text tower: refused by HookedCLIP, vocabulary not in the config
        cfg_pool = text.get("pool_type", "argmax")
        cfg_eos = text.get("eos_id", 2) if cfg_pool == "eos" else None
        if (text.get("vocab_size", CLIP_VOCAB_SIZE), cfg_pool, cfg_eos) == (vocab, pool, eos):
            spec = _spec_from_text_cfg(model_name, text, origin="")
            specs.setdefault(spec, []).append(model_name)
    if not specs and vocab == CLIP_VOCAB_SIZE:  # CLIP's BPE vocabulary, in a tower open_clip has no config for
        specs[TokenizerSpec("clip")] = []
    label = name or "this model"
    how = (f"pass the open_clip model name (HookedCLIP.from_open_clip(oc, name='ViT-...')) or the tokenizer "
           f"(tokenizer=callable returning [n, {text_cfg.context_length}] ids, or tokenizer='/path/to/hf_tokenizer_folder')")
    if len(specs) == 1:
        (spec, names), = specs.items()
        origin = (f"read off the text tower ({tower}: as open_clip's {_few(names)})" if names
                  else f"read off the text tower ({tower}: CLIP's BPE vocabulary)")
        return TokenizerSpec(spec.kind, spec.source, spec.kwargs_json, spec.mode, origin)
    if not specs:
        raise ValueError(f"{label}: cannot tell which tokenizer its text tower ({tower}) was trained with "
                         f"(no open_clip config has this tower and it is not CLIP's {CLIP_VOCAB_SIZE}-id "
                         f"vocabulary); refusing to guess: {how}")
    options = "; ".join(f"{s.describe()} ({_few(n)})" for s, n in specs.items())
    raise ValueError(f"{label}: its text tower ({tower}) fits several tokenizers: {options}; refusing to "
                     f"guess: {how}")


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# ------------------------------------------------------------------------------------ loading
def resolve_tokenizer(name: Optional[str], text_cfg, tokenizer=None, cache_dir: Optional[str] = None) -> Callable:
    """The checked tokenizer of a model: `tokenizer` (a callable, or a local Hugging Face tokenizer
    folder) if given, else open_clip's for `name`, else the one the text tower says."""
    ctx = text_cfg.context_length
    if callable(tokenizer):
        tok, what = tokenizer, f"the tokenizer passed ({type(tokenizer).__name__})"
    elif tokenizer is not None:
        spec = local_spec(tokenizer, name)
        tok, what = load_tokenizer(spec, ctx, name, cache_dir), spec.describe()
    else:
        spec = spec_for_name(name) or spec_from_model(text_cfg, name)
        tok, what = load_tokenizer(spec, ctx, name, cache_dir), spec.describe()
    check_tokenizer(tok, text_cfg, name, what)
    return tok


def local_spec(path, name: Optional[str] = None) -> TokenizerSpec:
    """A local Hugging Face tokenizer folder, with the tokenizer options open_clip's config of `name`
    gives its hub tokenizer (e.g. CLIPA's strip_sep_token)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer {str(path)!r}: expected a callable or a local folder with Hugging Face "
                                f"tokenizer files (tokenizer.json / tokenizer_config.json ...); it is not a folder")
    named = spec_for_name(name)
    kwargs, mode = (named.kwargs_json, named.mode) if named is not None and named.kind == "hf" else ("{}", None)
    return TokenizerSpec("hf", str(folder), kwargs, mode, origin=f"local folder {str(folder)!r}")


def load_tokenizer(spec: TokenizerSpec, context_length: int, name: Optional[str] = None,
                   cache_dir: Optional[str] = None) -> Callable:
    """Build the tokenizer of `spec`. A hub tokenizer comes from the local cache; only where it is
    not cached and the hub answers is it downloaded (as open_clip does); offline the error is
    immediate and says what to download and how to pass it."""
    if spec.kind == "clip":
        return open_clip.SimpleTokenizer(context_length=context_length, **spec.kwargs)
    if spec.kind == "open_clip":
        if spec.source.startswith("hf-hub:") and _hub_offline():
            raise _unavailable(name, spec, None)
        return open_clip.get_tokenizer(spec.source, context_length=context_length, cache_dir=cache_dir)
    if spec.kind == "siglip":
        if _hub_offline():  # SigLipTokenizer fetches its sentencepiece vocabulary over the network
            raise _unavailable(name, spec, None)
        return open_clip.tokenizer.SigLipTokenizer(spec.source, context_length=context_length)
    from open_clip.tokenizer import HFTokenizer

    def hf(**extra):
        return HFTokenizer(spec.source, context_length=context_length, cache_dir=cache_dir,
                           tokenizer_mode=spec.mode, **spec.kwargs, **extra)

    if Path(spec.source).expanduser().is_dir():
        return hf()
    try:
        with _hub_offline_mode():
            return hf(local_files_only=True)  # the local cache: no network
    except OSError as cached_error:
        if _hub_offline():
            raise _unavailable(name, spec, cached_error) from cached_error
    try:
        return hf()
    except OSError as e:
        raise _unavailable(name, spec, e) from e


def _unavailable(name: Optional[str], spec: TokenizerSpec, cause: Optional[Exception]) -> TokenizerUnavailableError:
    label = name or "this model"
    src = spec.source
    if spec.kind == "hf":
        download = (f"where there is network, save it to a folder: python -c \"from transformers import "
                    f"AutoTokenizer; AutoTokenizer.from_pretrained('{src}').save_pretrained('{Path(src).name}_tokenizer')\" "
                    f"(or copy a Hugging Face cache that holds it: HF_HOME), then pass the folder: "
                    f"HookedCLIP.from_pretrained(..., tokenizer='/path/to/{Path(src).name}_tokenizer') or "
                    f"HookedCLIP.from_open_clip(oc, {name!r}, tokenizer='/path/to/{Path(src).name}_tokenizer')")
    else:
        download = ("where there is network, build it once (open_clip.get_tokenizer) and save it "
                    "(tokenizer.save_pretrained(folder)), then pass the folder or a callable as tokenizer=")
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0]})" if cause is not None else ""
    return TokenizerUnavailableError(
        f"{label}: its tokenizer is {spec.describe()}; it lives on the Hugging Face hub, is not in the local "
        f"cache, and the hub cannot be reached (offline){why}. Nothing was downloaded. To use it offline, "
        f"{download}. Any callable returning [n, context_length] token ids works as tokenizer=.",
        source=src or "",
    )


@contextlib.contextmanager
def _hub_offline_mode():
    """Hugging Face hub offline mode for the duration of the block only: with local_files_only alone,
    huggingface_hub still contacts the hub (e.g. to build its user agent)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # transformers without huggingface_hub: nothing to switch
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hub_offline() -> bool:
    """True when Hugging Face offline mode is set or the hub (or the proxy to it) does not accept a
    connection within a few seconds. Changes no global state."""
    if any(os.environ.get(v, "").strip().lower() in _OFFLINE_VALUES for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(endpoint.hostname or "") else endpoint
    port = target.port or (443 if target.scheme == "https" else 80)
    return not _reachable(target.hostname or "", port, HUB_PROBE_TIMEOUT_S)


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds (name lookup included)."""
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


# ------------------------------------------------------------------------------------ checking
def check_tokenizer(tokenizer: Callable, text_cfg, name: Optional[str] = None, what: str = "the tokenizer") -> None:
    """Refuse a tokenizer that does not fit the text tower (ValueError saying why and how to pass the
    right one): ids of another length, outside the vocabulary, without the end token the pooling
    reads (the pooled token would be a fixed position: every prompt would get the same embedding)."""
    label = name or "this model"
    how = "pass the open_clip model name (name=) or the model's own tokenizer (tokenizer=)"
    ids = tokenizer(list(PROBE_PROMPTS))
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.dtype.is_floating_point:
        raise ValueError(f"{label}: {what} must return a [n, context_length] integer tensor, got "
                         f"{type(ids).__name__} {getattr(ids, 'shape', '')}")
    ctx, vocab, pool = text_cfg.context_length, text_cfg.vocab_size, text_cfg.pool_type
    if ids.shape != (len(PROBE_PROMPTS), ctx):
        raise ValueError(f"{label}: {what} gives {ids.shape[1]} tokens per text, the text tower takes {ctx}; {how}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"{label}: {what} gives token id {int(ids.max())} (or {int(ids.min())}), outside the text "
                         f"tower's vocabulary of {vocab} ids: it is not this model's tokenizer; {how}")
    if torch.equal(ids[0], ids[1]):
        raise ValueError(f"{label}: {what} gives the same ids for two different prompts; {how}")
    if pool == "eos" and not bool((ids == text_cfg.eos_id).any(dim=1).all()):
        raise ValueError(f"{label}: {what} never gives the end token {text_cfg.eos_id} that the text tower pools "
                         f"(pool_type='eos'), so every prompt would get the same text embedding; {how}")
    if pool == "argmax":
        ends = ids.max(dim=1).values
        if not bool((ends == ends[0]).all()):
            raise ValueError(f"{label}: the text tower pools the largest id (pool_type='argmax', CLIP's end of "
                             f"text) but {what} ends the prompts with different largest ids {ends.tolist()}; {how}")
