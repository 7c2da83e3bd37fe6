"""Save and load a fitted Lake: JSON (config, neurons, model identity) + safetensors (banks, text)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from lake_interp.data.io import read_json_object
from lake_interp.lake.config import LakeConfig
from lake_interp.lake.neurons import NeuronSet
from lake_interp.model.precision import PRECISION_NAMES, PRECISIONS

FORMAT = "lake_interp.lake/1"
# 2: ln*.hook_normalized is LayerNorm's input normalised BEFORE weight and bias (TransformerLens);
# detectors saved without this field read it after weight and bias (what is now ln*.hook_out).
HOOK_SEMANTICS = 2


def weights_sha256(model, round_to: Optional[torch.dtype]) -> str:
    """sha256 of every weight (any change is another model) as float32, each first rounded to
    `round_to`, so that one checkpoint gives the same hash in fp32 and, rounded to fp16, in an fp16
    copy of it. None: the weights as stored (the hash of records written before the dtype was)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach() if round_to is None else tensor.detach().to(round_to)
        h.update(name.encode())
        h.update(t.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_identity(model) -> dict:
    """What must match for a saved detector to be valid: architecture, dtype and the weights hash."""
    return {"name": model.cfg.name, "pretrained": model.pretrained, "config": model.cfg.to_dict(),
            "dtype": PRECISION_NAMES[model.dtype], "weights_sha256": weights_sha256(model, model.dtype)}


def versions() -> dict:
    """Versions of the packages a result depends on (for the record)."""
    import open_clip

    import lake_interp

    return {"lake_interp": lake_interp.__version__, "torch": torch.__version__,
            "open_clip": getattr(open_clip, "__version__", "unknown")}


def read_meta(path) -> dict:
    """lake.json of a detector folder, checked with the folder's tensors file; errors name the file."""
    meta_path = Path(path) / "lake.json"
    for p in (meta_path, Path(path) / "tensors.safetensors"):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: expected a folder written by Lake.save (or `lake-interp fit`)")
    try:
        meta = read_json_object(meta_path)
    except ValueError as e:
        raise ValueError(f"{e} (the detector folder is damaged; refit)") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("class_name", "config", "model", "neurons") if k not in meta]
    missing += [f"model.{k}" for k in ("name", "pretrained", "config", "weights_sha256") if k not in meta.get("model", {})]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}: the detector folder is damaged; refit")
    return meta


def check_new_detector_folder(path) -> None:
    """Refuse to write a detector over a file or over another detector (nothing is lost)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: choose another detector folder (--out)")
    from lake_interp.outputs import owned_files

    # lake.json is written last: a tensors file this package wrote without it is an interrupted fit
    if (path / "lake.json").exists() or ((path / "tensors.safetensors").exists()
                                         and "tensors.safetensors" not in owned_files(path)):
        raise ValueError(f"{path} already holds a detector: choose another folder (--out) or delete it first")


def save_lake(lake, path) -> None:
    """Write tensors.safetensors, then lake.json, through the output policy (lock, manifest, atomic
    writes): a detector folder written by this package is replaced, a foreign one refused."""
    from lake_interp.outputs import output_folder

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: choose another detector folder")
    with output_folder(path, "Lake.save") as output:
        output.claim(["tensors.safetensors", "lake.json"])
        _save_lake(lake, output)


def _save_lake(lake, output) -> None:
    tensors = {f"bank/{h}": b.cpu().contiguous() for h, b in lake.banks.items()}
    for h, (mean, std) in lake.stats.items():
        tensors[f"mean/{h}"], tensors[f"std/{h}"] = mean.cpu().contiguous(), std.cpu().contiguous()
    if lake.text_features is not None:
        tensors["text_features"] = lake.text_features.cpu().contiguous()
    with output.atomic("tensors.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "format": FORMAT,
        "class_name": lake.class_name,
        "config": lake.config.to_dict(),
        "model": model_identity(lake.model),
        "neurons": lake.neurons.to_dict() if lake.neurons is not None else None,
        "support": lake.support_sources,  # image files the bank was built from (null: in memory / unknown)
        "versions": versions(),
        "hook_semantics": HOOK_SEMANTICS,
    }
    output.write_text("lake.json", json.dumps(meta, indent=1))


def check_hook_semantics(meta: dict, where) -> None:
    """Refuse a detector that read `ln*.hook_normalized` when that name meant the LayerNorm output
    after weight and bias: the name now means the tensor before them (`ln*.hook_out` is the old one)."""
    if meta.get("hook_semantics", 1) >= HOOK_SEMANTICS:
        return
    sites = [s for s in (meta.get("config") or {}).get("sites", ()) if s.endswith("hook_normalized")]
    if sites:
        new = [s.replace("hook_normalized", "hook_out") for s in sites]
        raise ValueError(f"{where}: fitted on {sites}, which then meant the LayerNorm output after weight and bias; "
                         f"that hook is now {new} (hook_normalized is now before them, as in TransformerLens): "
                         f"refit, with sites {new} for the same neurons")


def load_lake(path, model):
    from lake_interp.lake.detector import Lake

    path = Path(path)
    meta, tensor_path = read_meta(path), path / "tensors.safetensors"
    saved, current = meta["model"], model_identity(model)
    if "dtype" in saved:  # the current weights rounded as the fitted model's were
        fitted_dtype = PRECISIONS[saved["dtype"]]
        current_hash = weights_sha256(model, fitted_dtype)
    else:  # written before the dtype was recorded: hashed as stored
        fitted_dtype, current_hash = model.dtype, weights_sha256(model, None)
    if saved["config"] != current["config"] or saved["weights_sha256"] != current_hash:
        what = "architecture" if saved["config"] != current["config"] else "weights"
        if what == "weights" and fitted_dtype != model.dtype and model.dtype != torch.float32:
            # rounded to a lower precision the check cannot see the fitted weights: loading in theirs can
            what += (f" (it was fitted in {saved['dtype']} and the model runs in {current['dtype']}: load the model "
                     f"in {saved['dtype']}, e.g. --precision {saved['dtype']})")
        raise ValueError(
            f"{path} was fitted with model {saved['name']!r} (pretrained={saved['pretrained']!r}); the model "
            f"given is {current['name']!r} (pretrained={current['pretrained']!r}) with different {what}: refit instead"
        )
    if fitted_dtype != model.dtype:
        warnings.warn(f"{path} was fitted in {saved['dtype']}; scoring in {PRECISION_NAMES[model.dtype]} compares "
                      f"{PRECISION_NAMES[model.dtype]} activations with a bank of {saved['dtype']} ones", stacklevel=3)
    check_hook_semantics(meta, path / "lake.json")
    lake = Lake(model, LakeConfig.from_dict(meta["config"]), meta["class_name"])
    try:
        tensors = load_file(str(tensor_path), device=str(model.device))
    except Exception as e:  # safetensors raises its own SafetensorError for a damaged file
        raise ValueError(f"{tensor_path} cannot be read ({type(e).__name__}: {e}): the detector folder is damaged; refit") from e
    lake.neurons = NeuronSet.from_dict(meta["neurons"]) if meta["neurons"] else None
    lake.banks = {k[len("bank/"):]: v for k, v in tensors.items() if k.startswith("bank/")}
    lake.stats = {h: (tensors[f"mean/{h}"], tensors[f"std/{h}"]) for h in lake.banks}
    lake.text_features = tensors.get("text_features")
    lake.support_sources = meta.get("support")
    return lake
