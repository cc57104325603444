"""Threshold calibration on a site's own photo pairs: FAR and FRR across thresholds.

Input: a CSV ``file_x,file_y,same`` (same = yes/no; a header row is allowed;
relative paths are relative to the CSV). Each photo goes through the gate's
own pipeline (quality gate included); pairs with a photo the gate would not
decide on are reported as skipped, not counted.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from drivers.camera.pipeline import Pipeline, read_image
from edge.errors import EdgeError

_YES, _NO = {"yes", "y", "true", "1"}, {"no", "n", "false", "0"}
CEILING = 0.5  # the product never recommends a threshold looser than this


def read_pairs(path: Path) -> list[tuple[Path, Path, bool]]:
    rows: list[tuple[Path, Path, bool]] = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 3:
                raise EdgeError(f"{path}:{lineno}: expected 3 columns file_x,file_y,same; got {len(row)}")
            same = row[2].strip().lower()
            if lineno == 1 and same not in _YES | _NO:
                continue  # header
            if same not in _YES | _NO:
                raise EdgeError(f"{path}:{lineno}: same is {row[2]!r}; expected yes or no")
            x, y = (Path(c.strip()) if Path(c.strip()).is_absolute() else path.parent / c.strip() for c in row[:2])
            for p in (x, y):
                if not p.is_file():
                    raise EdgeError(f"{path}:{lineno}: image {p} not found")
            rows.append((x, y, same in _YES))
    if not rows:
        raise EdgeError(f"{path}: no pairs; expected lines file_x,file_y,same")
    return rows


def sweep(pipeline: Pipeline, rows: list[tuple[Path, Path, bool]], files: Iterable[Path],
          target_far: float) -> dict[str, Any]:
    encodings: dict[Path, np.ndarray | None] = {}
    for f in files:
        a = pipeline.analyse(read_image(f), use_presence=False, thorough=True)
        encodings[f] = a.encoding
    genuine, impostor, skipped = [], [], []
    for x, y, same in rows:
        ex, ey = encodings.get(x), encodings.get(y)
        if ex is None or ey is None:
            skipped.append(f"{x.name},{y.name}")
            continue
        (genuine if same else impostor).append(float(np.linalg.norm(ex - ey)))
    gen, imp = np.array(genuine), np.array(impostor)
    table = []
    for t in np.round(np.arange(0.30, 0.701, 0.01), 2):
        far = float((imp <= t).mean()) if imp.size else 0.0
        frr = float((gen > t).mean()) if gen.size else 0.0
        table.append({"threshold": float(t), "far": round(far, 5), "frr": round(frr, 5)})
    ok = [r for r in table if r["far"] <= target_far and r["threshold"] <= CEILING]
    best = ok[-1] if ok else table[0]
    notes = []
    if imp.size and target_far < 1.0 / imp.size:
        notes.append(f"only {imp.size} impostor pairs: a FAR below {1.0 / imp.size:.4f} cannot be shown; "
                     f"add impostor pairs before trusting this threshold")
    if not ok:
        notes.append("no threshold reaches the target FAR; using the strictest in the table")
    if best["threshold"] == CEILING:
        notes.append(f"capped at {CEILING}: the gate never runs looser than that")
    return {"genuine_pairs": int(gen.size), "impostor_pairs": int(imp.size), "skipped": skipped,
            "target_far": target_far, "recommended_threshold": best["threshold"],
            "recommended_far": best["far"], "recommended_frr": best["frr"],
            "genuine_distance_max": round(float(gen.max()), 4) if gen.size else None,
            "impostor_distance_min": round(float(imp.min()), 4) if imp.size else None,
            "notes": notes, "table": table}
