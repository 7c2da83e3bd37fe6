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
    from lake_interp.outputs import sha256_file

    with output.atomic("tensors.safetensors") as tmp:
        save_file(tensors, str(tmp))
        tensor_record = {"file": "tensors.safetensors", "sha256": sha256_file(tmp),
                         "shapes": {k: list(v.shape) for k, v in sorted(tensors.items())},
                         "neurons_sha256": _neurons_sha256(lake.neurons.to_dict() if lake.neurons is not None else None)}
    meta = {
        "format": FORMAT,
        "class_name": lake.class_name,
        "config": lake.config.to_dict(),
        "model": model_identity(lake.model),
        "neurons": lake.neurons.to_dict() if lake.neurons is not None else None,
        "support": lake.support_sources,  # image files the bank was built from (null: in memory / unknown)
        "versions": versions(),
        "hook_semantics": HOOK_SEMANTICS,
        "tensors": tensor_record,  # ties lake.json to its tensor file: checked on load
        # decision thresholds (lake_interp.lake.threshold, versioned); null: none chosen (predict needs one given)
        "threshold": lake.threshold.to_dict() if lake.threshold is not None else None,
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


def _neurons_sha256(neurons: Optional[dict]) -> str:
    """sha256 of the selected channel indices, hook by hook in order (the bank columns' order)."""
    indices = None if neurons is None else [[h, v.get("indices") if isinstance(v, dict) else v]
                                            for h, v in (neurons.get("neurons") or {}).items()]
    return hashlib.sha256(json.dumps(indices).encode()).hexdigest()


def _check_raw_neurons(neurons, meta_path) -> None:
    """Channel indices in lake.json must be JSON integers (not floats, strings or booleans)."""
    if neurons is None:
        return
    if not isinstance(neurons, dict) or not isinstance(neurons.get("neurons"), dict):
        raise ValueError(f"{meta_path}: field 'neurons' must be an object with 'neurons'; refit")
    for hook, v in neurons["neurons"].items():
        idx = v.get("indices") if isinstance(v, dict) else None
        if not isinstance(idx, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in idx):
            raise ValueError(f"{meta_path}: field 'neurons.neurons.{hook}.indices' must be a list of integer channel "
                             f"indices, got {idx!r:.80}; refit")


def check_detector_tensors(model, neurons, tensors: dict, tensor_path, meta_path, uses_visual: bool) -> None:
    """Neuron indices unique, integral and inside each hook's width, and every bank, mean and std as
    wide as its hook's selected channels; errors name the file and the field."""
    from lake_interp.model.hook_sites import channel_width

    banks = {k[len("bank/"):]: v for k, v in tensors.items() if k.startswith("bank/")}
    if neurons is None:
        if banks:
            raise ValueError(f"{meta_path}: field 'neurons' is null but {tensor_path} holds banks {sorted(banks)}; refit")
        return
    for hook, idx in neurons.indices.items():
        where = f"{meta_path}: field 'neurons.neurons.{hook}.indices'"
        try:
            width = channel_width(model, hook)
        except ValueError as e:
            raise ValueError(f"{where}: {e}; refit") from e
        if width is None:
            raise ValueError(f"{where}: unknown hook {hook!r} for model {model.cfg.name!r}; refit")
        values = idx.tolist()
        if idx.dim() != 1 or not values:
            raise ValueError(f"{where}: expected a non-empty list of channel indices, got {values!r}; refit")
        if len(set(values)) != len(values):
            dup = sorted({v for v in values if values.count(v) > 1})
            raise ValueError(f"{where}: channels {dup} are listed twice; the detector folder is damaged; refit")
        bad = [v for v in values if not 0 <= v < width]
        if bad:
            raise ValueError(f"{where}: channels {bad[:5]} are outside the hook's width {width} (0..{width - 1}); refit")
        if len(neurons.scores.get(hook, ())) != len(values):
            raise ValueError(f"{meta_path}: field 'neurons.neurons.{hook}.scores' has {len(neurons.scores.get(hook, ()))} "
                             f"values for {len(values)} indices; refit")
        if not uses_visual:
            continue
        for prefix in ("bank", "mean", "std"):
            t = tensors.get(f"{prefix}/{hook}")
            if t is None:
                raise ValueError(f"{tensor_path}: tensor '{prefix}/{hook}' is missing (field 'neurons' selects "
                                 f"{len(values)} channels of {hook}); refit")
            if t.shape[-1] != len(values):
                raise ValueError(f"{tensor_path}: tensor '{prefix}/{hook}' is {t.shape[-1]} wide but {meta_path} field "
                                 f"'neurons.neurons.{hook}.indices' selects {len(values)} channels; refit")
    extra = sorted(set(banks) - set(neurons.indices))
    if extra:
        raise ValueError(f"{tensor_path}: banks {extra} have no neurons in {meta_path} field 'neurons'; refit")


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
    meta_path = path / "lake.json"
    try:
        config = LakeConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: field 'config': {e}") from e
    lake = Lake(model, config, meta["class_name"])
    record = meta.get("tensors")
    if record is not None:
        from lake_interp.outputs import sha256_file

        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str) or not isinstance(record.get("shapes"), dict):
            raise ValueError(f"{meta_path}: field 'tensors' must hold 'sha256' and 'shapes'; the detector folder is damaged; refit")
    else:
        warnings.warn(f"{meta_path} was written before detectors recorded their tensor file's sha256: "
                      f"{tensor_path} cannot be verified (refit to get the check)", stacklevel=3)
    try:
        tensors = load_file(str(tensor_path), device=str(model.device))
    except Exception as e:  # safetensors raises its own SafetensorError for a damaged file
        raise ValueError(f"{tensor_path} cannot be read ({type(e).__name__}: {e}): the detector folder is damaged; refit") from e
    if record is not None:  # readable (else the error above): is it this detector's?
        if sha256_file(tensor_path) != record["sha256"]:
            raise ValueError(f"{tensor_path} is not the tensor file of {meta_path} (its sha256 differs from the field "
                             "'tensors.sha256'): copied from another detector or changed; refit")
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != record["shapes"]:
            diff = sorted(k for k in shapes.keys() | record["shapes"].keys() if shapes.get(k) != record["shapes"].get(k))
            raise ValueError(f"{tensor_path}: tensors {diff} do not have the shapes of {meta_path} field 'tensors.shapes'; "
                             "the detector folder is damaged; refit")
    _check_raw_neurons(meta["neurons"], meta_path)
    if record is not None and "neurons_sha256" in record and record["neurons_sha256"] != _neurons_sha256(meta["neurons"]):
        raise ValueError(f"{meta_path}: field 'neurons' (its channel indices, in order) is not what the bank columns of "
                         f"{tensor_path} were built from (field 'tensors.neurons_sha256' differs): edited after saving; refit")
    try:
        lake.neurons = NeuronSet.from_dict(meta["neurons"]) if meta["neurons"] else None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{meta_path}: field 'neurons' is malformed ({type(e).__name__}: {e}); refit") from e
    check_detector_tensors(model, lake.neurons, tensors, tensor_path, meta_path, lake.uses_visual)
    lake.banks = {k[len("bank/"):]: v for k, v in tensors.items() if k.startswith("bank/")}
    lake.stats = {h: (tensors[f"mean/{h}"], tensors[f"std/{h}"]) for h in lake.banks}
    lake.text_features = tensors.get("text_features")
    lake.support_sources = meta.get("support")
    lake.threshold = read_threshold(meta, meta_path)
    return lake


def read_threshold(meta: dict, meta_path):
    """The detector's stored Threshold, or None (saved before detectors stored one, or fitted
    without one: `predict` then asks for one); a damaged record is an error naming the field."""
    from lake_interp.lake.threshold import Threshold

    raw = meta.get("threshold")
    return None if raw is None else Threshold.from_dict(raw, f"{meta_path}: field 'threshold'")
