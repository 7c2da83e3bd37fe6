"""Record anomalib 2.x `WinClipModel` outputs for `tests/test_winclip.py`.

Run with the reference venv (anomalib 2.x, never installed into the project's venv):

    refvenv/bin/python tests/reference/make_winclip_fixture.py

writes `tests/reference/winclip_fixture.safetensors` and `winclip_fixture.json`. Nothing is
downloaded: each model is a randomly initialised open_clip model (`torch.manual_seed(model_seed);
open_clip.create_model(name, pretrained=None)`), every parameter then perturbed with seeded noise
(as `tests/conftest.py: perturbed`, so LayerNorm weights and biases matter), and anomalib's
`open_clip.create_model_and_transforms` is replaced by one that returns that model. The input
tensors are regenerated from seeds (not stored); the JSON holds sha256 of the model state dict
and of the inputs, so the test can tell when random init drifted and this must be rerun.

Two runs of anomalib per model and shot count (0, 1, 2 reference images):
- "fixed": anomalib with one change, the layout of its window pass restored. anomalib 2.7's
  `_get_window_embeddings` permutes the windows to sequence-first before `clip.visual.transformer`,
  but open_clip >= 2.23 builds that transformer batch-first, so the blocks attend across windows
  instead of within one (every window embedding comes out the same; anomalib issue #2571). Here
  `transformer.batch_first` is set to False for the window pass only, so open_clip transposes back
  and each window attends to its own tokens, as the code was written for. Our WinCLIP must equal it.
- "stock": anomalib exactly as installed, recorded to show the difference (grids and scores only).

The helpers above `main` import neither anomalib nor lake_interp: the test imports them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURE = HERE / "winclip_fixture.safetensors"
META = HERE / "winclip_fixture.json"

CLASS_NAME = "bottle"
SHOTS = (0, 1, 2)
N_TEST = 2
N_REF = max(SHOTS)
PERTURB_STD = 0.02
CASES = {
    # anomalib's default backbone, 240 px, 15 x 15 patches
    "vit_b16_plus": {"model": "ViT-B-16-plus-240", "model_seed": 0, "perturb_seed": 1, "input_seed": 2},
    # the package's small config: 64 px, 8 x 8 patches, 4 layers of width 64
    "lake_tiny": {"model": "lake-tiny", "model_seed": 3, "perturb_seed": 4, "input_seed": 5},
}


def register_lake_tiny() -> None:
    import open_clip

    if "lake-tiny" not in open_clip.list_models():
        open_clip.add_model_config(REPO / "lake_interp" / "model" / "model_configs")


def build_open_clip(name: str, model_seed: int, perturb_seed: int, std: float = PERTURB_STD) -> torch.nn.Module:
    """The seeded random open_clip model, every parameter plus std * N(0, 1) noise, in eval mode."""
    import warnings

    import open_clip

    register_lake_tiny()
    torch.manual_seed(model_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = open_clip.create_model(name, pretrained=None)
    g = torch.Generator().manual_seed(perturb_seed)
    with torch.no_grad():
        for p in oc.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return oc.eval()


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 over the state dict: sorted names, dtype, shape and bytes of every tensor."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()


def make_inputs(image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(test [N_TEST, 3, S, S], reference [N_REF, 3, S, S]): normalised-image-like tensors, a smooth
    shared pattern plus small noise; test image 0 carries a strong square "defect"."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 3, image_size // 8, image_size // 8, generator=g)
    base = torch.nn.functional.interpolate(base, size=(image_size, image_size), mode="bilinear", align_corners=False)
    ref = base + 0.1 * torch.randn(N_REF, 3, image_size, image_size, generator=g)
    test = base + 0.1 * torch.randn(N_TEST, 3, image_size, image_size, generator=g)
    a, b = image_size // 4, image_size // 4 + image_size // 5
    test[0, :, a:b, a:b] += 2.0 * torch.randn(3, b - a, b - a, generator=g)
    return test, ref


def key(case: str, mode: str, k: int, name: str) -> str:
    return f"{case}/{mode}/k{k}/{name}"


# ------------------------------------------------------------------------------------------------ main
def run_anomalib(oc, test: torch.Tensor, ref: torch.Tensor, mode: str) -> dict:
    """anomalib's WinClipModel on `oc` ("fixed" or "stock" window pass) -> {(k, name): tensor}."""
    import open_clip
    from anomalib.models.image.winclip import torch_model as tm

    image_size = test.shape[-1]

    def fake_create(name, pretrained=None, **kwargs):  # no download: our seeded model
        return oc, None, open_clip.image_transform(image_size, is_train=False)

    original_create = tm.open_clip.create_model_and_transforms
    original_windows = tm.WinClipModel._get_window_embeddings

    def fixed_windows(self, feature_map, masks):
        transformer = self.clip.visual.transformer
        assert transformer.batch_first, "this open_clip is sequence-first already: use the stock mode"
        transformer.batch_first = False  # open_clip transposes the LND input back to NLD and after
        try:
            return original_windows(self, feature_map, masks)
        finally:
            transformer.batch_first = True

    captured = {}
    original_zs, original_fs = tm.WinClipModel._compute_zero_shot_scores, tm.WinClipModel._compute_few_shot_scores

    def zs(self, *a, **kw):
        captured["zero_shot_grid"] = out = original_zs(self, *a, **kw)
        return out

    def fs(self, *a, **kw):
        captured["few_shot_grid"] = out = original_fs(self, *a, **kw)
        return out

    tm.open_clip.create_model_and_transforms = fake_create
    tm.WinClipModel._compute_zero_shot_scores, tm.WinClipModel._compute_few_shot_scores = zs, fs
    if mode == "fixed":
        tm.WinClipModel._get_window_embeddings = fixed_windows
    try:
        model = tm.WinClipModel(class_name=CLASS_NAME).eval()
        out = {(None, "text_embeddings"): model.text_embeddings.clone()}
        for k in SHOTS:
            if k:  # what setup(reference_images=...) does, without recomputing the text embeddings
                model.reference_images = ref[:k]
                model.k_shot = k
                model._collect_visual_embeddings(ref[:k])
            captured.clear()
            with torch.no_grad():
                pred = model(test)
            out[(k, "pred_score")] = pred.pred_score.clone()
            out[(k, "anomaly_map")] = pred.anomaly_map.clone()
            for name, value in captured.items():
                out[(k, name)] = value.clone()
        if mode == "stock":
            with torch.no_grad():
                _, windows, _ = model.encode_image(test)
            out[(None, "window_spread")] = torch.stack([(w - w[:, :1]).abs().amax() for w in windows])
        return out
    finally:
        tm.open_clip.create_model_and_transforms = original_create
        tm.WinClipModel._get_window_embeddings = original_windows
        tm.WinClipModel._compute_zero_shot_scores, tm.WinClipModel._compute_few_shot_scores = original_zs, original_fs


def main() -> None:
    import platform

    import anomalib
    import open_clip
    from safetensors.torch import save_file

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tensors, meta_cases = {}, {}
    for case, spec in CASES.items():
        meta = dict(spec)
        for mode in ("fixed", "stock"):
            oc = build_open_clip(spec["model"], spec["model_seed"], spec["perturb_seed"])
            meta["state_sha256"] = state_sha256(oc)
            image_size = oc.visual.image_size[0] if isinstance(oc.visual.image_size, tuple) else oc.visual.image_size
            test, ref = make_inputs(image_size, spec["input_seed"])
            meta.update(image_size=image_size, grid_size=list(oc.visual.grid_size),
                        test_sha256=tensor_sha256(test), reference_sha256=tensor_sha256(ref))
            print(f"{case} {mode}: anomalib WinClipModel on {spec['model']} ...", flush=True)
            for (k, name), value in run_anomalib(oc, test, ref, mode).items():
                if k is None:
                    if mode == "fixed" and name == "text_embeddings":
                        tensors[f"{case}/text_embeddings"] = value
                    elif name == "window_spread":
                        meta["stock_window_spread"] = value.tolist()
                    continue
                if mode == "stock" and name == "anomaly_map":
                    continue  # keep the file small: the grids hold the same information
                tensors[key(case, mode, k, name)] = value
        meta_cases[case] = meta
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(FIXTURE))
    record = {
        "what": "anomalib WinClipModel outputs on seeded random open_clip weights (see make_winclip_fixture.py)",
        "command": "refvenv/bin/python tests/reference/make_winclip_fixture.py",
        "versions": {"anomalib": anomalib.__version__, "open_clip": open_clip.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
        "class_name": CLASS_NAME, "shots": list(SHOTS), "n_test": N_TEST, "n_reference": N_REF,
        "perturb_std": PERTURB_STD, "scales": [2, 3], "cases": meta_cases,
        "modes": {"fixed": "anomalib with transformer.batch_first=False during _get_window_embeddings only",
                  "stock": "anomalib as installed (window pass attends across windows: degenerate)"},
        "keys": sorted(tensors),
    }
    META.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1e6:.2f} MB) and {META}")


if __name__ == "__main__":
    sys.exit(main())
