"""Safety, class "images/masks": EXIF orientation applied to images and masks alike, decompression
bombs refused naming the file, masks checked (binary after thresholding; warnings for non-binary
values, JPEG masks, empty and near-full masks). Reading never changes a file."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from lake_interp.data import DatasetError, FolderDataset, load_mask, load_rgb
from lake_interp.data.io import MaskWarning


def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def with_orientation(im: Image.Image, path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif)
    return path


def no_mask_warnings(fn, *a):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskWarning)
        return fn(*a)


class TestImagesAndMasks:
    @pytest.mark.parametrize("suffix", [".png", ".jpg"])
    def test_exif_orientation_is_applied_to_images(self, tmp_path, suffix):
        a = np.zeros((20, 40, 3), np.uint8)
        a[:, :20] = (255, 0, 0)  # stored: red on the left, 40 wide, 20 high
        path = with_orientation(Image.fromarray(a), tmp_path / f"x{suffix}", 6)  # displayed rotated 90 degrees
        before = digest(path)
        im = load_rgb(path)
        assert im.size == (20, 40)
        expected = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        assert np.array_equal(np.asarray(im), np.asarray(expected))
        assert digest(path) == before

    def test_exif_orientation_is_applied_to_masks_so_they_line_up(self, tmp_path):
        m = np.zeros((20, 40), np.uint8)
        m[:5, :10] = 255  # stored top-left
        path = with_orientation(Image.fromarray(m), tmp_path / "m.png", 6)
        got = no_mask_warnings(load_mask, [path], (20, 40))
        assert got.shape == (40, 20)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(path))) > 0
        assert np.array_equal(got, expected) and got.sum() == 50
        assert got[:10, -5:].all()  # orientation 6: rotated clockwise, top-left goes top-right

    def test_decompression_bomb_is_a_clear_error(self, tmp_path, monkeypatch):
        path = tmp_path / "bomb.png"
        Image.new("L", (64, 64)).save(path)
        before = digest(path)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x the limit: PIL's bomb error
        with pytest.raises(DatasetError, match=r"refusing to open .*bomb\.png.*decompression bomb"):
            load_rgb(path)
        with pytest.raises(DatasetError, match="bomb.png"):
            load_mask([path], (64, 64))
        assert digest(path) == before

    def test_non_binary_mask_is_thresholded_and_warned(self, tmp_path):
        m = np.zeros((16, 16), np.uint8)
        m[4:8, 4:8] = 255
        m[3, 4:8] = 40  # antialiased edge: faint values
        m[8, 4:8] = 200
        path = tmp_path / "m.png"
        Image.fromarray(m).save(path)
        with pytest.warns(MaskWarning, match=r"m\.png is not binary: 8 pixels"):
            got = load_mask([path], (16, 16))
        assert np.array_equal(got, m > 127)

    def test_instance_id_and_single_level_masks_are_binary(self, tmp_path):
        ids = np.zeros((16, 16), np.uint8)
        ids[0:4, 0:4], ids[8:12, 8:12] = 1, 2  # VisA: instance ids
        Image.fromarray(ids).save(tmp_path / "ids.png")
        assert np.array_equal(no_mask_warnings(load_mask, [tmp_path / "ids.png"], (16, 16)), ids > 0)
        half = (ids > 0).astype(np.uint8) * 128
        Image.fromarray(half).save(tmp_path / "half.png")
        assert np.array_equal(no_mask_warnings(load_mask, [tmp_path / "half.png"], (16, 16)), ids > 0)

    def test_jpeg_mask_is_warned(self, tmp_path):
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 8:20] = 255
        Image.fromarray(m).save(tmp_path / "m.jpg", quality=60)
        with pytest.warns(MaskWarning, match=r"m\.jpg is a lossy JPEG"):
            got = load_mask([tmp_path / "m.jpg"], (32, 32))
        assert abs(int(got.sum()) - 144) <= 16  # thresholded at half the range: about the drawn square

    def test_empty_and_inverted_masks_of_anomalous_images_are_warned(self, tmp_path):
        (tmp_path / "anom").mkdir()
        (tmp_path / "masks").mkdir()
        for name in ("a", "b"):
            Image.new("RGB", (16, 16), (90, 90, 90)).save(tmp_path / "anom" / f"{name}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "a_mask.png")
        inverted = np.full((16, 16), 255, np.uint8)
        inverted[0, 0] = 0
        Image.fromarray(inverted).save(tmp_path / "masks" / "b_mask.png")
        ds = FolderDataset(anomalous_dir=tmp_path / "anom", mask_dir=tmp_path / "masks")
        with pytest.warns(MaskWarning, match=r"a_mask\.png of anomalous image .*a\.png is all zero"):
            ds[0]
        with pytest.warns(MaskWarning, match=r"b_mask\.png of .*b\.png marks 100% .*inverted"):
            ds[1]


class TestArgumentsAndSplitFiles:
    def test_non_utf8_visa_csv_names_the_file(self, tmp_path):
        from lake_interp.data import VisA

        (tmp_path / "split_csv").mkdir()
        (tmp_path / "split_csv" / "1cls.csv").write_bytes("object,split,label,image,mask\ncandle,train,normal,é\n"
                                                          .encode("latin-1"))
        (tmp_path / "candle" / "Data" / "Images" / "Normal").mkdir(parents=True)
        (tmp_path / "candle" / "Data" / "Images" / "Anomaly").mkdir(parents=True)
        with pytest.raises(DatasetError, match=r"1cls\.csv is not UTF-8"):
            VisA(tmp_path, "candle", "train")

    @pytest.mark.parametrize("field, values, message", [("seeds", [-1], "seeds (--seeds) must be integers >= 0"),
                                                        ("shots", [0], "shots (--shots) must be integers >= 1"),
                                                        ("shots", [], "shots (--shots) is empty")])
    def test_benchmark_negative_seeds_and_bad_shots(self, tmp_path, tiny_model, field, values, message):
        from lake_interp.benchmark import BenchmarkSpec, run_benchmark

        spec = BenchmarkSpec("mvtec", str(tmp_path), "lake-tiny", None, **{"shots": [1], "seeds": [0], field: values},
                             methods=["lake"], config={"k_neurons": 4})
        with pytest.raises(ValueError) as e:
            run_benchmark(tiny_model, spec, tmp_path / "b", progress=False)
        assert message in str(e.value) and not (tmp_path / "b").exists()
