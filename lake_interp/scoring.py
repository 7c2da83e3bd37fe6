"""Score a folder of images with a fitted Lake and write overlays at the original resolution + CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from PIL import Image

from lake_interp.lake.inputs import resize_map
from lake_interp.render import colorize, overlay


def score_files(lake, paths: Sequence[Path], out_dir, batch_size: int = 16) -> list[dict]:
    """Writes `<out>/maps/<stem>_overlay.png` and `<stem>_map.png` (colour map) at each image's own
    size, and `<out>/scores.csv`; maps share one colour scale (the min and max over all maps)."""
    from lake_interp.data.io import load_rgb

    out = Path(out_dir)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        images = [load_rgb(p) for p in chunk]
        r = lake.score(images)
        results += [(p, im.size, float(s), m) for p, im, s, m in zip(chunk, images, r.image_scores, r.maps.numpy())]
    vmin = min(float(m.min()) for *_, m in results)
    vmax = max(float(m.max()) for *_, m in results)
    rows = []
    for path, (w, h), score, m in results:
        full = resize_map(m, h, w)
        overlay(load_rgb(path), full, vmin=vmin, vmax=vmax).save(out / "maps" / f"{path.stem}_overlay.png")
        Image.fromarray(colorize(full, vmin, vmax)).save(out / "maps" / f"{path.stem}_map.png")
        rows.append({"path": str(path), "image_score": score, "map_max": float(full.max()), "map_min": float(full.min())})
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "colour_scale.txt").write_text(f"vmin {vmin}\nvmax {vmax}\n")
    return rows
