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
    and the paper's 100 does not suit the model's hooks (`lake.config.default_k_for`, the rule of
    `LakeConfig.for_model`), said on stdout."""
    from lake_interp.lake.config import default_k_for

    if config.get("k_neurons") is not None:
        return config
    k, note = default_k_for(model, config.get("sites"), config.get("layers"))
    if note is None:
        return config
    print(note)
    return {**config, "k_neurons": k}


def load_model(model: str, pretrained: Optional[str], device: Optional[str], precision: str = "fp32"):
    from lake_interp.model import HookedCLIP, HookedViT
    from lake_interp.model.loading import NONE_TAGS, is_timm_name

    device = device or ("cuda" if _cuda() else "cpu")
    if is_timm_name(model):  # a timm ViT (e.g. vit_small_patch14_reg4_dinov2): vision-only, a local checkpoint
        hooked = HookedViT.from_pretrained(model, pretrained, device=device, precision=precision)
    else:
        hooked = HookedCLIP.from_pretrained(model, pretrained, device=device, precision=precision)
    if pretrained in NONE_TAGS:
        print(
            f"*** WARNING: {model} has RANDOM WEIGHTS (--pretrained {pretrained or 'none'}). Every score and map "
            "below is MEANINGLESS; use this only as a smoke test. ***",
            file=sys.stderr,
        )
    return hooked


def _fail(message: str) -> int:
    print(f"lake-interp: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------ cheap checks
# Everything that can be checked without the model is checked before it loads (seconds to minutes).
GENERIC_FOLDERS = {"good", "train", "training", "normal", "normals", "ok", "nominal", "img", "imgs", "image", "images",
                   "support", "validation", "valid", "val", "test", "data", "samples"}


def derive_class_name(folder: Path) -> str:
    """The prompt class name from a folder of normal images: its name, or, where that is generic
    (good, train, images, ...), the nearest parent's that is not (bottle/train/good -> "bottle");
    underscores become spaces (`benchmark.class_name_for`). A ValueError asks for --class-name."""
    from lake_interp.benchmark import class_name_for

    for part in reversed(Path(folder).resolve().parts[1:]):
        if part.lower() not in GENERIC_FOLDERS and not part.startswith("."):
            return class_name_for(part)
    raise ValueError(f"cannot derive a class name from {folder}: pass --class-name (the object's name in the prompts)")


def check_out_folder(out: Path, what: str = "--out") -> None:
    """An output folder that can be one: not a file, no other run holding its lock (OutputError)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose another {what}")


def check_benchmark_args(args) -> dict:
    """The cheap checks of `lake-interp benchmark`, before the model loads: --out, the LakeConfig
    options (returned, as `config_dict`), --root and every category of --categories, shots and seeds."""
    from lake_interp.data import DATASETS
    from lake_interp.data.io import require_dir

    check_out_folder(args.out)
    config = config_dict(args)
    root = require_dir(Path(args.root), f"the {args.dataset} categories (--root)")
    cls = DATASETS[args.dataset]
    if args.dataset != "folder":
        for category in args.categories or []:
            cls.category_dir(root, category)
        if not args.categories and not cls.categories(root):
            raise ValueError(f"--root {root} holds no {args.dataset} category folders (each with "
                             f"{' or '.join(cls.category_markers)}/): one folder too deep or too high?")
    for name in ("shots", "seeds"):
        values = getattr(args, name)
        low = 0 if name == "seeds" else 1
        if not values or any(v < low for v in values):
            raise ValueError(f"--{name} {values}: expected {'integers >= 0' if low == 0 else 'positive integers'}")
    return config


# ------------------------------------------------------------------------------------ commands
def cmd_hooks(args) -> int:
    """Print every hook point with the shape it has for one image and one prompt."""
    import torch

    model = load_model(args.model, args.pretrained, args.device, args.precision)
    names = model.hook_names(args.filter or "")
    if not names:
        return _fail(f"no hook name starts with {args.filter!r}; e.g. {model.hook_names()[:3]}")
    images = torch.zeros(1, 3, model.image_size, model.image_size, device=model.device, dtype=model.dtype)
    tokens = model.tokenizer(["a photo of a flawless object"]).to(model.device) if model.text is not None else None
    with torch.no_grad():
        _, cache = model.run_with_cache(images, tokens)
    print(f"{args.model} ({args.pretrained}): image {model.image_size}px, grid {model.grid_size}x{model.grid_size}")
    for name in names:
        print(f"{name:48s} {list(cache[name].shape)}")
    return 0


def validation_set(folder: Path):
    """`fit --validation DIR`: a split folder (good/, optionally anomaly/ and mask/: labelled), or a
    folder of images, all normal (e.g. MVTec LOCO's validation/good)."""
    from lake_interp.data import FolderDataset
    from lake_interp.data.io import list_images, require_dir, subdirs

    folder = require_dir(Path(folder), "validation images: good/ (and anomaly/, mask/), or normal images (--validation)")
    if subdirs(folder) and not list_images(folder):
        return FolderDataset.from_split_dir(folder, split="validation")
    return FolderDataset(normal_dir=folder, split="validation")


def cmd_fit(args) -> int:
    from lake_interp.data import FolderDataset
    from lake_interp.lake import Lake, LakeConfig
    from lake_interp.lake.persist import check_new_detector_folder
    from lake_interp.lake.threshold import check_quantile

    if args.k is not None:
        return _fail(f"fit --k was renamed --shots (the number of normal images drawn with --seed): use --shots {args.k}; "
                     "the number of neurons per hook is --k-neurons")
    # every input checked before the model loads
    check_new_detector_folder(args.out)
    config = LakeConfig.from_dict(config_dict(args))
    check_quantile(args.threshold_quantile)
    normal = FolderDataset(normal_dir=args.normal)
    if args.shots is not None and args.shots < 1:
        return _fail(f"--shots {args.shots}: expected a positive number of support images")
    validation = validation_set(args.validation) if args.validation is not None else None
    if validation is not None:
        shared = sorted({str(p) for p in normal.paths} & {str(p) for p in validation.paths})
        if shared:
            return _fail(f"--validation {args.validation} holds support images of --normal ({', '.join(shared[:3])}"
                         f"{' ...' if len(shared) > 3 else ''}): a threshold chosen on the support's own images is "
                         "meaningless (distance 0); give images the detector is not fitted on")
    class_name = args.class_name
    if class_name is None:
        class_name = derive_class_name(args.normal)
        print(f"class name {class_name!r} (from the folder name of {args.normal}; --class-name sets it)")
    support_idx = normal.few_shot_indices(args.shots, args.seed) if args.shots is not None else range(len(normal))
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp fit"):
        check_new_detector_folder(args.out)  # again, under the lock
        model = load_model(args.model, args.pretrained, args.device, args.precision)
        config = LakeConfig.from_dict(with_default_k(config_dict(args), model))
        support = [normal[i] for i in support_idx]
        lake = Lake(model, config, class_name=class_name).fit(support)
        q = args.threshold_quantile
        if validation is not None:
            lake.calibrate(validation, quantile=q)
        elif len(support) >= 2:
            lake.calibrate_support(support, quantile=q)
        else:
            print("no decision threshold stored: leave-one-out needs at least 2 support images; pass --validation DIR, "
                  "or score with --threshold T")
        lake.save(args.out)
    t = lake.threshold
    said = "" if t is None else (f"; thresholds image {t.image:.6g}, pixel {t.pixel:.6g} ({t.method}: "
                                 f"{t.details.get('rule', '')})")
    print(f"fitted on {len(support)} normal images of {args.normal}{said}; detector saved to {args.out}")
    return 0


def cmd_score(args) -> int:
    from lake_interp.data.folder import image_files
    from lake_interp.lake import Lake
    from lake_interp.lake.persist import read_meta, read_threshold
    from lake_interp.lake.threshold import NO_THRESHOLD, Threshold
    from lake_interp.scoring import check_new_score_folder, score_files

    # every input checked before the model loads
    meta = read_meta(args.detector)
    saved = meta["model"]
    if args.threshold is None and read_threshold(meta, Path(args.detector) / "lake.json") is None:
        return _fail(f"{args.detector} {NO_THRESHOLD}")
    if args.threshold is not None:
        Threshold.given(args.threshold, args.pixel_threshold)  # finite numbers
    check_new_score_folder(args.out)
    paths = image_files(args.images, args.recursive, exclude=args.out)
    if not paths:
        sub = "" if args.recursive else " (images in sub-folders: --recursive)"
        return _fail(f"no images in {args.images}{sub}")
    root = Path(args.images) if Path(args.images).is_dir() else None
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp score"):
        model = load_model(args.model or saved["name"], args.pretrained or saved["pretrained"], args.device,
                           args.precision or saved.get("dtype", "fp32"))
        lake = Lake.load(args.detector, model)
        rows = score_files(lake, paths, args.out, root=root, threshold=args.threshold,
                           pixel_threshold=args.pixel_threshold)
    n_anomalous = sum(r["label"] for r in rows)
    print(f"scored {len(rows)} images ({n_anomalous} anomalous); wrote {Path(args.out) / 'scores.csv'}, masks in "
          f"{Path(args.out) / 'masks'} and overlays in {Path(args.out) / 'maps'}")
    return 0


def cmd_demo(args) -> int:
    from lake_interp.demo import run_demo

    from lake_interp.outputs import output_folder

    from lake_interp.demo import check_demo_folder

    check_out_folder(args.out)
    with output_folder(args.out, "lake-interp demo") as output:
        check_demo_folder(output, args.categories, args.shots, args.seed)  # before the model loads
        model = load_model(args.model, args.pretrained, args.device, args.precision)
        report = run_demo(model, args.out, categories=args.categories, shots=args.shots, seed=args.seed,
                          k_neurons=args.k_neurons, random_weights=model.random_weights, progress=not args.no_progress)
    print(f"demo report: {report} (and {report.with_suffix('.html')})")
    return 0


def cmd_figures(args) -> int:
    from lake_interp.study import StudyConfig, run_study

    cfg = StudyConfig.from_json(args.config)
    check_study_inputs(cfg)
    check_out_folder(args.out)
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp figures"):
        model = load_model(cfg.model, cfg.pretrained, args.device, args.precision)
        command = f"lake-interp figures --config {args.config} --out {args.out}"
        made = run_study(model, cfg, args.out, command=command, progress=not args.no_progress)
    print(f"wrote {len(made)} figures to {args.out}: " + ", ".join(m["name"] for m in made))
    return 0


def check_study_inputs(cfg) -> None:
    """What of a study config can be checked without the model: its LakeConfig fields and the
    dataset root (the rest, `study.check_study`, builds detectors on the model)."""
    from lake_interp.data.io import require_dir
    from lake_interp.lake import LakeConfig

    if not isinstance(cfg.lake, dict):
        raise ValueError(f"study config field 'lake': expected a JSON object of fields, got {cfg.lake!r}")
    try:
        LakeConfig.from_dict(cfg.lake)
    except (TypeError, ValueError) as e:
        raise ValueError(f"study config field 'lake': {e}") from e
    if cfg.dataset != "synthetic" and cfg.root:
        require_dir(Path(cfg.root), f"the {cfg.dataset} categories (study config field 'root')")


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

    p = sub.add_parser("fit", help="fit LAKE on a folder of normal images, choose its thresholds, save the detector")
    p.add_argument("--normal", required=True, type=Path, help="folder of normal images")
    p.add_argument("--class-name", default=None,
                   help="object name used in the text prompts (default: from the folder name, e.g. bottle/train/good "
                        "-> bottle; said on stdout)")
    p.add_argument("--shots", type=int, help="use this many normal images, drawn with --seed (default: all images)")
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)  # renamed --shots: refused with the hint (and so never
    # taken by argparse as an abbreviation of --k-neurons)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation", type=Path,
                   help="images to choose the decision thresholds on (never the support): a folder with good/ "
                        "(and anomaly/, mask/): F1-optimal; or a folder of normal images (e.g. MVTec LOCO "
                        "validation/good): --threshold-quantile of their scores. Default: leave-one-out on the support")
    p.add_argument("--threshold-quantile", type=float, default=1.0,
                   help="quantile of normal scores for the threshold where no anomalous validation image is given "
                        "(default 1.0: the highest normal score)")
    p.add_argument("--out", required=True, type=Path, help="detector folder to write")
    add_model_args(p)
    add_config_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("score", help="decide on images with a saved detector: scores.csv (score, label), masks, "
                                     "overlays with the mask contour")
    p.add_argument("--detector", required=True, type=Path, help="folder written by `lake-interp fit`")
    p.add_argument("--images", required=True, type=Path, help="an image file or a folder of images to score")
    p.add_argument("--recursive", action="store_true", help="also the images in sub-folders of --images")
    p.add_argument("--threshold", type=float,
                   help="image threshold (score >= it: anomalous) instead of the detector's stored one")
    p.add_argument("--pixel-threshold", type=float,
                   help="pixel threshold of the masks (default: the detector's, or --threshold where that is given)")
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
