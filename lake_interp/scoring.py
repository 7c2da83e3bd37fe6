"""Score a folder of images with a fitted Lake and write overlays at the original resolution + CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Sequence

from PIL import Image

from lake_interp.lake.inputs import resize_map
from lake_interp.render import colorize, overlay


def check_new_score_folder(out_dir) -> None:
    """Refuse to score into a folder holding an earlier run (its maps would mix with the new ones).

    ``scores.csv`` is written last: without it, maps that the manifest records as this package's are
    an interrupted run, replaced by the rerun; maps it does not record are refused."""
    from lake_interp.outputs import TMP_MARK, owned_files

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose another --out")
    if not out.is_dir():
        return
    owned = owned_files(out)
    if (out / "scores.csv").exists() or any(f"maps/{p.name}" not in owned for p in (out / "maps").glob("*.png")
                                             if not p.name.startswith(TMP_MARK)):
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
    scale (the min and max over all maps). An `out_dir` holding an earlier run is refused; files go
    through the output policy (`lake_interp.outputs`: lock, manifest, atomic writes), `scores.csv` last."""
    from lake_interp.outputs import output_folder

    out = Path(out_dir)
    check_new_score_folder(out)
    with output_folder(out, "lake-interp score") as output:
        check_new_score_folder(out)  # again, under the lock
        return _score_files(lake, [Path(p) for p in paths], output, batch_size)


def _score_files(lake, paths: list[Path], output, batch_size: int) -> list[dict]:
    from lake_interp.data.io import load_rgb
    from lake_interp.lake.inputs import iter_batches

    names = output_names(paths)
    planned = [f"maps/{n}_{kind}.png" for n in names for kind in ("overlay", "map")]
    output.claim([*planned, "scores.csv", "colour_scale.txt"])
    for rel in output.files_under("maps") if (output.root / "maps").is_dir() else []:
        if rel not in planned and output.owns(rel):  # maps of an interrupted run on other images
            (output.root / rel).unlink()
    results = []
    for chunk in iter_batches(paths, batch_size):
        images = [load_rgb(p) for p in chunk]
        r = lake.score(images)
        results += [(im.size, float(s), m) for im, s, m in zip(images, r.image_scores, r.maps.numpy())]
    vmin = min(float(m.min()) for *_, m in results)
    vmax = max(float(m.max()) for *_, m in results)
    output.mkdir("maps")
    rows = []
    for path, name, ((w, h), score, m) in zip(paths, names, results):
        full = resize_map(m, h, w)
        with output.atomic(f"maps/{name}_overlay.png") as tmp:
            overlay(load_rgb(path), full, vmin=vmin, vmax=vmax).save(tmp, format="PNG")
        with output.atomic(f"maps/{name}_map.png") as tmp:
            Image.fromarray(colorize(full, vmin, vmax)).save(tmp, format="PNG")
        rows.append({"path": str(path), "image_score": score, "map_max": float(full.max()), "map_min": float(full.min()),
                     "maps": f"maps/{name}_map.png"})
    output.write_text("colour_scale.txt", f"vmin {vmin}\nvmax {vmax}\n")
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    output.write_text("scores.csv", text.getvalue())  # last: marks the run complete
    return rows
