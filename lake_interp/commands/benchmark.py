"""`lake-interp benchmark` (and, with sharding, `lake-interp merge`)."""

from __future__ import annotations

from pathlib import Path

from lake_interp.cli import add_config_args, add_model_args, config_dict, load_model, with_default_k


def add_parsers(sub) -> None:
    from lake_interp.detectors.methods import METHODS, default_methods

    p = sub.add_parser("benchmark", help="every method, shot and seed on a dataset: CSV + markdown table")
    p.add_argument("--dataset", required=True, choices=["mvtec", "visa", "btad", "mvtec_loco", "folder"])
    p.add_argument("--root", required=True, type=Path, help="dataset root folder")
    p.add_argument("--categories", nargs="+", help="default: every category under --root")
    p.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=default_methods(), choices=list(METHODS), metavar="METHOD",
                   help="methods of the method table (lake_interp/detectors/methods.py): "
                        + ", ".join(METHODS) + " (default: every one available: " + " ".join(default_methods()) + ")")
    p.add_argument("--resolution", type=int, help="evaluation resolution (default: the model input size)")
    p.add_argument("--out", required=True, type=Path, help="output folder (an interrupted run resumes here)")
    p.add_argument("--no-progress", action="store_true")
    add_model_args(p)
    add_config_args(p)
    p.set_defaults(func=run_benchmark_command)


def run_benchmark_command(args) -> int:
    from lake_interp.benchmark import BenchmarkSpec, run_benchmark

    spec = BenchmarkSpec(
        dataset=args.dataset, root=str(args.root), model=args.model, pretrained=args.pretrained,
        categories=args.categories, shots=args.shots, seeds=args.seeds, methods=args.methods,
        config=config_dict(args), resolution=args.resolution,
    )
    from lake_interp.outputs import output_folder

    with output_folder(args.out, "lake-interp benchmark"):  # a second run into --out is refused before any work
        model = load_model(args.model, args.pretrained, args.device, args.precision)
        spec.config = with_default_k(spec.config, model)
        run_benchmark(model, spec, args.out, progress=not args.no_progress)
    print((Path(args.out) / "summary.md").read_text())
    print(f"wrote {Path(args.out) / 'results.csv'} and {Path(args.out) / 'summary.md'}")
    return 0
