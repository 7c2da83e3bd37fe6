"""Score a folder of images with a fitted Lake and write overlays at the original resolution + CSV."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Sequence

from PIL import Image

from lake_interp.lake.inputs import resize_map
from lake_interp.render import colorize, overlay


def check_new_score_folder(out_dir) -> None:
    """Refuse to score into a folder holding an earlier run (its maps would mix with the new ones)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose another --out")
    if (out / "scores.csv").exists() or any((out / "maps").glob("*.png")):
        raise ValueError(f"{out} holds an earlier scoring run (scores.csv, maps/): choose another --out or delete it first")


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct name per image: its file stem; where stems repeat (a.png, a.jpg) stem_extension,
    and where even that repeats, a counter on top."""
    stems = Counter(p.stem for p in paths)
    wanted = [p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths]
    taken, names = set(), []
    for i, name in enumerate(wanted):
        unique, n = name, 0
        while unique in taken or (unique != name and unique in wanted):
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        names.append(unique)
    return names


def score_files(lake, paths: Sequence[Path], out_dir, batch_size: int = 16) -> list[dict]:
    """Writes `<out>/maps/<name>_overlay.png` and `<name>_map.png` (colour map) at each image's own
    size (name: the file stem, see output_names), and `<out>/scores.csv`; maps share one colour
    scale (the min and max over all maps). An `out_dir` holding an earlier run is refused."""
    from lake_interp.data.io import load_rgb
    from lake_interp.lake.inputs import iter_batches

    out = Path(out_dir)
    check_new_score_folder(out)
    paths = [Path(p) for p in paths]
    results = []
    for chunk in iter_batches(paths, batch_size):
        images = [load_rgb(p) for p in chunk]
        r = lake.score(images)
        results += [(im.size, float(s), m) for im, s, m in zip(images, r.image_scores, r.maps.numpy())]
    vmin = min(float(m.min()) for *_, m in results)
    vmax = max(float(m.max()) for *_, m in results)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    rows = []
    for path, name, ((w, h), score, m) in zip(paths, output_names(paths), results):
        full = resize_map(m, h, w)
        overlay(load_rgb(path), full, vmin=vmin, vmax=vmax).save(out / "maps" / f"{name}_overlay.png")
        Image.fromarray(colorize(full, vmin, vmax)).save(out / "maps" / f"{name}_map.png")
        rows.append({"path": str(path), "image_score": score, "map_max": float(full.max()), "map_min": float(full.min()),
                     "maps": f"maps/{name}_map.png"})
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "colour_scale.txt").write_text(f"vmin {vmin}\nvmax {vmax}\n")
    return rows
