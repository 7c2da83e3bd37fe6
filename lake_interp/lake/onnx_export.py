"""A fitted Lake as one ONNX graph: preprocessed images in, image scores and maps out.

    export_onnx(lake, "model.onnx")       # or: lake-interp export --detector D --format onnx --out model.onnx

The graph is `LakeGraph(lake)` traced by torch's TorchScript ONNX exporter
(`torch.onnx.export(..., dynamo=False)`, opset 17, dynamic batch axis). `LakeGraph.forward` runs
the vision tower up to the last block the detector reads (`VisionTower.residual(stop_at_layer=)`),
takes the hooks of `Lake.required_hooks` from that one pass (as `Lake.score` does with
`run_with_cache`), drops the prefix tokens (`model.patch_tokens`) and hands them to
`Lake.score_activations`, the detector's own scoring: nearest-neighbour distance to the bank on the
selected neurons, the semantic branch with the text features, upsampling, Gaussian smoothing,
fusion and the image score. The banks, neuron indices and text features become constants of the
graph; nothing is re-implemented here. The text tower is not in the graph.

Input ``images``: float32 [batch, 3, S, S], S = model.image_size, preprocessed as
`model.preprocess` does (`SquashPreprocess`: resize to S x S without cropping, bicubic; scale to
[0, 1]; subtract the model's mean and divide by its std per channel). Outputs (the fields of
`LakeResult`): ``image_scores`` [batch], ``maps`` [batch, S, S] (fused), ``visual_maps`` and
``semantic_maps`` [batch, S, S] (a branch switched off by text_weight 0 or 1 is all zeros).

The TorchScript exporter is used because it needs only `onnx` (the dynamo exporter also needs
`onnxscript` and makes every shape-dependent Python branch of the tower a guard); it traces, so a
detector whose scoring takes data-dependent Python branches could not be reproduced: see
`export_problems` for what is refused, by name.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from lake_interp.model.hook_sites import parse_hook_name
from lake_interp.model.precision import PRECISION_NAMES

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("image_scores", "maps", "visual_maps", "semantic_maps")  # LakeResult's fields, in order
SIDECAR_FORMAT = "lake_interp.onnx/1"
SUPPORTED_FAMILIES = ("open_clip",)  # towers with residual(stop_at_layer=), checked by tests/test_onnx_export.py


def sidecar_path(path) -> Path:
    """The JSON description written next to an exported graph: model.onnx -> model.onnx.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def require_onnx() -> None:
    """ImportError naming the extra when onnx or onnxruntime is missing (checked before any model loads)."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RuntimeError(f"ONNX export needs {' and '.join(missing)}: pip install 'lake_interp[deploy]' "
                           f"(or pip install {' '.join(missing)})")


def export_problems(lake) -> list[str]:
    """Why `lake` cannot be exported as a graph that reproduces its `score` (empty: it can), each
    naming what is refused."""
    model, problems = lake.model, []
    if lake.uses_visual and not lake.banks:
        problems.append("the detector is not fitted (no bank): fit it first")
    if lake.uses_semantic and lake.text_features is None:
        problems.append("the detector has no text features (text_weight > 0): fit it first")
    if model.dtype != torch.float32:
        name = PRECISION_NAMES.get(model.dtype, str(model.dtype))
        problems.append(f"model dtype {name}: only fp32 detectors are exported (onnxruntime's CPU kernels are fp32; "
                        f"a {name} detector's scores would not be reproduced); refit in fp32 (CLI: --precision fp32)")
    family = getattr(model.cfg.vision, "family", "open_clip")
    if family not in SUPPORTED_FAMILIES:
        problems.append(f"vision tower family {family!r}: only {SUPPORTED_FAMILIES} towers are exported (the others' "
                        "graphs are not checked against Lake.score)")
    not_blocks = [h for h in lake.required_hooks
                  if parse_hook_name(h).tower != "visual" or parse_hook_name(h).block is None]
    if not_blocks:
        problems.append(f"hooks {not_blocks} are not vision-tower block hooks")
    return problems


class LakeGraph(nn.Module):
    """images [B, 3, S, S] (preprocessed, see the module docstring) -> the LakeResult fields of
    `lake.score(images)`, as a module to trace: the tower to the last block read, then
    `Lake.score_activations`."""

    def __init__(self, lake):
        super().__init__()
        self.lake = lake
        self.model = lake.model
        self.hooks = lake.required_hooks
        self.stop_at_layer = max(parse_hook_name(h).block for h in self.hooks) + 1  # blocks[:stop] are run

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """hook -> [B, P patches, d] of the hooks scoring reads, from one pass through blocks[:stop_at_layer]."""
        acts: dict[str, torch.Tensor] = {}

        def keep(tensor, hook):
            acts[hook.name] = tensor

        with self.model.hooks(fwd_hooks=[(h, keep) for h in self.hooks]):
            self.model.visual.residual(images, stop_at_layer=self.stop_at_layer)
        return {h: self.model.patch_tokens(acts[h]) for h in self.hooks}

    def forward(self, images: torch.Tensor):
        result = self.lake.score_activations(self.activations(images))
        return tuple(getattr(result, name) for name in OUTPUT_NAMES)


def describe(lake, threshold: Optional[dict] = None) -> dict:
    """What the exported graph computes (written as the sidecar JSON)."""
    model = lake.model
    graph = LakeGraph(lake)
    pre = model.preprocess
    info = {
        "format": SIDECAR_FORMAT,
        "computes": "Lake.score of a fitted LAKE detector (lake_interp.lake.onnx_export)",
        "model": {"name": model.cfg.name, "pretrained": model.pretrained, "random_weights": bool(model.random_weights),
                  "dtype": PRECISION_NAMES[model.dtype], "blocks_in_graph": graph.stop_at_layer,
                  "blocks_of_tower": model.cfg.vision.n_layers},
        "class_name": lake.class_name,
        "config": lake.config.to_dict(),
        "hooks": graph.hooks,
        "neurons": ({h: lake.neurons.indices[h].tolist() for h in lake.hooks}
                    if lake.uses_visual and lake.neurons is not None else None),
        "threshold": threshold,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, model.image_size, model.image_size], "dtype": "float32"},
        "preprocessing": {"what": "model.preprocess (lake_interp.model.preprocess.SquashPreprocess): RGB, resize to "
                                  "size x size without cropping (bicubic, PIL), scale to [0, 1], (x - mean) / std per channel",
                          "size": pre.size, "mean": list(pre.mean), "std": list(pre.std)},
        "outputs": {"image_scores": ["batch"], "maps": ["batch", model.image_size, model.image_size],
                    "visual_maps": ["batch", model.image_size, model.image_size],
                    "semantic_maps": ["batch", model.image_size, model.image_size]},
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False) (TorchScript)",
        "torch": torch.__version__,
    }
    return info


def threshold_of(lake) -> Optional[dict]:
    """The detector's stored decision threshold(s), where it has them (issue 15 part 2), else None."""
    value = getattr(lake, "threshold", None)
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value if isinstance(value, dict) else {"value": value}


def export_graph(lake, f, batch: int = 2) -> None:
    """Trace `LakeGraph(lake)` on `batch` example images and write the ONNX graph to `f` (a path or a
    binary file object). ValueError listing what cannot be exported."""
    problems = export_problems(lake)
    if problems:
        raise ValueError("this detector cannot be exported to ONNX: " + "; ".join(problems))
    model = lake.model
    size = model.image_size
    example = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(model.device)
    axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns wherever Python reads a shape: the image size check, the patch grid, the blur's
        # padding, the q/k/v split, all fixed by the model (only the batch axis varies, and nothing
        # Python decides depends on it: tests/test_onnx_export.py scores other batch sizes). The legacy
        # exporter's deprecation notices and constant folding's note on strided slices are not ours to act on.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
        torch.onnx.export(LakeGraph(lake).eval(), (example,), f, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                          do_constant_folding=True)


def export_onnx(lake, path, command: str = "export_onnx") -> Path:
    """Write `lake` as an ONNX graph to `path` and its description to `path`.json, through the output
    policy (lake_interp.outputs: the parent folder's lock and manifest, atomic writes; a file there
    that lake-interp did not write is refused)."""
    from lake_interp.outputs import output_folder

    require_onnx()
    path = Path(path)
    check_target(path)
    problems = export_problems(lake)
    if problems:
        raise ValueError("this detector cannot be exported to ONNX: " + "; ".join(problems))
    info = describe(lake, threshold_of(lake))
    with output_folder(path.parent, command) as out:
        out.claim([path.name, sidecar_path(path).name])
        with out.atomic(path.name) as tmp:
            export_graph(lake, str(tmp))
        out.write_text(sidecar_path(path).name, json.dumps(info, indent=1))
    return path


def check_target(path) -> None:
    """Refuse, before any model loads, an --out that is a folder or a file lake-interp did not write
    (the graph or its sidecar)."""
    from lake_interp.outputs import OutputError, owned_files

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give the file to write, e.g. {path / 'model.onnx'}")
    if path.suffix != ".onnx":
        raise OutputError(f"--out {path}: give a file name ending in .onnx")
    owned = owned_files(path.parent) if path.parent.is_dir() else set()
    foreign = [p for p in (path, sidecar_path(path)) if (p.exists() or p.is_symlink()) and p.name not in owned]
    if foreign:
        raise OutputError(f"{', '.join(map(str, foreign))} exist(s) and lake-interp did not write it: refusing to "
                          "overwrite; move it away or choose another --out (nothing was changed)")
