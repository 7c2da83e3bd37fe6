"""ONNX export of a fitted Lake (lake_interp.lake.onnx_export, `lake-interp export`): onnxruntime's
outputs equal `Lake.score` (the reference) to 1e-4, at batch sizes other than the traced one."""

import copy
import io
import json
import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from lake_interp.cli import main  # noqa: E402
from lake_interp.lake import Lake, LakeConfig  # noqa: E402
from lake_interp.lake import onnx_export  # noqa: E402
from lake_interp.lake.onnx_export import (OUTPUT_NAMES, LakeGraph, export_graph, export_onnx,  # noqa: E402
                                          export_problems, sidecar_path)
from lake_interp.outputs import OutputError  # noqa: E402

TINY = ["--model", "lake-tiny", "--pretrained", "none", "--device", "cpu"]
TOL = 1e-4
FEW_PROMPTS = dict(normal_states=("{}", "flawless {}"), anomalous_states=("damaged {}",), templates=("a photo of a {}.",))


def images(n, size, seed):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def session(lake, batch=2):
    buf = io.BytesIO()
    export_graph(lake, buf, batch=batch)
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]), onnx.load_from_string(buf.getvalue())


def assert_equal_to_score(sess, lake, x):
    ref = lake.score(x)
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
    assert sorted(out) == sorted(OUTPUT_NAMES)
    for name in OUTPUT_NAMES:
        expected = getattr(ref, name).numpy()
        assert out[name].shape == expected.shape, name
        np.testing.assert_allclose(out[name], expected, atol=TOL, rtol=0, err_msg=name)
    return ref


def n_softmax(graph) -> int:
    """Softmax nodes of the graph: one per attention block run, one for the semantic branch."""
    return sum(node.op_type == "Softmax" for node in graph.graph.node)


CONFIGS = {
    # the paper's defaults (4 hooks over the depth, cosine, both branches, max), few prompts
    "default": dict(k_neurons=16, **FEW_PROMPTS),
    # visual only, channels of two other sites, one middle block: the graph stops after block 2 of 4
    "visual_mlp_ln1_euclid_std_topmean": dict(sites=("mlp.hook_post", "ln1.hook_normalized"), layers=(0.5,), k_neurons=8,
                                              distance="euclidean", standardize=True, text_weight=0.0,
                                              image_score="top_mean", top_fraction=0.05, sigma=1.5),
    # semantic only on block 1's tokens, no smoothing: the graph stops after block 2
    "semantic_only": dict(text_weight=1.0, semantic_layers=(1,), sigma=0.0, **FEW_PROMPTS),
    # every channel (criterion "all") of the last block, text weight 0.6, a blur as wide as the map
    # side (radius 64 on a 64 px map: replicate padding)
    "all_channels_wide_blur": dict(criterion="all", text_weight=0.6, sigma=16.0, layers=(-1,), **FEW_PROMPTS),
}
BLOCKS_RUN = {"default": 4, "visual_mlp_ln1_euclid_std_topmean": 2, "semantic_only": 2, "all_channels_wide_blur": 4}


@pytest.fixture(scope="module")
def tiny_lake(tiny_model):
    return Lake(tiny_model, LakeConfig(**CONFIGS["default"]), "bottle").fit(images(3, tiny_model.image_size, 0))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tiny_graph_equals_lake_score(tiny_model, tiny_lake, name):
    size = tiny_model.image_size
    lake = tiny_lake if name == "default" else Lake(tiny_model, LakeConfig(**CONFIGS[name]), "bottle").fit(images(3, size, 0))
    sess, graph = session(lake, batch=2)
    # batch sizes other than the traced 2; 70 x 64 patches are more query rows than nearest_distance's
    # chunk (4096): the traced graph must not hold a chunk loop fixed at the traced batch
    ref = assert_equal_to_score(sess, lake, images(70 if name == "default" else 3, size, 1))
    assert ref.image_scores.std() > 0  # the images differ: one image's result broadcast would fail
    assert_equal_to_score(sess, lake, images(1, size, 2))
    # the tower stops after the last block read: one Softmax per attention block run (+1 semantic branch)
    assert n_softmax(graph) == BLOCKS_RUN[name] + int(lake.uses_semantic)
    entered = []  # and the traced module runs no later block (not only the exporter pruning them)
    with tiny_model.hooks(fwd_hooks=[(f"visual.blocks.{b}.hook_resid_pre", lambda t, hook: entered.append(hook.name))
                                     for b in range(tiny_model.cfg.vision.n_layers)]):
        LakeGraph(lake)(images(1, size, 3))
    assert len(entered) == BLOCKS_RUN[name]


def test_vit_b16_random_graph_equals_lake_score():
    """A random ViT-B-16 (12 blocks, 224 px, K = 100): two images after tracing with one. About
    25 s on 2 CPU cores (timed below), so it runs with the suite."""
    from lake_interp.model import HookedCLIP

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedCLIP.from_pretrained("ViT-B-16", None, device="cpu")
    size = model.image_size
    lake = Lake(model, LakeConfig(k_neurons=100, **FEW_PROMPTS), "bottle").fit(images(1, size, 5))
    sess, graph = session(lake, batch=1)
    assert_equal_to_score(sess, lake, images(2, size, 6))
    assert n_softmax(graph) == 12 + 1
    print(f"ViT-B-16 export check: {time.perf_counter() - t0:.1f} s")


def test_refuses_what_it_cannot_reproduce(tiny_model, monkeypatch):
    lake = Lake(tiny_model, LakeConfig(k_neurons=8), "bottle")
    assert any("not fitted" in p for p in export_problems(lake))
    with pytest.raises(ValueError, match="not fitted"):
        export_graph(lake, io.BytesIO())
    half = Lake(copy.deepcopy(tiny_model).half(), LakeConfig(k_neurons=8), "bottle")
    assert any("model dtype fp16" in p for p in export_problems(half))
    fitted = Lake(tiny_model, LakeConfig(k_neurons=8, **FEW_PROMPTS), "bottle").fit(images(1, tiny_model.image_size, 0))
    assert export_problems(fitted) == []
    monkeypatch.setattr(onnx_export, "SUPPORTED_FAMILIES", ("timm_vit",))  # as if lake-tiny's tower were not checked
    with pytest.raises(ValueError, match="vision tower family 'open_clip'"):
        export_graph(fitted, io.BytesIO())


def test_export_onnx_writes_graph_and_sidecar_through_output_policy(tiny_model, tiny_lake, tmp_path):
    size, lake = tiny_model.image_size, tiny_lake
    out = tmp_path / "det.onnx"
    export_onnx(lake, out)
    info = json.loads(sidecar_path(out).read_text())
    assert info["hooks"] == [f"visual.blocks.{b}.hook_resid_post" for b in range(4)]  # 0.25 .. 1.0 of 4 blocks
    assert info["neurons"] == {h: lake.neurons.indices[h].tolist() for h in lake.hooks}
    assert info["input"]["shape"] == ["batch", 3, size, size]
    assert info["preprocessing"]["mean"] == list(tiny_model.preprocess.mean)
    assert info["preprocessing"]["std"] == list(tiny_model.preprocess.std)
    assert info["threshold"] is None
    manifest = (tmp_path / "lake_interp_manifest.jsonl").read_text()
    assert "det.onnx" in manifest and "det.onnx.json" in manifest
    export_onnx(lake, out)  # its own earlier output is replaced
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert_equal_to_score(sess, lake, images(3, size, 8))
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's file")
    with pytest.raises(OutputError, match="did not write"):
        export_onnx(lake, mine)
    assert mine.read_bytes() == b"the user's file" and not sidecar_path(mine).exists()
    with pytest.raises(OutputError, match="ending in .onnx"):
        export_onnx(lake, tmp_path / "model.bin")


@pytest.fixture(scope="module")
def normal_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("normal")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_cli_fit_export_onnxruntime(normal_dir, tmp_path, capsys, monkeypatch):
    from lake_interp import cli
    from lake_interp.lake.inputs import to_batch

    det, out = tmp_path / "det", tmp_path / "exported" / "model.onnx"
    assert main(["fit", "--normal", str(normal_dir), "--class-name", "tile", "--out", str(det), "--k-neurons", "8",
                 "--config", str(_write(tmp_path / "c.json", FEW_PROMPTS)), *TINY]) == 0
    assert main(["export", "--detector", str(det), "--format", "onnx", "--out", str(out)]) == 0
    assert "model.preprocess" in capsys.readouterr().out
    info = json.loads(sidecar_path(out).read_text())
    meta = json.loads((det / "lake.json").read_text())
    assert info["model"]["name"] == "lake-tiny" and info["class_name"] == "tile"
    assert info["neurons"] == {h: v["indices"] for h, v in meta["neurons"]["neurons"].items()}
    assert info["threshold"] == meta.get("threshold")  # the detector's stored threshold, where it has one

    model = cli.load_model("lake-tiny", "none", "cpu")
    lake = Lake.load(det, model)
    paths = sorted(normal_dir.glob("*.png"))
    x = to_batch([Image.open(p) for p in paths], model)  # model.preprocess, as the sidecar says
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert_equal_to_score(sess, lake, x)
    np.testing.assert_allclose(sess.run(["image_scores"], {"images": x.numpy()})[0], lake.score(paths).image_scores.numpy(),
                               atol=TOL, rtol=0)

    # refused before the model loads: a file the user has, an unknown detector folder
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(cli, "load_model", no_load)
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"keep me")
    assert main(["export", "--detector", str(det), "--out", str(theirs)]) == 2
    assert "theirs.onnx" in capsys.readouterr().err and theirs.read_bytes() == b"keep me"
    assert main(["export", "--detector", str(tmp_path / "nope"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "lake.json" in capsys.readouterr().err
    assert main(["export", "--detector", str(det), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    half = tmp_path / "det16"
    shutil.copytree(det, half)
    meta["model"]["dtype"] = "fp16"
    (half / "lake.json").write_text(json.dumps(meta))
    assert main(["export", "--detector", str(half), "--out", str(tmp_path / "h.onnx")]) == 2
    assert "fitted in fp16" in capsys.readouterr().err


def test_perf_section_times_onnxruntime_against_torch(tiny_model):
    from lake_interp import perf

    x = images(2, tiny_model.image_size, 9)
    res = perf.bench_onnx(tiny_model, x, perf.Timer(x.device), repeats=1, warmup=0, threads=1)
    assert res["batch"] == 2 and res["torch_per_image_s"] > 0 and res["onnxruntime_per_image_s"] > 0
    assert res["ratio"] == pytest.approx(res["onnxruntime_per_image_s"] / res["torch_per_image_s"])  # one pair
    rows = perf.table_rows({"settings": {}, "onnx": res})
    assert [r[1] for r in rows][-1] == "ratio onnxruntime / torch"


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path
