"""benchmarks/run.py --quick runs end to end and writes every section (no timing assertions:
the speed targets are reported by the script's printed ratios, not checked by unit tests)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("encode_image", "lake_score", "fit", "top_patches", "metrics", "lake_benchmark", "attribution")
NOT_MEASUREMENTS = {"seeds"}  # settings echoed in a section, not measurements (seed 0 is valid)


def _numbers(d):
    if isinstance(d, bool):
        return
    if isinstance(d, (int, float)):
        yield d
    elif isinstance(d, dict):
        for k, v in d.items():
            if k not in NOT_MEASUREMENTS:
                yield from _numbers(v)
    elif isinstance(d, (list, tuple)):
        for v in d:
            yield from _numbers(v)


def _top_patches_importable() -> bool:
    try:
        from lake_interp.interp import top_activating_patches  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "perf.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| section" in proc.stdout and "torch" in proc.stdout  # the table and the machine line
    res = json.loads(out.read_text())
    assert res["machine"]["torch"] and res["machine"]["cpu"] and res["machine"]["logical_cores"] >= 1
    assert res["settings"]["model"] == "lake-tiny" and res["settings"]["quick"] is True
    for name in SECTIONS:
        assert name in res, name
        if name == "top_patches" and "skipped" in res[name]:
            assert not _top_patches_importable(), res[name]
            continue
        nums = list(_numbers(res[name]))
        assert nums and all(v > 0 for v in nums), (name, res[name])

    e = res["encode_image"]
    for key in ("open_clip_s", "hooked_s", "hooked_cache4_s", "ratio_hooked", "ratio_hooked_cache4"):
        assert e[key] > 0, key
    assert len(e["cached_hooks"]) == 4
    s = res["lake_score"]
    assert s["score_per_image_s"] > 0 and s["encode_per_image_s"] > 0 and s["ratio"] > 0
    assert set(res["fit"]["k"]) == {"1", "4", "16"}
    banks = [res["fit"]["k"][k]["bank_bytes"] for k in ("1", "4", "16")]
    assert banks[0] < banks[1] < banks[2]  # the bank grows with the support set
    if "skipped" not in res["top_patches"]:
        assert res["top_patches"]["images"] > 0 and res["top_patches"]["images_per_s"] > 0
        assert res["top_patches"]["peak_rss_mb"] > 0
    assert res["metrics"]["pixel_metrics_s"] > 0 and res["metrics"]["peak_rss_mb"] > 0
    assert res["lake_benchmark"]["peak_rss_mb"] > 0 and res["lake_benchmark"]["rows"] > 0
    assert set(res["targets_met"]) == {"hooked_vs_open_clip", "hooked_cache4_vs_open_clip", "lake_score_vs_encode",
                                       "attribution_vs_forward"}
    a = res["attribution"]  # every residual channel and MLP neuron of lake-tiny's 4 blocks, one pass each way
    assert a["units"] == 4 * (64 + 256) and a["passes"] == {"forward": 1, "backward": 1} and a["ratio"] > 0
