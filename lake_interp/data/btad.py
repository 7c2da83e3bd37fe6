"""BTAD (beanTech): <root>/{01,02,03}/train/ok, test/{ok,ko}, ground_truth/ko.

Images are .bmp or .png depending on the product and masks may have another extension than their
image; masks are matched by file stem, never by sorted order. Normal images get defect "good",
anomalous ones "ko".
"""

from __future__ import annotations

from lake_interp.data.mvtec import MVTecLayout


class BTAD(MVTecLayout):
    """BTAD product `category` ("01", "02" or "03"), split "train" or "test"."""

    normal_dir = "ok"
