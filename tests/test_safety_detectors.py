"""Safety, class "detectors": lake.json is tied to its tensor file and its neuron indices are checked.

Every load error names the file and the field; loading never changes the folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pytest

from lake_interp.data import MVTecAD, make_synthetic_dataset
from lake_interp.lake import Lake, LakeConfig


def state(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc"], seed=4, image_size=64,
                                  n_train=3, n_test_good=1, n_test_defect=1, defects=["hole"])


@pytest.fixture(scope="module")
def saved(root, tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("dets")
    train = MVTecAD(root, "disc", "train")
    Lake(tiny_model, LakeConfig(k_neurons=4), "disc").fit(train.few_shot(1, 0)).save(base / "a")
    Lake(tiny_model, LakeConfig(k_neurons=4), "disc").fit(train.few_shot(2, 1)).save(base / "b")
    return base


def copy(saved, name, tmp_path):
    dest = tmp_path / name
    shutil.copytree(saved / name, dest)
    return dest


def edit_meta(det, fn):
    meta = json.loads((det / "lake.json").read_text())
    fn(meta)
    (det / "lake.json").write_text(json.dumps(meta))


class TestDetectorConsistency:
    def test_intact_detector_records_and_loads(self, saved, tiny_model, tmp_path):
        det = copy(saved, "a", tmp_path)
        meta = json.loads((det / "lake.json").read_text())
        rec = meta["tensors"]
        assert rec["sha256"] == hashlib.sha256((det / "tensors.safetensors").read_bytes()).hexdigest()
        from safetensors.torch import load_file

        assert rec["shapes"] == {k: list(v.shape) for k, v in load_file(str(det / "tensors.safetensors")).items()}
        before = state(det)
        lake = Lake.load(det, tiny_model)
        assert {h: len(i) for h, i in lake.neurons.indices.items()} == {h: 4 for h in lake.neurons.indices}
        assert state(det) == before

    def test_tensors_of_another_detector_are_refused(self, saved, tiny_model, tmp_path):
        det = copy(saved, "a", tmp_path)
        shutil.copy(saved / "b" / "tensors.safetensors", det / "tensors.safetensors")
        before = state(det)
        with pytest.raises(ValueError, match=r"tensors\.safetensors is not the tensor file of .*lake\.json.*'tensors\.sha256'"):
            Lake.load(det, tiny_model)
        assert state(det) == before

    def test_reordered_indices_are_refused(self, saved, tiny_model, tmp_path):
        det = copy(saved, "a", tmp_path)
        hook = next(iter(json.loads((det / "lake.json").read_text())["neurons"]["neurons"]))
        edit_meta(det, lambda m: m["neurons"]["neurons"][hook]["indices"].reverse())
        with pytest.raises(ValueError, match=r"lake\.json: field 'neurons'.*'tensors\.neurons_sha256'"):
            Lake.load(det, tiny_model)

    def test_recorded_shapes_are_checked(self, saved, tiny_model, tmp_path):
        det = copy(saved, "a", tmp_path)
        edit_meta(det, lambda m: m["tensors"]["shapes"].update({"text_features": [1, 1]}))
        with pytest.raises(ValueError, match=r"tensors \['text_features'\] do not have the shapes.*'tensors\.shapes'"):
            Lake.load(det, tiny_model)

    @pytest.mark.parametrize("change, message", [
        (lambda idx: idx.__setitem__(1, idx[0]), "listed twice"),
        (lambda idx: idx.__setitem__(0, -1), "outside the hook's width"),
        (lambda idx: idx.__setitem__(0, 10_000), "outside the hook's width"),
        (lambda idx: idx.__setitem__(0, 1.5), "must be a list of integer channel indices"),
        (lambda idx: idx.__setitem__(0, True), "must be a list of integer channel indices"),
        (lambda idx: idx.pop(), "is 4 wide but"),
    ])
    def test_bad_indices_without_the_tensor_record(self, saved, tiny_model, tmp_path, change, message):
        """A detector of an earlier version (no 'tensors' record): the indices are still checked."""
        det = copy(saved, "a", tmp_path)
        meta = json.loads((det / "lake.json").read_text())
        hook = next(iter(meta["neurons"]["neurons"]))

        def fn(m):
            del m["tensors"]
            idx = m["neurons"]["neurons"][hook]["indices"]
            change(idx)
            m["neurons"]["neurons"][hook]["scores"] = m["neurons"]["neurons"][hook]["scores"][:len(idx)]
        edit_meta(det, fn)
        before = state(det)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError, match=message) as e:
                Lake.load(det, tiny_model)
        assert "lake.json" in str(e.value) or "tensors.safetensors" in str(e.value)
        assert hook in str(e.value)
        assert state(det) == before

    def test_earlier_detector_without_record_warns_and_loads(self, saved, tiny_model, tmp_path):
        det = copy(saved, "a", tmp_path)
        edit_meta(det, lambda m: m.pop("tensors"))
        with pytest.warns(UserWarning, match="cannot be verified"):
            Lake.load(det, tiny_model)
