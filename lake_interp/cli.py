"""The `lake-interp` command line: hooks, fit, score, demo, figures, bench; benchmark and merge
(`commands/benchmark.py`), export (`commands/export.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def add_model_args(parser: argparse.ArgumentParser, default_model: Optional[str] = "ViT-B-16",
                   default_pretrained: Optional[str] = "openai", default_precision: Optional[str] = "fp32") -> None:
    parser.add_argument("--model", default=default_model,
                        help="open_clip model name, hf-hub:org/repo, or lake-tiny (built-in small config)")
    parser.add_argument("--pretrained", default=default_pretrained,
                        help="open_clip pretrained tag, a local checkpoint path, or 'none' for random weights "
                             "(smoke tests only: scores are meaningless)")
    add_device_args(parser, default_precision)


def add_device_args(parser: argparse.ArgumentParser, default_precision: Optional[str] = "fp32") -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    from lake_interp.model.precision import PRECISIONS

    parser.add_argument("--precision", default=default_precision, choices=list(PRECISIONS),
                        help="weights and activations dtype, as open_clip's precision (default: "
                             + (default_precision or "the detector's") + ")")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file of LakeConfig fields")
    parser.add_argument("--k-neurons", type=int, help="neurons kept per hook point (LakeConfig.k_neurons)")
    parser.add_argument("--text-weight", type=float, help="weight of the semantic branch (LakeConfig.text_weight)")


def config_dict(args: argparse.Namespace) -> dict:
    from lake_interp.data.io import read_json_object

    d = read_json_object(args.config, "--config ") if args.config else {}
    if args.k_neurons is not None:
        d["k_neurons"] = args.k_neurons
    if args.text_weight is not None:
        d["text_weight"] = args.text_weight
    from lake_interp.lake import LakeConfig

    try:
        LakeConfig.from_dict(d)  # unknown or bad fields fail here, before any model is loaded
    except (TypeError, ValueError) as e:
        source = f"--config {args.config}" if args.config else "the LakeConfig options"
        raise ValueError(f"{source}: {e}") from e
    return d


def with_default_k(config: dict, model) -> dict:
    """The LakeConfig overrides with k_neurons filled in where neither --k-neurons nor --config gave it
    and the paper's 100 does not suit the model (`lake.config.default_k_neurons`), said on stdout."""
    from lake_interp.lake import LakeConfig
    from lake_interp.lake.config import default_k_neurons

    if "k_neurons" in config:
        return config
    k = default_k_neurons(model.cfg.vision.d_model)
    if k == LakeConfig().k_neurons:
        return config
    print(f"k_neurons {k} (a quarter of the {model.cfg.vision.d_model} channels of {model.cfg.name}; the default "
          f"{LakeConfig().k_neurons} is for ViT-B/L widths; --k-neurons sets it)")
    return {**config, "k_neurons": k}


def load_model(model: str, pretrained: Optional[str], device: Optional[str], precision: str = "fp32"):
    from lake_interp.model import HookedCLIP
    from lake_interp.model.loading import NONE_TAGS

    device = device or ("cuda" if _cuda() else "cpu")
    hooked = HookedCLIP.from_pretrained(model, pretrained, device=device, precision=precision)
    if pretrained in NONE_TAGS:
        print(
            f"*** WARNING: {model} has RANDOM WEIGHTS (--pretrained {pretrained}). Every score and map "
            "below is MEANINGLESS; use this only as a smoke test. ***",
            file=sys.stderr,
        )
    return hooked


def _fail(message: str) -> int:
    print(f"lake-interp: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------ commands
def cmd_hooks(args) -> int:
    """Print every hook point with the shape it has for one image and one prompt."""
    import torch

    model = load_model(args.model, args.pretrained, args.device, args.precision)
    names = model.hook_names(args.filter or "")
    if not names:
        return _fail(f"no hook name starts with {args.filter!r}; e.g. {model.hook_names()[:3]}")
    images = torch.zeros(1, 3, model.image_size, model.image_size, device=model.device, dtype=model.dtype)
    tokens = model.tokenizer(["a photo of a flawless object"]).to(model.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(images, tokens)
    print(f"{args.model} ({args.pretrained}): image {model.image_size}px, grid {model.grid_size}x{model.grid_size}")
    for name in names:
        print(f"{name:48s} {list(cache[name].shape)}")
    return 0


def cmd_fit(args) -> int:
    from lake_interp.data import FolderDataset
    from lake_interp.lake import Lake, LakeConfig
    from lake_interp.lake.persist import check_new_detector_folder

    check_new_detector_folder(args.out)
    config = LakeConfig.from_dict(config_dict(args))  # every input checked before the model loads
    normal = FolderDataset(normal_dir=args.normal)
    support = normal.few_shot(args.k, args.seed) if args.k is not None else list(normal)
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp fit"):
        check_new_detector_folder(args.out)  # again, under the lock
        model = load_model(args.model, args.pretrained, args.device, args.precision)
        config = LakeConfig.from_dict(with_default_k(config_dict(args), model))
        lake = Lake(model, config, class_name=args.class_name).fit(support)
        lake.save(args.out)
    print(f"fitted on {len(support)} normal images of {args.normal}; detector saved to {args.out}")
    return 0


def cmd_score(args) -> int:
    from lake_interp.data.io import list_images, require_dir
    from lake_interp.lake import Lake
    from lake_interp.lake.persist import read_meta
    from lake_interp.scoring import check_new_score_folder, score_files

    saved = read_meta(args.detector)["model"]  # every input checked before the model loads
    check_new_score_folder(args.out)
    paths = list_images(require_dir(Path(args.images), "images to score"))
    if not paths:
        return _fail(f"no images in {args.images}")
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp score"):
        model = load_model(args.model or saved["name"], args.pretrained or saved["pretrained"], args.device,
                           args.precision or saved.get("dtype", "fp32"))
        lake = Lake.load(args.detector, model)
        rows = score_files(lake, paths, args.out)
    print(f"scored {len(rows)} images; wrote {Path(args.out) / 'scores.csv'} and overlays in {Path(args.out) / 'maps'}")
    return 0


def cmd_demo(args) -> int:
    from lake_interp.demo import run_demo

    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp demo"):
        model = load_model(args.model, args.pretrained, args.device, args.precision)
        report = run_demo(model, args.out, categories=args.categories, shots=args.shots, seed=args.seed,
                          k_neurons=args.k_neurons, random_weights=model.random_weights, progress=not args.no_progress)
    print(f"demo report: {report} (and {report.with_suffix('.html')})")
    return 0


def cmd_figures(args) -> int:
    from lake_interp.study import StudyConfig, run_study

    cfg = StudyConfig.from_json(args.config)
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp figures"):
        model = load_model(cfg.model, cfg.pretrained, args.device, args.precision)
        command = f"lake-interp figures --config {args.config} --out {args.out}"
        made = run_study(model, cfg, args.out, command=command, progress=not args.no_progress)
    print(f"wrote {len(made)} figures to {args.out}: " + ", ".join(m["name"] for m in made))
    return 0


# ------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lake-interp", description="LAKE anomaly-sensitive neurons in CLIP.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("hooks", help="load a model and list its hook points with their shapes")
    add_model_args(p)
    p.add_argument("--filter", help="only hook names starting with this prefix (e.g. visual.blocks.3.)")
    p.set_defaults(func=cmd_hooks)

    from lake_interp.commands import benchmark as benchmark_command
    from lake_interp.commands import export as export_command

    benchmark_command.add_parsers(sub)  # benchmark, merge
    export_command.add_parsers(sub)  # export

    p = sub.add_parser("fit", help="fit LAKE on a folder of normal images and save the detector")
    p.add_argument("--normal", required=True, type=Path, help="folder of normal images")
    p.add_argument("--class-name", default="object", help="object name used in the text prompts")
    p.add_argument("--k", type=int, help="use k images drawn with --seed (default: all images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="detector folder to write")
    add_model_args(p)
    add_config_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("score", help="score a folder with a saved detector: overlays + scores.csv")
    p.add_argument("--detector", required=True, type=Path, help="folder written by `lake-interp fit`")
    p.add_argument("--images", required=True, type=Path, help="folder of images to score")
    p.add_argument("--out", required=True, type=Path)
    add_model_args(p, default_model=None, default_pretrained=None, default_precision=None)  # default: the detector's
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="synthetic dataset + LAKE + a short HTML/markdown report")
    p.add_argument("--out", type=Path, default=Path("lake_demo"))
    p.add_argument("--categories", nargs="+", default=["disc", "grid"])
    p.add_argument("--shots", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k-neurons", type=int, default=None, help="default: 100, or 16 for lake-tiny")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("figures", help="regenerate every interpretability figure of a study from a JSON config")
    p.add_argument("--config", required=True, type=Path, help="study config (see lake_interp/study.py: StudyConfig)")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_args(p)
    p.set_defaults(func=cmd_figures)

    from lake_interp import perf

    p = sub.add_parser("bench", help="performance benchmark: HookedCLIP and LAKE vs open_clip (benchmarks/run.py)")
    perf.add_arguments(p)
    p.set_defaults(func=perf.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotImplementedError, RuntimeError) as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
