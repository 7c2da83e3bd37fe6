"""Time WinCLIP+ scoring per image: lake_interp's `WinCLIP` vs anomalib 2.x's `WinClipModel`.

    python benchmarks/winclip_vs_anomalib.py --ref-python refvenv/bin/python

Run with the project's venv; anomalib runs in a child process of `--ref-python` (its own venv:
anomalib is not a dependency of this project). Both sides: the same random-weight open_clip model
(`torch.manual_seed(seed); open_clip.create_model(model, pretrained=None)`), the same random
input batch, `k` reference images, fp32 on the CPU, `torch.no_grad`, the same torch thread count;
the text embeddings are random (their cost is once per class, not per image, and does not depend
on the images) so neither side spends minutes on the text tower. Timed: scoring the batch (tower
on the whole images and on every window, zero- and few-shot maps, upsampling), after one warm-up
call. Rounds alternate anomalib / ours; the ratio is ours / anomalib of the median per-image
times (and, per round, of the paired medians). On a shared, busy machine prefer `--paired`: both
in one process, single calls alternating, the median of per-pair ratios:

    PYTHONPATH=.:.venv/lib/python3.11/site-packages refvenv/bin/python \
        benchmarks/winclip_vs_anomalib.py --paired --repeats 4 --rounds 2

anomalib is timed twice: "fixed" (its window pass with the token layout restored, i.e. the same
computation as ours; see lake_interp/detectors/winclip.py) and "stock" (as installed: with
open_clip 3.x its window pass attends across windows, a different and degenerate computation).
The ratio that counts is against "fixed".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def inputs(image_size: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(n, 3, image_size, image_size, generator=g), torch.randn(k, 3, image_size, image_size, generator=g)


def random_text(dim: int, seed: int) -> torch.Tensor:
    return torch.randn(2, dim, generator=torch.Generator().manual_seed(seed + 2))


def build(name: str, seed: int):
    import warnings

    import open_clip

    if name not in open_clip.list_models():  # lake-tiny, the package's small config
        open_clip.add_model_config(Path(__file__).resolve().parents[1] / "lake_interp" / "model" / "model_configs")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name, pretrained=None).eval()


def time_calls(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


# ------------------------------------------------------------------------------------------ anomalib side
def anomalib_scorer(args, mode: str):
    """(callable scoring the test batch with anomalib's WinClipModel, the test batch)."""
    import open_clip
    from anomalib.models.image.winclip import torch_model as tm

    oc = build(args.model, args.seed)
    size = oc.visual.image_size[0] if isinstance(oc.visual.image_size, tuple) else oc.visual.image_size
    test, ref = inputs(size, args.images, args.k, args.seed)
    text = random_text(oc.text_projection.shape[1], args.seed)
    original_create, original_windows = tm.open_clip.create_model_and_transforms, tm.WinClipModel._get_window_embeddings
    original_text = tm.WinClipModel._collect_text_embeddings

    def fixed(self, feature_map, masks):
        self.clip.visual.transformer.batch_first = False
        try:
            return original_windows(self, feature_map, masks)
        finally:
            self.clip.visual.transformer.batch_first = True

    def set_text(self, class_name):
        self._text_embeddings = text

    tm.open_clip.create_model_and_transforms = lambda *a, **kw: (oc, None, open_clip.image_transform(size, is_train=False))
    tm.WinClipModel._collect_text_embeddings = set_text
    try:
        model = tm.WinClipModel(class_name="object", reference_images=ref).eval()
    finally:
        tm.open_clip.create_model_and_transforms = original_create
        tm.WinClipModel._collect_text_embeddings = original_text
    # the layout fix is looked up on the class at call time: bind it to this instance only
    if mode == "fixed":
        model._get_window_embeddings = fixed.__get__(model)
    return (lambda: model(test)), test


def anomalib_worker(args) -> None:
    torch.set_num_threads(args.threads)
    score, _ = anomalib_scorer(args, args.mode)
    with torch.no_grad():
        times = time_calls(score, args.repeats)
    print(json.dumps({"per_image_s": [t / args.images for t in times]}))


def run_paired(args) -> None:
    """Both in this process (anomalib and lake_interp importable together): calls alternate back to
    back, order swapped every pair; the ratio is the median of the per-pair ratios."""
    det, test = ours_setup(args)
    ref_score, _ = anomalib_scorer(args, "fixed")
    ours_score = lambda: det.score(test)  # noqa: E731
    ours, ref, ratios = [], [], []
    with torch.no_grad():
        ref_score(), ours_score()  # warm-up
        for i in range(args.repeats * args.rounds):
            pair = {}
            for name, fn in ((("ref", ref_score), ("ours", ours_score)) if i % 2 == 0 else
                             (("ours", ours_score), ("ref", ref_score))):
                t = time.perf_counter()
                fn()
                pair[name] = (time.perf_counter() - t) / args.images
            ours.append(pair["ours"])
            ref.append(pair["ref"])
            ratios.append(pair["ours"] / pair["ref"])
            print(f"pair {i}: anomalib(fixed) {pair['ref']:.3f} s/img, ours {pair['ours']:.3f} s/img, "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    med = statistics.median
    print(f"\n{args.model}, WinCLIP+ k={args.k}, batch {args.images}, {args.threads} threads, {len(ratios)} pairs, "
          f"torch {torch.__version__}, in one process")
    print(f"anomalib WinClipModel (fixed layout) : {med(ref):.3f} s per image")
    print(f"lake_interp WinCLIP                  : {med(ours):.3f} s per image")
    print(f"ratio ours / anomalib(fixed)         : {med(ratios):.3f} (median of per-pair ratios; "
          f"min {min(ratios):.3f}, max {max(ratios):.3f})")


def run_anomalib(args, mode: str) -> list[float]:
    cmd = [args.ref_python, __file__, "--anomalib-worker", "--mode", mode, "--model", args.model,
           "--images", str(args.images), "--k", str(args.k), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["per_image_s"]


# ------------------------------------------------------------------------------------------ our side
def ours_setup(args):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lake_interp import HookedCLIP
    from lake_interp.detectors.winclip import WinCLIP

    oc = build(args.model, args.seed)
    model = HookedCLIP.from_open_clip(oc, args.model)
    del oc
    test, ref = inputs(model.image_size, args.images, args.k, args.seed)
    det = WinCLIP(model, class_name="object", k_shot=args.k)
    det.text_embeddings = random_text(model.cfg.vision.output_dim, args.seed)
    det.fit(ref)
    return det, test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-python", default="refvenv/bin/python", help="python of a venv with anomalib 2.x")
    p.add_argument("--model", default="ViT-B-16-plus-240", help="open_clip model (default: anomalib's backbone)")
    p.add_argument("--images", type=int, default=2, help="test images per scored batch")
    p.add_argument("--k", type=int, default=2, help="reference images (WinCLIP+ shots)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per round and side")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stock", action="store_true", help="skip timing stock anomalib")
    p.add_argument("--paired", action="store_true",
                   help="time both in this process, calls alternating (needs anomalib and lake_interp importable "
                        "together, e.g. PYTHONPATH=.:.venv/lib/python3.11/site-packages refvenv/bin/python ...)")
    p.add_argument("--anomalib-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="fixed", choices=("fixed", "stock"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.anomalib_worker:
        return anomalib_worker(args)
    torch.set_num_threads(args.threads)
    if args.paired:
        return run_paired(args)

    det, test = ours_setup(args)
    ours, ref_fixed, ref_stock, paired = [], [], [], []
    for r in range(args.rounds):
        a = run_anomalib(args, "fixed")
        with torch.no_grad():
            o = [t / args.images for t in time_calls(lambda: det.score(test), args.repeats)]
        ref_fixed += a
        ours += o
        paired.append(statistics.median(o) / statistics.median(a))
        if not args.no_stock:
            ref_stock += run_anomalib(args, "stock")
        print(f"round {r}: anomalib(fixed) {statistics.median(a):.3f} s/img, ours {statistics.median(o):.3f} s/img",
              flush=True)
    med = statistics.median
    print(f"\n{args.model}, WinCLIP+ k={args.k}, batch {args.images}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.repeats} calls, torch {torch.__version__}")
    print(f"anomalib WinClipModel (fixed layout) : {med(ref_fixed):.3f} s per image")
    if ref_stock:
        print(f"anomalib WinClipModel (stock)        : {med(ref_stock):.3f} s per image")
    print(f"lake_interp WinCLIP                  : {med(ours):.3f} s per image")
    print(f"ratio ours / anomalib(fixed)         : {med(ours) / med(ref_fixed):.3f} "
          f"(paired per round: {', '.join(f'{x:.3f}' for x in paired)})")
    if ref_stock:
        print(f"ratio ours / anomalib(stock)         : {med(ours) / med(ref_stock):.3f}")


if __name__ == "__main__":
    main()
