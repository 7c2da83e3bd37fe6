"""`lake-interp export`: a fitted detector as one ONNX graph (lake_interp.lake.onnx_export)."""

from __future__ import annotations

from pathlib import Path

FORMATS = ("onnx",)


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="a fitted detector as one ONNX graph: preprocessed images -> image scores and maps",
                       description="Write the detector of --detector as one ONNX graph (dynamic batch): the vision "
                                   "tower up to the last block the detector reads, the bank search on its neurons, "
                                   "the semantic branch with its text features as constants, smoothing and fusion "
                                   "as Lake.score. Input 'images' [batch, 3, S, S] float32, preprocessed as "
                                   "model.preprocess (squash to S x S, bicubic, no crop; [0, 1]; the model's mean "
                                   "and std); outputs image_scores [batch], maps, visual_maps, semantic_maps "
                                   "[batch, S, S]. A JSON description is written next to it (OUT.json).")
    p.add_argument("--detector", required=True, type=Path, help="folder written by `lake-interp fit`")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="export format (only onnx)")
    p.add_argument("--out", required=True, type=Path, help="file to write (.onnx), and OUT.json beside it")
    p.add_argument("--model", default=None, help="model name (default: the detector's)")
    p.add_argument("--pretrained", default=None, help="pretrained tag or checkpoint path (default: the detector's)")
    p.add_argument("--device", default="cpu",
                   help="device the graph is traced on (default cpu; onnxruntime runs it wherever it is told)")
    p.set_defaults(func=run_export_command)


def run_export_command(args) -> int:
    from lake_interp.cli import load_model
    from lake_interp.lake import Lake
    from lake_interp.lake.onnx_export import check_target, export_onnx, require_onnx, sidecar_path
    from lake_interp.lake.persist import read_meta

    # every input checked before the model loads: packages, detector folder, output file
    require_onnx()
    saved = read_meta(args.detector)["model"]
    check_target(args.out)
    precision = saved.get("dtype", "fp32")
    if precision != "fp32":
        raise ValueError(f"--detector {args.detector} was fitted in {precision}: only fp32 detectors are exported "
                         "(the graph is fp32; refit with --precision fp32)")
    model = load_model(args.model or saved["name"], args.pretrained or saved["pretrained"], args.device, precision)
    lake = Lake.load(args.detector, model)
    path = export_onnx(lake, args.out, command="lake-interp export")
    print(f"wrote {path} (input 'images' [batch, 3, {model.image_size}, {model.image_size}], preprocessed as "
          f"model.preprocess) and {sidecar_path(path)}")
    return 0
