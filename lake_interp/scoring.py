"""`lake-interp score`: decide on images with a fitted detector and write, per image, its score and
label (scores.csv), its binary mask (masks/), its colour map and an overlay with the mask's contour
(maps/), all at the image's original resolution."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from lake_interp.render import colorize

#: Folders of per-image files a scoring run writes (an earlier run's files there are refused).
FOLDERS = ("maps", "masks")


def check_new_score_folder(out_dir) -> None:
    """Refuse to score into a folder holding an earlier run (its maps would mix with the new ones).

    ``scores.csv`` is written last: without it, maps and masks that the manifest records as this
    package's are an interrupted run, replaced by the rerun; ones it does not record are refused."""
    from lake_interp.outputs import TMP_MARK, owned_files

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose another --out")
    if not out.is_dir():
        return
    owned = owned_files(out)
    stray = [p for d in FOLDERS for p in (out / d).rglob("*.png")
             if not p.name.startswith(TMP_MARK) and p.relative_to(out).as_posix() not in owned]
    if (out / "scores.csv").exists() or stray:
        raise ValueError(f"{out} holds an earlier scoring run (scores.csv, maps/, masks/): choose another --out or "
                         "delete it first")


def output_names(paths: Sequence[Path], root: Optional[Path] = None) -> list[str]:
    """A distinct file name per image, one path component (it stays inside --out): the path
    relative to `root` (the folder scored; None: the file stem alone) with its folders joined by
    "__" and the extension dropped ("sub/x.png" -> "sub__x"); where that repeats (a.png, a.jpg)
    the extension is added ("a_png"), and where even that repeats, a counter."""
    def base(p: Path) -> str:
        parts = list(p.relative_to(root).parts) if root is not None else [p.name]
        return "__".join([*parts[:-1], Path(parts[-1]).stem])

    bases = [base(Path(p)) for p in paths]
    counts = Counter(bases)
    wanted = [b if counts[b] == 1 else f"{b}_{Path(p).suffix.lstrip('.')}" for b, p in zip(bases, paths)]
    taken, names = set(), []
    for name in wanted:
        unique, n = name, 0
        while unique in taken or (unique != name and unique in wanted):
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        names.append(unique)
    return names


def score_files(lake, paths: Sequence[Path], out_dir, batch_size: int = 16, root: Optional[Path] = None,
                threshold: Optional[float] = None, pixel_threshold: Optional[float] = None) -> list[dict]:
    """Decide on every image of `paths` with `lake` (`Lake.predict`: its stored thresholds, or
    `threshold` / `pixel_threshold` given) and write, at each image's own size,
    `maps/<name>_overlay.png` (map over the image, mask contour in white), `maps/<name>_map.png`
    (colour map; all maps share one colour scale, the min and max over all of them, in
    `colour_scale.txt`), `masks/<name>_mask.png` (0/255), `threshold.json`, and `scores.csv` last
    (name: `output_names(paths, root)`). An `out_dir` holding an earlier run is refused; files go
    through the output policy (`lake_interp.outputs`: lock, manifest, atomic writes)."""
    from lake_interp.outputs import output_folder

    out = Path(out_dir)
    check_new_score_folder(out)
    decision = lake.decision_threshold(threshold, pixel_threshold)  # none at all: refused before any work
    with output_folder(out, "lake-interp score") as output:
        check_new_score_folder(out)  # again, under the lock
        return _score_files(lake, [Path(p) for p in paths], output, batch_size, root, decision)


def _score_files(lake, paths: list[Path], output, batch_size: int, root, decision) -> list[dict]:
    from lake_interp.data.io import load_rgb
    from lake_interp.lake.inputs import iter_batches
    from lake_interp.lake.threshold import predict_from

    names = output_names(paths, root)
    kinds = {"overlay": "maps", "map": "maps", "mask": "masks"}
    planned = [f"{folder}/{n}_{kind}.png" for n in names for kind, folder in kinds.items()]
    output.claim([*planned, "scores.csv", "colour_scale.txt", "threshold.json"])
    for folder in FOLDERS:
        for rel in output.files_under(folder) if (output.root / folder).is_dir() else []:
            if rel not in planned and output.owns(rel):  # files of an interrupted run on other images
                (output.root / rel).unlink()
    predictions = [(chunk, predict_from(lake.score([load_rgb(p) for p in chunk]), decision))
                   for chunk in iter_batches(paths, batch_size)]
    vmin = min(float(pred.maps.min()) for _, pred in predictions)
    vmax = max(float(pred.maps.max()) for _, pred in predictions)
    for folder in FOLDERS:
        output.mkdir(folder)
    rows, names_left = [], iter(names)
    for chunk, pred in predictions:
        for i, path in enumerate(chunk):
            name = next(names_left)
            image = load_rgb(path)
            full, mask = pred.full_size(i, *image.size)
            with output.atomic(f"maps/{name}_overlay.png") as tmp:
                pred.overlay(i, image, vmin=vmin, vmax=vmax).save(tmp, format="PNG")
            with output.atomic(f"maps/{name}_map.png") as tmp:
                Image.fromarray(colorize(full, vmin, vmax)).save(tmp, format="PNG")
            with output.atomic(f"masks/{name}_mask.png") as tmp:
                Image.fromarray(mask.astype("uint8") * 255).save(tmp, format="PNG")
            rows.append({"path": str(path), "image_score": float(pred.image_scores[i]), "label": int(pred.labels[i]),
                         "anomalous_pixels": float(mask.mean()), "map_max": float(full.max()),
                         "map_min": float(full.min()), "maps": f"maps/{name}_map.png",
                         "overlay": f"maps/{name}_overlay.png", "mask": f"masks/{name}_mask.png"})
    output.write_text("colour_scale.txt", f"vmin {vmin}\nvmax {vmax}\n")
    output.write_text("threshold.json", json.dumps(decision.to_dict(), indent=1) + "\n")
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    output.write_text("scores.csv", text.getvalue())  # last: marks the run complete
    return rows
