"""`lake-interp benchmark` (and, with sharding, `lake-interp merge`)."""

from __future__ import annotations

from pathlib import Path

from lake_interp.cli import add_config_args, add_model_args, check_benchmark_args, load_model, with_default_k


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
    g = p.add_argument_group("sharding", "the grid's cells (dataset, category, shots, seed) split over processes or "
                             "machines; each shard writes <out>/shards/<i>-of-<n>/, `lake-interp merge <out>` builds "
                             "results.csv and summary.md (README: Sharded benchmarks)")
    g.add_argument("--shard", metavar="I/N", help="compute only shard I of N (0 <= I < N; the sorted cell list cut into "
                                                  "N contiguous blocks), into <out>/shards/<I>-of-<N>/")
    from lake_interp.executors import EXECUTORS

    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this process (default); submitit: --jobs Slurm jobs, one per shard, merged when they "
                        "finish; submitit-local: the same jobs as local processes (submitit's LocalExecutor)")
    g.add_argument("--jobs", type=int, help="number of shard jobs (--executor submitit / submitit-local)")
    g.add_argument("--slurm-partition", help="Slurm partition of the jobs (default: the cluster's)")
    g.add_argument("--gpus-per-job", type=int, help="GPUs per job (default: 1 with submitit, 0 with submitit-local)")
    g.add_argument("--timeout-min", type=int, default=240, help="time limit of each job in minutes (default 240)")
    add_model_args(p)
    add_config_args(p)
    p.set_defaults(func=run_benchmark_command)

    p = sub.add_parser("merge", help="results.csv and summary.md of a sharded benchmark from its shard folders")
    p.add_argument("sources", nargs="+", type=Path, metavar="OUT",
                   help="benchmark --out folders (their shards/*/ are found) or shard folders, all of one run")
    p.add_argument("--out", type=Path, help="folder to write the merged tables to (default: the one OUT, in place)")
    p.add_argument("--partial", action="store_true",
                   help="write the tables although cells are missing; summary.md is marked INCOMPLETE and lists them")
    p.set_defaults(func=run_merge_command)


def run_benchmark_command(args) -> int:
    from lake_interp.benchmark import BenchmarkSpec, run_benchmark

    spec = BenchmarkSpec(
        dataset=args.dataset, root=str(args.root), model=args.model, pretrained=args.pretrained,
        categories=args.categories, shots=args.shots, seeds=args.seeds, methods=args.methods,
        config=check_benchmark_args(args), resolution=args.resolution,  # --out, --root, categories: before the model
    )
    shard = _check_sharding(args)
    if args.executor != "local":
        from lake_interp.executors import run_jobs

        model = {"model": args.model, "pretrained": args.pretrained, "device": args.device, "precision": args.precision}
        run_jobs(spec, model, args.out, args.jobs, args.executor, args.slurm_partition, args.gpus_per_job,
                 args.timeout_min)
        return _print_tables(args.out)
    from lake_interp.outputs import output_folder
    from lake_interp.shards import shard_folder

    folder = args.out if shard is None else shard_folder(args.out, *shard)
    with output_folder(folder, "lake-interp benchmark"):  # a second run into that folder is refused before any work
        model = load_model(args.model, args.pretrained, args.device, args.precision)
        spec.config = with_default_k(spec.config, model)
        rows = run_benchmark(model, spec, args.out, progress=not args.no_progress, shard=shard)
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]}: {len(rows)} rows in {folder / 'cells'}; when every shard has finished: "
              f"lake-interp merge {args.out}")
        return 0
    return _print_tables(args.out)


def _check_sharding(args):
    """--shard, --executor and their options, checked before any model loads."""
    from lake_interp.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.executor == "local":
        given = [f for f, v in (("--jobs", args.jobs), ("--slurm-partition", args.slurm_partition),
                                ("--gpus-per-job", args.gpus_per_job)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need --executor submitit or submitit-local")
        return shard
    if shard is not None:
        raise ValueError(f"--shard runs one shard in this process; --executor {args.executor} runs them all as jobs "
                         "(--jobs N): give one of the two")
    if args.jobs is None or args.jobs < 1:
        raise ValueError(f"--executor {args.executor} needs --jobs N (N >= 1 shard jobs)")
    if args.gpus_per_job is not None and args.gpus_per_job < 0:
        raise ValueError(f"--gpus-per-job {args.gpus_per_job}: expected >= 0")
    if not args.timeout_min > 0:
        raise ValueError(f"--timeout-min {args.timeout_min}: expected a positive number of minutes")
    return None


def _print_tables(out) -> int:
    print((Path(out) / "summary.md").read_text())
    print(f"wrote {Path(out) / 'results.csv'} and {Path(out) / 'summary.md'}")
    return 0


def run_merge_command(args) -> int:
    from lake_interp.merge import merge

    out = args.out or (args.sources[0] if len(args.sources) == 1 else None)
    rows = merge(args.sources, out, partial=args.partial)
    print(f"merged {len(rows)} rows from {', '.join(map(str, args.sources))}")
    return _print_tables(out)
