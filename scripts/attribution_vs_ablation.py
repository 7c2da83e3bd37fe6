"""Spearman correlation of attribution with measured single-unit ablation (top 50 units by
|attribution| of the image score; downstream readout, zero mode), on a random-weight model.

    python scripts/attribution_vs_ablation.py --model ViT-B-16 --bank refit --json out.json
"""

import argparse
import json
import tempfile
import time
import warnings

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lake-tiny")
    p.add_argument("--bank", default="refit", choices=["fixed", "refit"])
    p.add_argument("--mode", default="zero", choices=["zero", "mean"])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args()
    from lake_interp import Lake, LakeConfig
    from lake_interp.data import MVTecAD, make_synthetic_dataset
    from lake_interp.interp.attribution import attribute, compare_with_ablation
    from lake_interp.perf import build_models

    warnings.simplefilter("ignore")
    _, model = build_models(a.model, torch.device("cpu"), torch.float32)
    root = make_synthetic_dataset(tempfile.mkdtemp(), categories=["disc"], seed=0, image_size=model.image_size)
    support = MVTecAD(root, "disc", "train").few_shot(k=1, seed=0)
    images = [s.image for s in MVTecAD(root, "disc", "test") if s.label == 1][: a.images]
    lake = Lake(model, LakeConfig(k_neurons=min(100, model.cfg.vision.block.d_model // 4)), class_name="disc").fit(support)
    t0 = time.perf_counter()
    r = attribute(lake, images, "score", support=support, bank=a.bank, mode=a.mode, n_maps=0)
    t1 = time.perf_counter()
    c = compare_with_ablation(lake, images, r, a.n, support=support)
    out = {"model": a.model, "bank": a.bank, "mode": a.mode, "images": len(images), "units": len(r.units),
           "top": a.n, "spearman": c["spearman"], "attribute_s": t1 - t0, "ablations_s": time.perf_counter() - t1,
           "rows": c["rows"]}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    if a.json:
        open(a.json, "w").write(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
