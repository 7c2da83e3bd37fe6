"""Save and load a fitted Lake: JSON (config, neurons, model identity) + safetensors (banks, text)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from lake_interp.lake.config import LakeConfig
from lake_interp.lake.neurons import NeuronSet

FORMAT = "lake_interp.lake/1"


def model_identity(model) -> dict:
    """What must match for a saved detector to be valid: architecture and a hash of the weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):  # every weight: any change is another model
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return {"name": model.cfg.name, "pretrained": model.pretrained, "config": model.cfg.to_dict(), "weights_sha256": h.hexdigest()}


def save_lake(lake, path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"bank/{h}": b.cpu().contiguous() for h, b in lake.banks.items()}
    for h, (mean, std) in lake.stats.items():
        tensors[f"mean/{h}"], tensors[f"std/{h}"] = mean.cpu().contiguous(), std.cpu().contiguous()
    if lake.text_features is not None:
        tensors["text_features"] = lake.text_features.cpu().contiguous()
    save_file(tensors, str(path / "tensors.safetensors"))
    meta = {
        "format": FORMAT,
        "class_name": lake.class_name,
        "config": lake.config.to_dict(),
        "model": model_identity(lake.model),
        "neurons": lake.neurons.to_dict() if lake.neurons is not None else None,
    }
    (path / "lake.json").write_text(json.dumps(meta, indent=1))


def load_lake(path, model):
    from lake_interp.lake.detector import Lake

    path = Path(path)
    meta_path, tensor_path = path / "lake.json", path / "tensors.safetensors"
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: expected a folder written by Lake.save")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    saved, current = meta["model"], model_identity(model)
    if saved["config"] != current["config"] or saved["weights_sha256"] != current["weights_sha256"]:
        raise ValueError(
            f"{path} was fitted with model {saved['name']!r} (pretrained={saved['pretrained']!r}); the model "
            f"given is {current['name']!r} (pretrained={current['pretrained']!r}) with different "
            f"{'architecture' if saved['config'] != current['config'] else 'weights'}: refit instead"
        )
    lake = Lake(model, LakeConfig.from_dict(meta["config"]), meta["class_name"])
    tensors = load_file(str(tensor_path), device=str(model.device))
    lake.neurons = NeuronSet.from_dict(meta["neurons"]) if meta["neurons"] else None
    lake.banks = {k[len("bank/"):]: v for k, v in tensors.items() if k.startswith("bank/")}
    lake.stats = {h: (tensors[f"mean/{h}"], tensors[f"std/{h}"]) for h in lake.banks}
    lake.text_features = tensors.get("text_features")
    return lake
