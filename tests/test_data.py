"""Dataset loaders on tiny fake trees written per test (no real data needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lake_interp.data import (
    BTAD, DATASETS, FolderDataset, MVTecAD, MVTecLOCO, Sample, VisA, load_dataset, load_mask, load_rgb,
)
from lake_interp.data.io import to_rgb
from lake_interp.data.sample import DatasetError

S = 16  # image side


def img(path: Path, value: int = 100, size: int = S, mode: str = "RGB") -> Path:
    """Write a uniform image (the value encodes which file it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), (value, 255 - value, 7) if mode == "RGB" else value).save(path)
    return path


def mask(path: Path, box: tuple[int, int, int, int], value: int = 255, size: int = S) -> np.ndarray:
    """Write a mask with `value` inside box=(y0, y1, x0, x1); return the expected bool mask."""
    a = np.zeros((size, size), np.uint8)
    a[box[0]:box[1], box[2]:box[3]] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return a > 0


def by_name(ds) -> dict[str, Sample]:
    return {f"{s.path.parent.name}/{s.path.name}": s for s in ds}


# --- MVTec-AD ---------------------------------------------------------------------------------


@pytest.fixture
def mvtec(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    cat = tmp_path / "bottle"
    for i in range(5):
        img(cat / "train" / "good" / f"{i:03d}.png", 10 + i)
    for i in range(2):
        img(cat / "test" / "good" / f"{i:03d}.png", 50 + i)
    img(cat / "test" / "broken" / "000.png", 80)
    img(cat / "test" / "broken" / "001.png", 81)
    img(cat / "test" / "crack" / "000.png", 90)
    gt = cat / "ground_truth"
    masks = {
        "broken/000.png": mask(gt / "broken" / "000_mask.png", (0, 4, 0, 4)),
        "broken/001.png": mask(gt / "broken" / "001_mask.png", (5, 9, 2, 3), value=128),
        "crack/000.png": mask(gt / "crack" / "000_mask.png", (10, 16, 10, 16), value=1),
    }
    (tmp_path / "docs").mkdir()  # not a category
    (tmp_path / "license.txt").write_text("x")
    return tmp_path, masks


def test_mvtec_counts_labels_defects_masks(mvtec):
    root, masks = mvtec
    test = MVTecAD(root, category="bottle", split="test")
    assert len(test) == 5
    assert test.labels.tolist() == [1, 1, 1, 0, 0]  # sorted by path: broken, crack, good
    assert test.defects == ["broken", "broken", "crack", "good", "good"]
    samples = by_name(test)
    for name, expected in masks.items():
        s = samples[name]
        assert s.label == 1 and s.category == "bottle" and s.mask.dtype == bool
        assert np.array_equal(s.mask, expected)  # 128 and 1 binarised to True
    good = samples["good/000.png"]
    assert good.mask is None and good.label == 0 and good.defect == "good"
    assert good.image.mode == "RGB" and good.image.size == (S, S)
    assert good.image.getpixel((0, 0)) == (50, 205, 7)
    assert len(MVTecAD(root, "bottle", "train")) == 5
    assert MVTecAD.categories(root) == ["bottle"]
    assert [s.path for s in test] == test.paths
    assert [s.path for s in test[3:]] == test.paths[3:] and test[-1].path == test.paths[-1]


def test_mvtec_missing_mask_errors_names_image(mvtec):
    root, _ = mvtec
    (root / "bottle" / "ground_truth" / "crack" / "000_mask.png").unlink()
    image = root / "bottle" / "test" / "crack" / "000.png"
    with pytest.raises(DatasetError, match="no mask") as e:
        MVTecAD(root, "bottle", "test")
    assert str(image) in str(e.value)
    relaxed = MVTecAD(root, "bottle", "test", require_masks=False)
    assert by_name(relaxed)["crack/000.png"].mask is None


def test_missing_folders_unknown_category_and_split(mvtec, tmp_path):
    root, _ = mvtec
    with pytest.raises(DatasetError, match="unknown category 'cable'") as e:
        MVTecAD(root, "cable", "test")
    assert "bottle" in str(e.value) and str(root / "cable") in str(e.value)
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        MVTecAD(root, "bottle", "val")
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere")):
        MVTecAD.categories(tmp_path / "nowhere")
    (root / "bottle" / "train").rename(root / "bottle" / "training")
    with pytest.raises(DatasetError, match="missing folder") as e:
        MVTecAD(root, "bottle", "train")
    assert str(root / "bottle" / "train") in str(e.value)


def test_corrupt_image_error_names_path(mvtec):
    root, _ = mvtec
    bad = root / "bottle" / "test" / "good" / "001.png"
    bad.write_bytes(b"this is not an image")
    test = MVTecAD(root, "bottle", "test")  # listing is eager, decoding lazy
    with pytest.raises(DatasetError, match="cannot read") as e:
        test[test.paths.index(bad)]
    assert str(bad) in str(e.value)


def test_empty_split_errors(tmp_path):
    (tmp_path / "cat" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        MVTecAD(tmp_path, "cat", "test")


# --- BTAD -------------------------------------------------------------------------------------


def test_btad_mixed_extensions_and_stem_matching(tmp_path):
    p = tmp_path / "01"
    img(p / "train" / "ok" / "0000.bmp", 1)
    img(p / "train" / "ok" / "0001.png", 2)
    img(p / "test" / "ok" / "0000.bmp", 3)
    names = {"003.bmp": (0, 3, 0, 3), "010.png": (4, 8, 4, 8), "2.BMP": (12, 16, 0, 16)}
    expected = {}
    for name, box in names.items():
        img(p / "test" / "ko" / name, 200)
    # masks with other extensions; the extra 001.png makes sorted-order pairing wrong
    expected["003.bmp"] = mask(p / "ground_truth" / "ko" / "003.png", names["003.bmp"])
    expected["010.png"] = mask(p / "ground_truth" / "ko" / "010.bmp", names["010.png"])
    expected["2.BMP"] = mask(p / "ground_truth" / "ko" / "2.png", names["2.BMP"])
    mask(p / "ground_truth" / "ko" / "001.png", (0, 16, 0, 16))
    assert BTAD.categories(tmp_path) == ["01"]
    train = BTAD(tmp_path, "01", "train")
    assert len(train) == 2 and train.labels.tolist() == [0, 0]
    test = BTAD(tmp_path, "01", "test")
    assert test.labels.tolist() == [1, 1, 1, 0] and test.defects == ["ko", "ko", "ko", "good"]
    for s in test:
        if s.label:
            assert np.array_equal(s.mask, expected[s.path.name]), s.path
        else:
            assert s.mask is None and s.path.suffix == ".bmp"
    # a BTAD tree read as MVTec-AD: no 'good' folder is an unknown layout, not a defect type named 'ok'
    for split, expected_msg in (("train", "expected only 'good'"), ("test", "'good' and one folder per defect")):
        with pytest.raises(DatasetError, match=expected_msg) as e:
            MVTecAD(tmp_path, "01", split)
        assert str(p / split) in str(e.value) and "'ok'" in str(e.value)


def test_train_split_with_a_defect_folder_is_refused(mvtec):
    root, _ = mvtec
    img(root / "bottle" / "train" / "broken" / "000.png")
    with pytest.raises(DatasetError, match="expected only 'good'.*'broken'"):
        MVTecAD(root, "bottle", "train")


# --- MVTec LOCO ---------------------------------------------------------------------------------


def test_loco_union_of_masks_and_splits(tmp_path):
    c = tmp_path / "juice_bottle"
    for split in ("train", "validation", "test"):
        for i in range(2):
            img(c / split / "good" / f"{i:03d}.png", i)
    img(c / "test" / "logical_anomalies" / "000.png", 30)
    img(c / "test" / "structural_anomalies" / "000.png", 40)
    img(c / "test" / "structural_anomalies" / "001.png", 41)
    gt = c / "ground_truth"
    a = mask(gt / "logical_anomalies" / "000" / "000.png", (0, 4, 0, 4))
    b = mask(gt / "logical_anomalies" / "000" / "001.png", (8, 12, 8, 16), value=17)
    s0 = mask(gt / "structural_anomalies" / "000" / "000.png", (2, 3, 2, 3))
    s1 = mask(gt / "structural_anomalies" / "001" / "000.png", (5, 6, 0, 16))
    assert len(MVTecLOCO(tmp_path, "juice_bottle", "validation")) == 2
    test = MVTecLOCO(tmp_path, "juice_bottle", "test")
    assert len(test) == 5 and test.labels.sum() == 3
    samples = by_name(test)
    union = samples["logical_anomalies/000.png"].mask
    assert np.array_equal(union, a | b) and union.sum() == 16 + 32
    assert np.array_equal(samples["structural_anomalies/000.png"].mask, s0)
    assert np.array_equal(samples["structural_anomalies/001.png"].mask, s1)
    assert samples["structural_anomalies/001.png"].defect == "structural_anomalies"
    for m in (gt / "structural_anomalies" / "001").iterdir():
        m.unlink()
    with pytest.raises(DatasetError, match="structural_anomalies.001") as e:
        MVTecLOCO(tmp_path, "juice_bottle", "test")
    assert str(c / "test" / "structural_anomalies" / "001.png") in str(e.value)


# --- VisA -------------------------------------------------------------------------------------


def _visa_raw(root: Path, encoding: str = "utf-8") -> dict[str, np.ndarray]:
    rows, expected = [], {}
    for obj in ("candle", "pcb1"):
        d = root / obj / "Data"
        for i in range(4):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            img(root / rel, 20 + i)
            rows.append([obj, "train" if i < 3 else "test", "normal", rel, ""])
        for i in range(2):
            rel, mrel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG", f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            img(root / rel, 200)
            a = np.zeros((S, S), np.uint8)
            a[0:3, 0:3], a[6 + i:9 + i, 6:10] = 1, 2  # instance ids
            (root / mrel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(root / mrel)
            expected[f"{obj}/{i:03d}"] = a > 0
            rows.append([obj, "test", "anomaly", rel, mrel])
        assert d.is_dir()
    (root / "split_csv").mkdir()
    with open(root / "split_csv" / "1cls.csv", "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    return expected


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])  # a csv saved with a BOM reads the same
def test_visa_raw_layout_from_csv(tmp_path, encoding):
    expected = _visa_raw(tmp_path, encoding)
    assert VisA.categories(tmp_path) == ["candle", "pcb1"]
    train = VisA(tmp_path, "candle", "train")
    assert train.layout == "raw" and len(train) == 3 and train.labels.sum() == 0
    test = VisA(tmp_path, "candle", "test")
    assert len(test) == 3 and test.labels.tolist() == [1, 1, 0]
    assert test.defects == ["bad", "bad", "good"]
    for s in test:
        assert s.category == "candle"
        if s.label:
            assert np.array_equal(s.mask, expected[f"candle/{s.path.stem}"])
        else:
            assert s.mask is None
    (tmp_path / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DatasetError, match="1cls.csv") as e:
        VisA(tmp_path, "candle", "test")
    assert str(tmp_path / "split_csv" / "1cls.csv") in str(e.value)


def test_visa_converted_layout_and_1cls_folder(tmp_path):
    root = tmp_path / "VisA_pytorch" / "1cls"
    c = root / "candle"
    for i in range(3):
        img(c / "train" / "good" / f"{i:04d}.JPG", i)
    img(c / "test" / "good" / "0003.JPG", 3)
    img(c / "test" / "bad" / "000.JPG", 200)
    m = mask(c / "ground_truth" / "bad" / "000.png", (1, 5, 1, 5), value=255)
    for r in (root, root.parent):  # the folder holding 1cls/ works too
        test = VisA(r, "candle", "test")
        assert test.layout == "mvtec" and test.labels.tolist() == [1, 0] and test.defects == ["bad", "good"]
        assert np.array_equal(test[0].mask, m)
    assert VisA.categories(root.parent) == ["candle"]
    assert len(VisA(root, "candle", "train")) == 3


def test_visa_unknown_layout(tmp_path):
    (tmp_path / "candle" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetError, match="unknown VisA layout") as e:
        VisA(tmp_path, "candle", "test")
    assert str(tmp_path / "candle") in str(e.value)


# --- image conversions and masks ------------------------------------------------------------------


def test_modes_converted_to_rgb(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("L", (S, S), 77).save(d / "gray.png")
    Image.new("RGBA", (S, S), (10, 20, 30, 0)).save(d / "rgba.png")
    p = Image.new("P", (S, S), 1)
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.save(d / "palette.png")
    Image.fromarray(np.full((S, S), 257 * 100, np.uint16)).save(d / "deep.png")
    Image.fromarray(np.full((S, S), 65535, np.uint16)).save(d / "deep.tif")
    assert Image.open(d / "deep.png").mode.startswith("I")  # really a 16-bit file
    expected = {"gray": (77, 77, 77), "rgba": (10, 20, 30), "palette": (200, 100, 50),
                "deep.png": (100, 100, 100), "deep.tif": (255, 255, 255)}
    ds = FolderDataset(normal_dir=d)
    assert len(ds) == 5
    for s in ds:
        assert s.image.mode == "RGB" and s.image.size == (S, S)
        key = s.path.name if s.path.stem == "deep" else s.path.stem
        assert s.image.getpixel((3, 3)) == expected[key], s.path
    # Pillow < 13 opens a 16-bit grayscale PNG as mode "I": scaled like I;16, not stretched per image
    as_old_pillow = Image.open(d / "deep.png").convert("I")
    as_old_pillow.format = "PNG"
    assert to_rgb(as_old_pillow).getpixel((3, 3)) == (100, 100, 100)


def test_mask_size_mismatch_resized_with_warning(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[0:2, 4:8] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.warns(UserWarning, match="resized") as w:
        out = load_mask([tmp_path / "m.png"], (S, S))
    assert str(tmp_path / "m.png") in str(w[0].message)
    assert out.shape == (S, S) and out.dtype == bool
    assert out[0:4, 8:16].all() and out.sum() == 32  # nearest neighbour: each pixel -> 2x2


def test_mask_size_mismatch_through_dataset(tmp_path):
    img(tmp_path / "anom" / "a.png", 1, size=S)
    mask(tmp_path / "masks" / "a_mask.png", (0, 4, 0, 4), size=8)
    ds = FolderDataset(anomalous_dir=tmp_path / "anom", mask_dir=tmp_path / "masks")
    with pytest.warns(UserWarning, match="resized") as w:
        s = ds[0]
    assert str(tmp_path / "anom" / "a.png") in str(w[0].message)
    assert s.mask.shape == (S, S) and s.mask.sum() == 64


def test_load_rgb_corrupt(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DatasetError, match=str(tmp_path / "x.jpg")):
        load_rgb(tmp_path / "x.jpg")


# --- generic folders --------------------------------------------------------------------------


def test_folder_dataset_normal_only_and_with_masks(tmp_path):
    for i in range(3):
        img(tmp_path / "normal" / f"n{i}.png", i)
    img(tmp_path / "anom" / "a.png", 9)
    img(tmp_path / "anom" / "b.jpg", 9)
    ma = mask(tmp_path / "masks" / "a.png", (0, 2, 0, 2))
    mb = mask(tmp_path / "masks" / "b_mask.png", (3, 4, 3, 4))
    support = FolderDataset(normal_dir=tmp_path / "normal", anomalous_dir=None, mask_dir=None)
    assert len(support) == 3 and support.labels.sum() == 0 and support.category == "folder"
    assert len(support.few_shot(k=2, seed=0)) == 2
    ds = FolderDataset(tmp_path / "normal", tmp_path / "anom", tmp_path / "masks", category="brain", defect="tumor")
    samples = by_name(ds)
    assert np.array_equal(samples["anom/a.png"].mask, ma) and np.array_equal(samples["anom/b.jpg"].mask, mb)
    assert samples["anom/a.png"].defect == "tumor" and samples["anom/a.png"].category == "brain"
    assert samples["normal/n0.png"].mask is None
    no_masks = FolderDataset(tmp_path / "normal", tmp_path / "anom")
    assert all(s.mask is None for s in no_masks) and no_masks.labels.sum() == 2
    (tmp_path / "masks" / "b_mask.png").unlink()
    with pytest.raises(DatasetError, match="no mask") as e:
        FolderDataset(tmp_path / "normal", tmp_path / "anom", tmp_path / "masks")
    assert str(tmp_path / "anom" / "b.jpg") in str(e.value)
    with pytest.raises(DatasetError, match=str(tmp_path / "missing")):
        FolderDataset(normal_dir=tmp_path / "missing")
    with pytest.raises(DatasetError):
        FolderDataset()


def test_folder_layout_convention_and_bmad(tmp_path):
    c = tmp_path / "custom" / "test"
    img(c / "good" / "0.png")
    img(c / "anomaly" / "1.png")
    m = mask(c / "mask" / "1.png", (0, 1, 0, 16))
    ds = load_dataset("folder", tmp_path, "custom", "test")
    assert isinstance(ds, FolderDataset) and ds.labels.tolist() == [1, 0] and ds.category == "custom"
    assert np.array_equal(ds[0].mask, m)
    b = tmp_path / "Brain" / "valid"
    img(b / "good" / "img" / "00.png")
    img(b / "Ungood" / "img" / "01.png")
    m = mask(b / "Ungood" / "label" / "01.png", (2, 3, 2, 3))
    brain = FolderDataset.from_layout(tmp_path, "Brain", "valid")
    assert brain.labels.tolist() == [1, 0] and np.array_equal(brain[0].mask, m)
    assert FolderDataset.categories(tmp_path) == ["Brain", "custom"]
    with pytest.raises(DatasetError, match="unknown folder layout"):
        img(tmp_path / "odd" / "test" / "x" / "0.png")
        FolderDataset.from_layout(tmp_path, "odd", "test")


# --- few-shot protocol ------------------------------------------------------------------------------


def _train_tree(root: Path, order) -> MVTecAD:
    for i in order:
        img(root / "cat" / "train" / "good" / f"{i:03d}.png", i)
    return MVTecAD(root, "cat", "train")


def test_few_shot_deterministic_and_order_independent(tmp_path):
    a = _train_tree(tmp_path / "a", range(20))
    b = _train_tree(tmp_path / "b", reversed(range(20)))  # files created in the opposite order
    names = lambda samples: [s.path.name for s in samples]  # noqa: E731
    s0 = names(a.few_shot(k=4, seed=0))
    assert len(s0) == 4 and len(set(s0)) == 4
    assert s0 == names(a.few_shot(k=4, seed=0)) == names(b.few_shot(k=4, seed=0))
    expected = [f"{j:03d}.png" for j in np.random.default_rng(0).permutation(20)[:4]]
    assert s0 == expected  # the documented protocol
    assert names(a.few_shot(k=4, seed=1)) != s0
    assert names(a.few_shot(k=2, seed=0)) == s0[:2]
    assert all(s.label == 0 for s in a.few_shot(k=20, seed=3))
    with pytest.raises(DatasetError, match="k=21"):
        a.few_shot(k=21, seed=0)
    with pytest.raises(DatasetError):
        a.few_shot(k=0)
    with pytest.raises(DatasetError, match="k must be"):
        a.few_shot(k=True)
    with pytest.raises(DatasetError, match="seed must be an integer"):
        a.few_shot(k=2, seed=None)  # never a silently random support set


def test_few_shot_uses_only_normal_images(mvtec):
    root, _ = mvtec
    test = MVTecAD(root, "bottle", "test")
    shots = test.few_shot(k=2, seed=5)
    assert sorted(s.path.name for s in shots) == ["000.png", "001.png"]
    assert all(s.defect == "good" for s in shots)
    with pytest.raises(DatasetError, match="only 2"):
        test.few_shot(k=3)


# --- registry ---------------------------------------------------------------------------------


def test_registry_and_load_dataset(mvtec):
    root, _ = mvtec
    assert DATASETS == {"mvtec": MVTecAD, "visa": VisA, "btad": BTAD, "mvtec_loco": MVTecLOCO, "folder": FolderDataset}
    ds = load_dataset("mvtec", root, "bottle", "test")
    assert isinstance(ds, MVTecAD) and ds.paths == MVTecAD(root, "bottle", "test").paths
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", root, "bottle")
    with pytest.raises(DatasetError, match="needs a category"):
        load_dataset("mvtec", root)
