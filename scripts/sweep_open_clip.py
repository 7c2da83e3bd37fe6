"""Sweep every open_clip model name through HookedCLIP, offline, at a test-friendly size.

For each name in `open_clip.list_models()`:
- refused from its config (timm towers other than VisionTransformer / Eva, Hugging Face text towers,
  ResNets, CoCa, ...): the NotImplementedError must name the model; where the architecture can be
  built small offline (ResNets, CoCa), the built model is refused by name too;
- otherwise open_clip builds it with random weights (`pretrained=None`) and 2-block towers of width 64
  (image size, patch size, vocabulary, context length, pooling as in the config; embed_dim 64 for
  timm towers), and HookedCLIP must equal it: image and text embeddings to 1e-5 relative (max |diff| /
  max |ref|), the tokenizer must give open_clip's ids, and two different prompts must get different
  text embeddings. Without `name=` the tokenizer must be the one open_clip's config names, or be refused.
- timm towers (SigLIP, SigLIP2: timm VisionTransformer; EVA, PE-Core: timm Eva) are built by timm
  with the model's own timm name and options, made small through timm's kwargs (SMALL_TIMM: depth
  2, width 64, 2 heads). Their Hugging Face hub tokenizers (SigLIP's) cannot be had offline and have
  no stand-in here: the offline refusal is checked, and the text tower on the same token ids in both.

The references are open_clip's own: its forward, `open_clip.get_tokenizer(name)` for the CLIP
tokenizer, and for Hugging Face tokenizers (which cannot be downloaded here) open_clip's
`HFTokenizer` on a local stand-in folder with the hub tokenizer's special-token ids, built from
open_clip's `text_cfg` by this script. Nothing is downloaded: HF_HUB_OFFLINE=1 is set for this process.

    python scripts/sweep_open_clip.py                 # every name; prints a table and a summary
    python scripts/sweep_open_clip.py ViT-B-32 RN50   # some names
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this process only: nothing reaches the hub

import open_clip  # noqa: E402
import torch  # noqa: E402

import lake_interp.model.loading  # noqa: E402,F401  (registers lake-tiny)
from lake_interp import HookedCLIP  # noqa: E402
from lake_interp.model.convert import check_model_config, timm_family  # noqa: E402
from lake_interp.model.tokenizer import TokenizerUnavailableError  # noqa: E402

REL_TOL = 1e-5
PROMPTS = ["a photo of a scratched metal bottle", "a flawless wooden surface"]
FAST_FAIL_S = 5.0
SMALL_VISION = {"layers": 2, "width": 64, "head_width": 32}
SMALL_TEXT = {"layers": 2, "width": 64, "heads": 2}
SMALL_TIMM = {"depth": 2, "embed_dim": 64, "num_heads": 2}  # timm.create_model kwargs of a small timm trunk

# Special tokens (ids as on the hub) and templates of the Hugging Face tokenizers open_clip's
# configs name, for offline stand-ins: the words get ids from 1000 up.
STANDIN_WORDS = "a an the photo of scratched metal bottle flawless wooden surface damaged".split()
STANDINS = {
    "bert-base-uncased": dict(specials={"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103},
                              template=["[CLS]", "$A", "[SEP]"], unk="[UNK]",
                              tokens=dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                          mask_token="[MASK]")),
    "facebook/xlm-v-base": dict(specials={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, template=["<s>", "$A", "</s>"],
                                unk="<unk>", tokens=dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                                         unk_token="<unk>", cls_token="<s>", sep_token="</s>")),
    "google/mt5-base": dict(specials={"<pad>": 0, "</s>": 1, "<unk>": 2}, template=["$A", "</s>"], unk="<unk>",
                            tokens=dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")),
}


def standin_tokenizer(hf_name: str, root: Path) -> Path:
    """A local Hugging Face tokenizer folder with `hf_name`'s special-token ids and template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder = root / hf_name.replace("/", "__")
    if folder.is_dir():
        return folder
    fam = STANDINS[hf_name]
    vocab = dict(fam["specials"], **{w: 1000 + i for i, w in enumerate(STANDIN_WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token=fam["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join(fam["template"]), special_tokens=[(t, vocab[t]) for t in fam["template"] if t != "$A"])
    PreTrainedTokenizerFast(tokenizer_object=tok, **fam["tokens"]).save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------ building
def small_config(name: str) -> dict:
    """open_clip's config of `name` with small towers (what create_model(**overrides) gets)."""
    cfg = open_clip.get_model_config(name)
    vision, text = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
    if isinstance(vision.get("layers"), (list, tuple)):  # ResNet
        vision.update(layers=[1] * len(vision["layers"]), width=16)
    elif not vision.get("timm_model_name"):
        vision.update(SMALL_VISION)
        if vision.get("attentional_pool"):
            vision["attn_pooler_heads"] = 2
    if not text.get("hf_model_name"):
        text.update(SMALL_TEXT)
    out = {"vision_cfg": vision, "text_cfg": text}
    if vision.get("timm_model_name"):
        out["embed_dim"] = SMALL_TIMM["embed_dim"]
    if "multimodal_cfg" in cfg:
        out["multimodal_cfg"] = dict(cfg["multimodal_cfg"], layers=1, width=64, heads=2, attn_pooler_heads=2)
    return out


def buildable_small(name: str) -> bool:
    """Whether the config can be built small and offline (no Hugging Face text tower; timm towers only
    of the families HookedCLIP mirrors, VisionTransformer and Eva, which timm builds small)."""
    cfg = open_clip.get_model_config(name)
    timm_name = cfg["vision_cfg"].get("timm_model_name")
    return (not timm_name or timm_family(timm_name) is not None) and not cfg["text_cfg"].get("hf_model_name")


@contextlib.contextmanager
def small_timm():
    """timm.create_model building every model with SMALL_TIMM (for open_clip's TimmModel), then restored."""
    import timm

    create = timm.create_model
    timm.create_model = lambda model_name, **kw: create(model_name, **{**kw, **SMALL_TIMM})
    try:
        yield
    finally:
        timm.create_model = create


def build_small(name: str, seed: int = 0, noise: float = 0.0, **kwargs) -> torch.nn.Module:
    """open_clip's model of `name`, small, random weights; `noise`: std of noise added to every
    parameter (LayerNorm weights and biases included), so that a mix-up of any two shows."""
    torch.manual_seed(seed)
    with warnings.catch_warnings(), small_timm():
        warnings.simplefilter("ignore")
        oc = open_clip.create_model(name, pretrained=None, **small_config(name), **kwargs).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in oc.parameters() if noise else ():
            p.add_(noise * torch.randn(p.shape, generator=g))
    return oc


# ------------------------------------------------------------------------------------ checking
def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def reference_tokens(name: str, hf_folder: Path | None, context_length: int) -> torch.Tensor:
    """open_clip's ids for PROMPTS: its tokenizer for `name` (CLIP BPE), or its HFTokenizer with the
    config's options on the stand-in folder."""
    text = open_clip.get_model_config(name)["text_cfg"]
    if hf_folder is None:
        return open_clip.get_tokenizer(name, context_length=context_length)(PROMPTS)
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(str(hf_folder), context_length=context_length, tokenizer_mode=text.get("tokenizer_mode"),
                       **(text.get("tokenizer_kwargs") or {}))(PROMPTS)


def check_name(name: str, workdir: Path) -> dict:
    """One row: name, status (equal / refused / failed / skipped), detail, tokenizer_without_name, seconds."""
    start = time.perf_counter()
    row = {"name": name, "status": "failed", "detail": "", "tokenizer_without_name": ""}
    try:
        _check(name, workdir, row)
    except Exception as e:  # anything unexpected is a failure of the sweep, with its reason
        row.update(status="failed", detail=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _refusal_ok(err: NotImplementedError, name: str) -> bool:
    return str(err).startswith(f"{name}:")


def _check(name: str, workdir: Path, row: dict) -> None:
    try:
        check_model_config(name)
    except NotImplementedError as e:
        if not _refusal_ok(e, name):
            row["detail"] = f"refusal does not name the model: {e}"
            return
        row.update(status="refused", detail=str(e).split(": ", 1)[1])
        if buildable_small(name):  # the built model is refused by name as well
            oc = build_small(name)
            try:
                HookedCLIP.from_open_clip(oc, name)
            except NotImplementedError as built:
                if not _refusal_ok(built, name):
                    row.update(status="failed", detail=f"built model: refusal does not name it: {built}")
                    return
                row["detail"] += f" | built: {str(built).split(': ', 1)[1]}"
                return
            row.update(status="failed", detail="refused from its config, but its built model converts")
        return
    if not buildable_small(name):
        row.update(status="skipped", detail="not refused, but has a timm/HF tower that does not build offline")
        return

    oc = build_small(name, noise=0.02)
    text_cfg = open_clip.get_model_config(name)["text_cfg"]
    hf_name = text_cfg.get("hf_tokenizer_name")
    folder = standin_tokenizer(hf_name, workdir) if hf_name in STANDINS else None
    ids_only = bool(hf_name) and folder is None  # a hub tokenizer without stand-in (SigLIP's): token ids directly

    # the tokenizer without name=: open_clip's, or a refusal (never a silent wrong one)
    t0 = time.perf_counter()
    try:
        bare = HookedCLIP.from_open_clip(oc)
    except TokenizerUnavailableError as e:
        if e.source != hf_name:
            row["detail"] = f"without name=: wants tokenizer {e.source!r}, open_clip's config names {hf_name!r}"
            return
        row["tokenizer_without_name"] = f"{hf_name} (offline: refused in {time.perf_counter() - t0:.2f} s)"
    except ValueError as e:
        if "refusing to guess" not in str(e):
            raise
        row["tokenizer_without_name"] = "refused: ambiguous (" + str(e).split("fits ")[-1].split(";")[0][:60] + ")"
    else:
        if hf_name:
            row["detail"] = f"without name=: got {type(bare.tokenizer).__name__}, open_clip's config names {hf_name!r}"
            return
        ref = open_clip.get_tokenizer(name, context_length=oc.context_length)(PROMPTS)
        if not torch.equal(bare.tokenizer(PROMPTS), ref):
            row["detail"] = "without name=: tokenizer ids differ from open_clip.get_tokenizer(name)"
            return
        row["tokenizer_without_name"] = type(bare.tokenizer).__name__
    if hf_name:  # with the name, offline: the clear error, fast
        t0 = time.perf_counter()
        try:
            HookedCLIP.from_open_clip(oc, name)
            row["detail"] = f"offline, with name=: a tokenizer was loaded for {hf_name!r}?"
            return
        except TokenizerUnavailableError as e:
            waited = time.perf_counter() - t0
            if waited > FAST_FAIL_S or name not in str(e) or hf_name not in str(e):
                row["detail"] = f"offline error too slow ({waited:.1f} s) or unclear: {e}"
                return

    if ids_only:
        vocab = oc.text.vocab_size if hasattr(oc, "text") else oc.vocab_size
        ids = torch.randint(1, min(vocab, 1000), (len(PROMPTS), oc.context_length), generator=torch.Generator().manual_seed(0))
        model = HookedCLIP.from_open_clip(oc, name, tokenizer=lambda texts: ids[: len(texts)])
        tokens = ids
    else:
        model = HookedCLIP.from_open_clip(oc, name, tokenizer=str(folder) if folder else None)
        tokens = reference_tokens(name, folder, oc.context_length)
    if not torch.equal(model.tokenizer(PROMPTS), tokens):
        row["detail"] = "tokenizer ids differ from open_clip's"
        return
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, model.image_size, model.image_size, generator=g)
    with torch.no_grad():
        img, img_ref = model.encode_image(images), oc.encode_image(images)
        txt, txt_ref = model.encode_text(model.tokenizer(PROMPTS)), oc.encode_text(tokens)
    d_img, d_txt = rel_diff(img, img_ref), rel_diff(txt, txt_ref)
    prompts_apart = rel_diff(txt_ref[0:1], txt_ref[1:2])
    row["detail"] = (f"image {d_img:.1e}, text {d_txt:.1e}{' (token ids, hub tokenizer)' if ids_only else ''}, "
                     f"prompts apart {prompts_apart:.2f}; vision {model.cfg.vision.family}")
    if d_img <= REL_TOL and d_txt <= REL_TOL and prompts_apart > 1e-3:
        row["status"] = "equal"
    elif prompts_apart <= 1e-3:
        row["detail"] += ": two prompts get the same text embedding"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="model names (default: every open_clip.list_models() name)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    names = args.names or open_clip.list_models()
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = check_name(name, Path(tmp))
            rows.append(row)
            print(f"{row['name']:<36} {row['status']:<8} {row['seconds']:>6.2f}s  {row['detail'][:150]}"
                  + (f"  [no name: {row['tokenizer_without_name']}]" if row["tokenizer_without_name"] else ""),
                  flush=True)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("equal", "refused", "failed", "skipped")}
    total = time.perf_counter() - start
    print(f"\n{len(rows)} models: {counts['equal']} equal, {counts['refused']} refused by name, "
          f"{counts['failed']} failed, {counts['skipped']} skipped; {total:.0f} s "
          f"(open_clip {open_clip.__version__}, torch {torch.__version__})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "counts": counts, "seconds": total}, indent=1))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
