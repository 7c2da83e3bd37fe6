"""Performance benchmark: HookedCLIP and LAKE against bare open_clip, in one run, on the same weights.

    python benchmarks/run.py [--quick] [--model ViT-B-16] [--batch 8] [--repeats 5]
                             [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--json OUT]
    lake-interp bench ...      (the same options)

Sections (each printed as rows of one table and written to the JSON file):

- encode_image: HookedCLIP `encode_image` vs open_clip `encode_image` (random init, the weights
  copied with `HookedCLIP.from_open_clip`), with no hooks, and while caching `hook_resid_post` of 4
  blocks (`run_with_cache`). Targets: ratio <= 1.05 and <= 1.15.
- lake_score: `Lake.score` per image vs one bare open_clip `encode_image` per image. Target <= 1.25.
- fit: `Lake.fit` time for k = 1, 4, 16 support images and the bank's size in bytes.
- top_patches: `lake_interp.interp.top_activating_patches` streamed over 1,000 images: throughput
  and peak RSS (growth over the RSS held before; bounded = the second half of the stream adds
  nothing).
- metrics: `benchmarks/metrics_bench.py` (1725 maps of 256x256) in a subprocess: time, peak RSS.
- lake_benchmark: `lake_interp.benchmark.run_benchmark` on one synthetic category in a subprocess:
  wall time and that process's peak RSS.
- attribution: `lake_interp.interp.attribute` of the image score to every unit (every residual
  channel and MLP neuron of every block) for one image, read by the downstream readout (fitted
  beforehand), vs one `encode_image` of that image. Target <= 3.
- onnx: the detector of lake_score exported as one ONNX graph (`lake_interp.lake.onnx_export`) run
  by onnxruntime (CPU, the same thread count) vs `Lake.score` in torch on the same batch: per-image
  times and the ratio onnxruntime / torch (no target; CPU only; skipped without onnxruntime).

Timings: each candidate is paired with a run of its baseline on the same input, the order of
the two alternating from round to round (A B, B A, ...); the ratio is the median of per-pair
ratios, the times are medians. Everything runs under `torch.inference_mode`, with
`torch.set_num_threads` fixed, and `torch.cuda.synchronize` around every timed call on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from lake_interp.model.hook_sites import block_hook_names
from lake_interp.model.precision import PRECISION_NAMES, PRECISIONS

TARGETS = {"hooked_vs_open_clip": 1.05, "hooked_cache4_vs_open_clip": 1.15, "lake_score_vs_encode": 1.25,
           "attribution_vs_forward": 3.0}
REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS_SCRIPT = REPO_ROOT / "benchmarks" / "metrics_bench.py"


# ------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> Optional[int]:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def machine_info(device: torch.device) -> dict:
    import open_clip

    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "open_clip": getattr(open_clip, "__version__", "?"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


# ------------------------------------------------------------------------------------ memory
def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            return float("nan")


def _maxrss_mb(ru_maxrss: int) -> float:
    return ru_maxrss / 2**20 if sys.platform == "darwin" else ru_maxrss / 1024  # bytes on macOS, KiB on Linux


class RSSSampler:
    """Samples this process's RSS in a thread (every `interval` s) between start() and stop()."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = self.baseline = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            self._stop.wait(self.interval)

    def start(self) -> "RSSSampler":
        self.peak = self.baseline = _rss_mb()
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        return self.peak


def own_peak_rss_mb() -> float:
    """This process's peak RSS since its exec: VmHWM (Linux). Not ru_maxrss, which a child started
    from a large parent inherits (fork copies the RSS counters; exec keeps the old high-water mark)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _print_own_peak() -> None:
    print(f"CHILD_PEAK_RSS_MB {own_peak_rss_mb():.1f}", flush=True)


def run_child(cmd: Sequence[str], timeout: Optional[float] = None) -> dict:
    """Run `python -m lake_interp.perf` in a subprocess: its output, wall time and its own peak RSS
    (printed by the child at exit: `CHILD_PEAK_RSS_MB x`)."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stdout[-3000:]}")
    peaks = re.findall(r"^CHILD_PEAK_RSS_MB ([\d.]+)$", proc.stdout, flags=re.M)
    if not peaks:
        raise RuntimeError(f"{shlex.join(cmd)} did not report its peak RSS:\n{proc.stdout[-3000:]}")
    return {"output": proc.stdout, "wall_s": wall, "peak_rss_mb": float(peaks[-1])}


def _run_script_child(script: str, args: Sequence[str]) -> int:
    """Run a script as __main__ (its own argv), then print this process's peak RSS."""
    import atexit
    import runpy

    atexit.register(_print_own_peak)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
    return 0


# ------------------------------------------------------------------------------------ timing
class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


def paired_rounds(timer: Timer, baseline: Callable, candidates: dict[str, Callable], repeats: int,
                  warmup: int) -> dict:
    """Interleaved pairs: per round and candidate, one baseline run and one candidate run, adjacent,
    their order alternating from round to round. Returns medians of the times and of the
    per-pair ratios (candidate / baseline)."""
    for _ in range(warmup):
        baseline()
        for fn in candidates.values():
            fn()
    base_t: list[float] = []
    cand_t: dict[str, list[float]] = {k: [] for k in candidates}
    ratios: dict[str, list[float]] = {k: [] for k in candidates}
    for r in range(repeats):
        for name, fn in candidates.items():
            if r % 2 == 0:
                a, b = timer(baseline), timer(fn)
            else:
                b, a = timer(fn), timer(baseline)
            base_t.append(a)
            cand_t[name].append(b)
            ratios[name].append(b / a)
    return {
        "baseline_s": statistics.median(base_t),
        "candidates_s": {k: statistics.median(v) for k, v in cand_t.items()},
        "ratios": {k: statistics.median(v) for k, v in ratios.items()},
        "ratio_spread": {k: [min(v), max(v)] for k, v in ratios.items()},
        "pairs": repeats,
    }


# ------------------------------------------------------------------------------------ models
def build_models(name: str, device: torch.device, dtype: torch.dtype):
    """open_clip model with random weights (seeded) and the HookedCLIP copy of the same weights."""
    import open_clip

    import lake_interp.model.loading  # noqa: F401  (registers lake-tiny with open_clip)
    from lake_interp.model import HookedCLIP

    precision = PRECISION_NAMES[dtype]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oc = open_clip.create_model(name, pretrained=None, precision=precision, device=device).eval()
        model = HookedCLIP.from_open_clip(oc, name)
    model.random_weights = True
    return oc, model


def _hooked_only(name: str, device: torch.device, precision: str):
    """The model as `lake-interp benchmark` loads it (random weights): no open_clip copy kept alive."""
    from lake_interp.model import HookedCLIP

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HookedCLIP.from_pretrained(name, None, device=device, precision=precision)


def resid_hooks(model, n: int = 4) -> list[str]:
    """hook_resid_post of n blocks spread over the depth (LAKE's default 0.25/0.5/0.75/1.0)."""
    L = model.cfg.vision.n_layers
    layers = sorted({max(0, round((i + 1) / n * L) - 1) for i in range(n)})
    return block_hook_names(["hook_resid_post"], layers, "visual")


def lake_config(model, **changes):
    from lake_interp.lake import LakeConfig

    from lake_interp.lake.config import default_k_neurons

    return LakeConfig(k_neurons=default_k_neurons(model.cfg.vision.d_model), **changes)  # 100 for ViT-B, 16 for lake-tiny


# ------------------------------------------------------------------------------------ sections
def bench_encode(oc, model, x, timer, repeats, warmup) -> dict:
    hooks = resid_hooks(model)
    with torch.inference_mode():
        res = paired_rounds(timer, lambda: oc.encode_image(x), {
            "hooked": lambda: model.encode_image(x),
            "hooked_cache4": lambda: model.run_with_cache(x, names_filter=hooks),
        }, repeats, warmup)
    return {
        "batch": x.shape[0],
        "open_clip_s": res["baseline_s"],
        "hooked_s": res["candidates_s"]["hooked"],
        "hooked_cache4_s": res["candidates_s"]["hooked_cache4"],
        "ratio_hooked": res["ratios"]["hooked"],
        "ratio_hooked_cache4": res["ratios"]["hooked_cache4"],
        "ratio_spread": res["ratio_spread"],
        "cached_hooks": hooks,
        "pairs": res["pairs"],
    }


def bench_lake_score(oc, model, x, timer, repeats, warmup) -> dict:
    from lake_interp.lake import Lake

    g = torch.Generator().manual_seed(1)
    support = torch.randn(1, *x.shape[1:], generator=g).to(x.device, x.dtype)
    lake = Lake(model, lake_config(model), class_name="bottle").fit(support)
    with torch.inference_mode():
        res = paired_rounds(timer, lambda: oc.encode_image(x), {"score": lambda: lake.score(x)}, repeats, warmup)
    b = x.shape[0]
    return {
        "batch": b,
        "encode_per_image_s": res["baseline_s"] / b,
        "score_per_image_s": res["candidates_s"]["score"] / b,
        "ratio": res["ratios"]["score"],
        "ratio_spread": res["ratio_spread"]["score"],
        "k_neurons": lake.config.k_neurons,
        "pairs": res["pairs"],
    }


def bench_fit(model, timer, shots: Sequence[int], repeats: int) -> dict:
    from lake_interp.lake import Lake

    size = model.image_size
    lake = Lake(model, lake_config(model), class_name="bottle")
    text_s = statistics.median(timer(lake.compute_text_features) for _ in range(max(1, min(repeats, 2))))
    out = {"text_features_s": text_s, "k": {}}
    for k in shots:
        g = torch.Generator().manual_seed(k)
        support = torch.randn(k, 3, size, size, generator=g).to(model.device, model.dtype)
        times, lake = [], None
        for _ in range(repeats):
            lake = Lake(model, lake_config(model), class_name="bottle")
            times.append(timer(lambda: lake.fit(support)))
        bank_bytes = sum(b.numel() * b.element_size() for b in lake.banks.values())
        out["k"][str(k)] = {
            "fit_s": statistics.median(times),
            "bank_bytes": bank_bytes,
            "bank_rows": next(iter(lake.banks.values())).shape[0],
            "bank_hooks": len(lake.banks),
        }
    return out


def _random_images(n: int, size: int, seed: int = 0):
    """A generator of n random uint8 RGB images (numpy [size, size, 3]): never more than one held."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def bench_top_patches(model, n_images: int, batch: int, device: torch.device) -> dict:
    try:
        from lake_interp.interp import top_activating_patches
    except ImportError as e:
        return {"skipped": f"not available ({e})"}
    hooks = resid_hooks(model)
    neurons = [(h, c) for h in hooks for c in range(8)]
    seen = {"n": 0, "half_peak": None}
    sampler = RSSSampler()

    def images():
        for i, im in enumerate(_random_images(n_images, model.image_size)):
            if i == n_images // 2:
                seen["half_peak"] = sampler.peak
            seen["n"] += 1
            yield im

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gpu_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    timer = Timer(device)
    sampler.start()
    try:
        t = timer(lambda: seen.update(result=top_activating_patches(model, images(), neurons, n=9, batch_size=batch)))
    finally:
        peak = sampler.stop()
    result = seen["result"]
    half = seen["half_peak"] if seen["half_peak"] is not None else peak
    out = {
        "images": result.n_images,
        "neurons": len(neurons),
        "n": 9,
        "batch": batch,
        "seconds": t,
        "images_per_s": result.n_images / t,
        "rss_before_mb": sampler.baseline,
        "peak_rss_mb": peak,
        "peak_rss_growth_mb": peak - sampler.baseline,
        "growth_second_half_mb": max(0.0, peak - half),
    }
    if device.type == "cuda":
        out["gpu_peak_mb"] = (torch.cuda.max_memory_allocated(device) - gpu_before) / 2**20
    return out


def bench_attribution(model, timer, repeats, warmup) -> dict:
    """Attribution of one image's score to every unit vs one forward pass (encode_image) of it."""
    from lake_interp.interp.attribution import all_units, attribute
    from lake_interp.interp.readout import make_readout
    from lake_interp.lake import Lake

    size, device = model.image_size, model.device
    g = torch.Generator().manual_seed(2)
    support = torch.randn(1, 3, size, size, generator=g).to(device, model.dtype)
    x = torch.randn(1, 3, size, size, generator=g).to(device, model.dtype)
    lake = Lake(model, lake_config(model), class_name="bottle").fit(support)
    units = all_units(model)
    first = next(iter(units))
    reader = make_readout(lake, [(first, 0)], support, "downstream").detector  # fitted once, outside the timing
    meta = {}

    def forward():
        with torch.inference_mode():
            model.encode_image(x)

    def attribution():
        meta.update(attribute(lake, x, "score", readout=reader, n_maps=0).meta)

    res = paired_rounds(timer, forward, {"attribute": attribution}, repeats, warmup)
    return {"units": sum(len(v) for v in units.values()), "hooks": len(units),
            "forward_s": res["baseline_s"], "attribute_s": res["candidates_s"]["attribute"],
            "ratio": res["ratios"]["attribute"], "ratio_spread": res["ratio_spread"]["attribute"],
            "passes": {"forward": meta["cost"]["forward_passes"], "backward": meta["cost"]["backward_passes"]},
            "pairs": res["pairs"]}


def bench_onnx(model, x, timer, repeats, warmup, threads: int) -> dict:
    """Per-image time of the exported graph in onnxruntime vs `Lake.score` in torch (same detector, batch)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return {"skipped": "CPU and fp32 only (the exported graph is fp32, run by onnxruntime's CPU provider)"}
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"skipped": f"onnxruntime not installed ({e}); pip install 'lake_interp[deploy]'"}
    import io

    from lake_interp.lake import Lake
    from lake_interp.lake.onnx_export import export_graph

    g = torch.Generator().manual_seed(1)
    support = torch.randn(1, *x.shape[1:], generator=g)
    lake = Lake(model, lake_config(model), class_name="bottle").fit(support)
    buf = io.BytesIO()
    t0 = time.perf_counter()
    export_graph(lake, buf)
    export_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    with torch.inference_mode():
        res = paired_rounds(timer, lambda: lake.score(x), {"onnxruntime": lambda: sess.run(None, feed)}, repeats, warmup)
    b = x.shape[0]
    return {
        "batch": b,
        "torch_per_image_s": res["baseline_s"] / b,
        "onnxruntime_per_image_s": res["candidates_s"]["onnxruntime"] / b,
        "ratio": res["ratios"]["onnxruntime"],
        "ratio_spread": res["ratio_spread"]["onnxruntime"],
        "export_s": export_s,
        "graph_mb": len(buf.getvalue()) / 2**20,
        "onnxruntime": ort.__version__,
        "k_neurons": lake.config.k_neurons,
        "pairs": res["pairs"],
    }


def bench_metrics(n: int, size: int) -> dict:
    if not METRICS_SCRIPT.is_file():
        return {"skipped": f"{METRICS_SCRIPT} not found (run from a source checkout)"}
    run = run_child([sys.executable, "-m", "lake_interp.perf", "_run_script", str(METRICS_SCRIPT),
                     "--n", str(n), "--size", str(size)])
    m = re.search(r"pixel_metrics time: ([\d.]+) s", run["output"])
    if not m:
        raise RuntimeError(f"could not read the time from metrics_bench.py output:\n{run['output']}")
    return {"n": n, "size": size, "pixels_millions": n * size * size / 1e6, "pixel_metrics_s": float(m.group(1)),
            "process_wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"]}


def bench_lake_run(model_name: str, device: str, dtype: str, threads: int, image_size: int, shots, seeds) -> dict:
    spec = {"model": model_name, "device": device, "dtype": dtype, "threads": threads, "image_size": image_size,
            "shots": list(shots), "seeds": list(seeds), "category": "disc"}
    run = run_child([sys.executable, "-m", "lake_interp.perf", "_lake_run", json.dumps(spec)])
    line = [ln for ln in run["output"].splitlines() if ln.startswith("LAKE_RUN ")]
    if not line:
        raise RuntimeError(f"the LAKE benchmark subprocess printed no result:\n{run['output'][-3000:]}")
    child = json.loads(line[-1][len("LAKE_RUN "):])
    return {**child, "process_wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"]}


def _lake_run_child(spec: dict) -> int:
    """In a fresh process: synthetic category, model, run_benchmark (all methods). Prints LAKE_RUN {json}."""
    from lake_interp.benchmark import BenchmarkSpec, run_benchmark
    from lake_interp.data import make_synthetic_dataset

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(Path(tmp) / "data", categories=[spec["category"]], seed=0,
                                      image_size=spec["image_size"])
        model = _hooked_only(spec["model"], device, spec["dtype"])
        bench = BenchmarkSpec(dataset="mvtec", root=str(root), model=spec["model"], pretrained=None,
                              categories=[spec["category"]], shots=spec["shots"], seeds=spec["seeds"],
                              config={"k_neurons": lake_config(model).k_neurons})
        t0 = time.perf_counter()
        rows = run_benchmark(model, bench, Path(tmp) / "out", progress=False)
        dt = time.perf_counter() - t0
    n_test = 4 + 5 * 2  # make_synthetic_dataset defaults: 4 good + 5 defects x 2
    gpu = {"gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}
    print("LAKE_RUN " + json.dumps({"category": spec["category"], "image_size": spec["image_size"],
                                    "test_images": n_test, "shots": spec["shots"], "seeds": spec["seeds"],
                                    "rows": len(rows), "run_benchmark_s": dt, "methods": list(bench.methods), **gpu}))
    _print_own_peak()
    return 0


# ------------------------------------------------------------------------------------ report
def _status(value: float, target: float, quick: bool = False) -> str:
    status = "ok" if value <= target else "MISSED"
    # the targets are for a full-size model: on lake-tiny Python overhead per hook point dominates
    return f"{status} (informative only with --quick)" if quick else status


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(section, measurement, value, target/status) rows."""
    rows = []
    quick = results["settings"].get("quick", False)
    e = results.get("encode_image")
    if e:
        b = e["batch"]
        rows += [
            ("encode_image", f"open_clip encode_image (batch {b})", f"{e['open_clip_s'] * 1e3:.1f} ms", ""),
            ("encode_image", "HookedCLIP encode_image, no hooks", f"{e['hooked_s'] * 1e3:.1f} ms", ""),
            ("encode_image", "HookedCLIP run_with_cache, 4 x resid_post", f"{e['hooked_cache4_s'] * 1e3:.1f} ms", ""),
            ("encode_image", "ratio hooked / open_clip", f"{e['ratio_hooked']:.3f}",
             f"<= {TARGETS['hooked_vs_open_clip']} {_status(e['ratio_hooked'], TARGETS['hooked_vs_open_clip'], quick)}"),
            ("encode_image", "ratio cached (4 layers) / open_clip", f"{e['ratio_hooked_cache4']:.3f}",
             f"<= {TARGETS['hooked_cache4_vs_open_clip']} "
             f"{_status(e['ratio_hooked_cache4'], TARGETS['hooked_cache4_vs_open_clip'], quick)}"),
        ]
    s = results.get("lake_score")
    if s:
        rows += [
            ("lake_score", "open_clip encode_image per image", f"{s['encode_per_image_s'] * 1e3:.1f} ms", ""),
            ("lake_score", f"Lake.score per image (batch {s['batch']})", f"{s['score_per_image_s'] * 1e3:.1f} ms", ""),
            ("lake_score", "ratio score / encode_image", f"{s['ratio']:.3f}",
             f"<= {TARGETS['lake_score_vs_encode']} {_status(s['ratio'], TARGETS['lake_score_vs_encode'], quick)}"),
        ]
    f = results.get("fit")
    if f:
        rows.append(("fit", "text features (once per category, inside fit)", f"{f['text_features_s']:.2f} s", ""))
        for k, v in f["k"].items():
            rows.append(("fit", f"Lake.fit k={k}", f"{v['fit_s']:.2f} s",
                         f"bank {v['bank_bytes'] / 2**10:.0f} KiB ({v['bank_hooks']} x {v['bank_rows']} rows)"))
    t = results.get("top_patches")
    if t:
        if "skipped" in t:
            rows.append(("top_patches", "top_activating_patches", "skipped", t["skipped"]))
        else:
            rows += [
                ("top_patches", f"{t['images']} images, {t['neurons']} neurons, top {t['n']}",
                 f"{t['images_per_s']:.1f} img/s", f"{t['seconds']:.1f} s"),
                ("top_patches", "peak RSS (growth over start)", f"{t['peak_rss_mb']:.0f} MB",
                 f"+{t['peak_rss_growth_mb']:.0f} MB, +{t['growth_second_half_mb']:.0f} MB in 2nd half"),
            ]
            if "gpu_peak_mb" in t:
                rows.append(("top_patches", "GPU peak allocated", f"{t['gpu_peak_mb']:.0f} MB", ""))
    m = results.get("metrics")
    if m:
        if "skipped" in m:
            rows.append(("metrics", "pixel_metrics", "skipped", m["skipped"]))
        else:
            rows += [
                ("metrics", f"pixel_metrics, {m['n']} maps {m['size']}x{m['size']}", f"{m['pixel_metrics_s']:.2f} s", ""),
                ("metrics", "peak RSS of that process", f"{m['peak_rss_mb']:.0f} MB", ""),
            ]
    r = results.get("lake_benchmark")
    if r:
        rows += [
            ("lake_benchmark", f"run_benchmark, 1 synthetic category ({r['test_images']} test, "
             f"shots {r['shots']}, seeds {r['seeds']}, methods {', '.join(r.get('methods', []))})",
             f"{r['run_benchmark_s']:.1f} s",
             f"process {r['process_wall_s']:.1f} s"),
            ("lake_benchmark", "peak RSS of that process", f"{r['peak_rss_mb']:.0f} MB", ""),
        ]
        if "gpu_peak_mb" in r:
            rows.append(("lake_benchmark", "GPU peak allocated in that process", f"{r['gpu_peak_mb']:.0f} MB", ""))
    a = results.get("attribution")
    if a:
        rows += [
            ("attribution", "encode_image, 1 image", f"{a['forward_s'] * 1e3:.1f} ms", ""),
            ("attribution", f"attribute, 1 image, all {a['units']} units ({a['hooks']} hooks)",
             f"{a['attribute_s'] * 1e3:.1f} ms", f"{a['passes']['forward']} forward + {a['passes']['backward']} backward"),
            ("attribution", "ratio attribute / encode_image", f"{a['ratio']:.3f}",
             f"<= {TARGETS['attribution_vs_forward']} {_status(a['ratio'], TARGETS['attribution_vs_forward'], quick)}"),
        ]
    o = results.get("onnx")
    if o:
        if "skipped" in o:
            rows.append(("onnx", "onnxruntime vs torch", "skipped", o["skipped"]))
        else:
            rows += [
                ("onnx", f"Lake.score (torch) per image (batch {o['batch']})", f"{o['torch_per_image_s'] * 1e3:.1f} ms", ""),
                ("onnx", "exported graph (onnxruntime CPU) per image", f"{o['onnxruntime_per_image_s'] * 1e3:.1f} ms",
                 f"graph {o['graph_mb']:.0f} MB, export {o['export_s']:.1f} s"),
                ("onnx", "ratio onnxruntime / torch", f"{o['ratio']:.3f}", "informative (no target)"),
            ]
    return rows


def format_table(rows) -> str:
    header = ("section", "measurement", "value", "target / note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def format_header(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    lines = [f"machine: {m['cpu']}, {m['logical_cores']} logical cores"
             + (f" ({m['physical_cores']} physical)" if m.get("physical_cores") else "")
             + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if m.get("gpu") else ""),
             f"torch {m['torch']}, open_clip {m['open_clip']}, python {m['python']}, torch threads {m['torch_threads']}",
             f"model {s['model']} (random init), device {s['device']}, dtype {s['dtype']}, batch {s['batch']}, "
             f"{s['image_size']} px, repeats {s['repeats']} (medians; ratios = median of per-pair ratios)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by benchmarks/run.py and `lake-interp bench`)."""
    p.add_argument("--quick", action="store_true",
                   help="tiny model lake-tiny, few repeats, small inputs (smoke test, under a minute)")
    p.add_argument("--model", help="open_clip model name (default ViT-B-16; lake-tiny with --quick)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, help="timed pairs per measurement (default 5; 3 with --quick)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: physical cores)")
    p.add_argument("--top-images", type=int, help="images streamed by top_activating_patches (default 1000)")
    p.add_argument("--metrics-n", type=int, help="maps for the metrics benchmark (default 1725)")
    p.add_argument("--metrics-size", type=int, help="map side for the metrics benchmark (default 256)")
    p.add_argument("--skip", nargs="+", default=[],
                   choices=["encode_image", "lake_score", "fit", "top_patches", "metrics", "lake_benchmark",
                            "attribution", "onnx"])
    p.add_argument("--json", type=Path, help="write every measurement to this JSON file")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_lake_run"]:
        return _lake_run_child(json.loads(argv[1]))
    if argv[:1] == ["_run_script"]:
        return _run_script_child(argv[1], argv[2:])
    return run(build_parser().parse_args(argv), argv)


def run(args: argparse.Namespace, argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark with parsed options (see add_arguments); print the table, write JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = args.quick
    model_name = args.model or ("lake-tiny" if quick else "ViT-B-16")
    repeats = args.repeats or (3 if quick else 5)
    warmup = 1 if quick else 2
    top_images = args.top_images or (200 if quick else 1000)
    metrics_n = args.metrics_n or (200 if quick else 1725)
    metrics_size = args.metrics_size or (64 if quick else 256)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("lake-interp bench: error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    problem = check_json_target(args.json) if args.json else None
    for name in ("batch", "repeats", "threads", "top_images", "metrics_n", "metrics_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            problem = f"--{name.replace('_', '-')} must be a positive integer, got {value}"
    if problem:
        print(f"lake-interp bench: error: {problem}", file=sys.stderr)
        return 2
    device, dtype = torch.device(args.device), PRECISIONS[args.dtype]
    threads = args.threads or physical_cores() or os.cpu_count() or 1
    torch.set_num_threads(threads)

    print("command:", shlex.join([Path(sys.argv[0]).name, *argv]), flush=True)
    oc, model = build_models(model_name, device, dtype)
    size = model.image_size
    results: dict = {
        "machine": machine_info(device),
        "settings": {"model": model_name, "device": args.device, "dtype": args.dtype, "batch": args.batch,
                     "image_size": size, "repeats": repeats, "warmup": warmup, "quick": quick, "threads": threads,
                     "command": argv},
        "targets": TARGETS,
    }
    print(format_header(results), flush=True)
    timer = Timer(device)
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)

    sections = [
        ("encode_image", lambda: bench_encode(oc, model, x, timer, repeats, warmup)),
        ("lake_score", lambda: bench_lake_score(oc, model, x, timer, repeats, warmup)),
        ("fit", lambda: bench_fit(model, timer, (1, 4, 16), max(1, min(repeats, 3)))),
        ("top_patches", lambda: bench_top_patches(model, top_images, args.batch, device)),
        ("metrics", lambda: bench_metrics(metrics_n, metrics_size)),
        ("lake_benchmark", lambda: bench_lake_run(model_name, args.device, args.dtype, threads,
                                                  size if quick else 256, (1,) if quick else (1, 2, 4),
                                                  (0,) if quick else (0, 1, 2))),
        ("attribution", lambda: bench_attribution(model, timer, repeats, warmup)),
        ("onnx", lambda: bench_onnx(model, x, timer, repeats, warmup, threads)),
    ]
    for name, fn in sections:
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        results[name] = fn()
        print(f"[{name}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    e, s, a = results.get("encode_image"), results.get("lake_score"), results.get("attribution")
    results["targets_met"] = {
        k: v for k, v in {
            "hooked_vs_open_clip": e and e["ratio_hooked"] <= TARGETS["hooked_vs_open_clip"],
            "hooked_cache4_vs_open_clip": e and e["ratio_hooked_cache4"] <= TARGETS["hooked_cache4_vs_open_clip"],
            "lake_score_vs_encode": s and s["ratio"] <= TARGETS["lake_score_vs_encode"],
            "attribution_vs_forward": a and a["ratio"] <= TARGETS["attribution_vs_forward"],
        }.items() if v is not None
    }
    print()
    print(format_table(table_rows(results)))
    if args.json:
        from lake_interp.outputs import write_file_atomic

        problem = check_json_target(args.json)  # again: it may have appeared while the benchmark ran
        if problem:
            print(f"lake-interp bench: error: {problem}", file=sys.stderr)
            return 2
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(args.json, json.dumps(results, indent=1).encode())  # temporary file + rename
        print(f"\nwrote {args.json}")
    return 0


def check_json_target(path: Path) -> Optional[str]:
    """Why ``--json path`` may not be written (None: it may): a folder, or a file that is not an
    earlier result of this benchmark (only those are replaced)."""
    path = Path(path)
    if path.is_dir():
        return f"--json {path} is a folder; give a file name"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            old = None
        if not (isinstance(old, dict) and {"machine", "settings", "targets"} <= set(old)):
            return (f"--json {path} exists and is not a result of lake-interp bench: refusing to overwrite it; "
                    "choose another file")
    return None


if __name__ == "__main__":
    sys.exit(main())
