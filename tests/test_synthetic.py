"""The synthetic MVTec-layout generator: determinism, exact masks, coloured defects, loading."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lake_interp.data import MVTecAD, make_synthetic_dataset
from lake_interp.data.sample import DatasetError
from lake_interp.data.synthetic import CATEGORIES, DEFECTS, synthesize

MAGENTA = (255, 0, 255)
SMALL = dict(image_size=48, n_train=3, n_test_good=2, n_test_defect=2)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    a = files(make_synthetic_dataset(tmp_path / "a", seed=3, **SMALL))
    b = files(make_synthetic_dataset(tmp_path / "b", seed=3, **SMALL))
    c = files(make_synthetic_dataset(tmp_path / "c", seed=4, **SMALL))
    n_per_cat = 3 + 2 + 2 * 2 * len(DEFECTS)  # train + good + (image + mask) per defect image
    assert len(a) == len(CATEGORIES) * n_per_cat
    assert a == b
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a) > len(a) // 2


def test_category_subset_gives_same_images(tmp_path):
    full = files(make_synthetic_dataset(tmp_path / "full", seed=0, **SMALL))
    disc = files(make_synthetic_dataset(tmp_path / "disc", categories=["disc"], seed=0, **SMALL))
    assert disc and all(full[k] == v for k, v in disc.items())


def test_layout_masks_and_loading(tmp_path):
    root = make_synthetic_dataset(tmp_path, categories=["grid", "bolt"], seed=0, **SMALL)
    assert root == tmp_path and MVTecAD.categories(root) == ["bolt", "grid"]
    for cat in ("grid", "bolt"):
        assert sorted(p.name for p in (root / cat / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert sorted(p.name for p in (root / cat / "test").iterdir()) == sorted(DEFECTS + ("good",))
        assert not (root / cat / "ground_truth" / "good").exists()
        for d in DEFECTS:
            for p in (root / cat / "test" / d).iterdir():
                m = np.asarray(Image.open(root / cat / "ground_truth" / d / f"{p.stem}_mask.png"))
                assert set(np.unique(m)) == {0, 255}
        test = MVTecAD(root, cat, "test")
        assert len(test) == 2 + 2 * len(DEFECTS) and test.labels.sum() == 2 * len(DEFECTS)
        for s in test:
            assert s.image.size == (48, 48) and s.category == cat
            assert (s.mask is None) == (s.label == 0)
            if s.label:
                assert s.mask.any() and s.defect in DEFECTS
        assert len(MVTecAD(root, cat, "train").few_shot(k=3, seed=0)) == 3


@pytest.mark.parametrize("category", CATEGORIES)
def test_masks_exactly_where_pixels_changed(category):
    for d in DEFECTS:
        clean, image, mask = synthesize(category, d, 0, seed=1, image_size=64)
        changed = (image != clean).any(-1)
        assert mask.sum() >= 4, (category, d)
        assert np.array_equal(mask, changed), (category, d)
        assert mask.mean() < 0.25, (category, d)  # a local defect, not the whole image
    clean, image, mask = synthesize(category, None, 0, seed=1, image_size=64)
    assert np.array_equal(clean, image) and not mask.any()


def test_written_files_are_synthesize_outputs(tmp_path):
    root = make_synthetic_dataset(tmp_path, categories=["marble"], seed=2, **SMALL)
    _, image, mask = synthesize("marble", "hole", 1, seed=2, image_size=48)
    assert np.array_equal(rgb(root / "marble" / "test" / "hole" / "001.png"), image)
    assert np.array_equal(np.asarray(Image.open(root / "marble" / "ground_truth" / "hole" / "001_mask.png")) > 0, mask)


def test_defect_color_exactly_inside_masks_and_absent_from_normals(tmp_path):
    root = make_synthetic_dataset(tmp_path, seed=0, defect_color=MAGENTA, **SMALL)
    for cat in CATEGORIES:
        for s in MVTecAD(root, cat, "test"):
            is_color = (np.asarray(s.image) == MAGENTA).all(-1)
            if s.label:
                assert np.array_equal(is_color, s.mask), s.path
            else:
                assert not is_color.any(), s.path
        for s in MVTecAD(root, cat, "train"):
            assert not (np.asarray(s.image) == MAGENTA).all(-1).any(), s.path


def test_defect_color_that_occurs_naturally_is_removed_from_normals(tmp_path):
    clean = synthesize("marble", None, 0, seed=0, image_size=48)[0]
    colors, counts = np.unique(clean.reshape(-1, 3), axis=0, return_counts=True)
    common = tuple(int(v) for v in colors[counts.argmax()])  # a colour normal marble images contain
    root = make_synthetic_dataset(tmp_path, categories=["marble"], seed=0, defect_color=common, **SMALL)
    good = rgb(root / "marble" / "test" / "good" / "000.png")
    assert not (good == common).all(-1).any()
    assert np.abs(good.astype(int) - clean.astype(int)).max() <= 1  # only nudged by one level
    img = rgb(root / "marble" / "test" / "stain" / "000.png")
    m = np.asarray(Image.open(root / "marble" / "ground_truth" / "stain" / "000_mask.png")) > 0
    assert np.array_equal((img == common).all(-1), m)


def test_per_category_defect_color(tmp_path):
    root = make_synthetic_dataset(tmp_path, categories=["disc", "weave"], seed=0,
                                  defect_color={"disc": (0, 255, 0)}, **SMALL)
    disc = rgb(root / "disc" / "test" / "scratch" / "000.png")
    weave = rgb(root / "weave" / "test" / "scratch" / "000.png")
    assert (disc == (0, 255, 0)).all(-1).any()
    assert not (weave == (0, 255, 0)).all(-1).any()


def test_default_generation_is_fast(tmp_path):
    t0 = time.perf_counter()
    root = make_synthetic_dataset(tmp_path / "default")
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0
    assert (root / "grid" / "test" / "scratch").is_dir()
    assert Image.open(root / "disc" / "train" / "good" / "000.png").size == (128, 128)


def test_existing_output_and_bad_arguments(tmp_path):
    make_synthetic_dataset(tmp_path, categories=["grid"], **SMALL)
    with pytest.raises(DatasetError, match="overwrite=True"):
        make_synthetic_dataset(tmp_path, categories=["grid"], **SMALL)
    (tmp_path / "grid" / "test" / "good" / "999.png").write_bytes(b"stale")
    make_synthetic_dataset(tmp_path, categories=["grid"], overwrite=True, **SMALL)
    assert not (tmp_path / "grid" / "test" / "good" / "999.png").exists()
    with pytest.raises(DatasetError, match="unknown synthetic"):
        make_synthetic_dataset(tmp_path / "x", categories=["carpet"])
    with pytest.raises(DatasetError, match="defect_color"):
        make_synthetic_dataset(tmp_path / "y", defect_color=(300, 0, 0))
