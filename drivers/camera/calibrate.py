"""Threshold calibration on a site's own photo pairs: FAR and FRR across thresholds.

Input: a CSV ``file_x,file_y,same``: ``same`` is yes/no, true/false or 1/0 in
any case; a header row is allowed and so are blank lines and ``#`` comments;
commas, semicolons or tabs separate the columns; relative paths are relative
to the CSV's folder. Every problem in the file is reported with its line
number before any photo is encoded.

Each photo goes through the gate's own pipeline (quality gate included). A
photo the gate cannot use (no face, several faces, too small or blurred) is
a failure to acquire, reported apart: in a genuine pair it counts as a false
reject at every threshold, as the gate would refuse that person; in an
impostor pair it is never an accept and is left out of the FAR, since a
refusal says nothing about how well the threshold separates two people.
Each row of the table also gives ``fnmr``, the false non-match rate of the
decisions alone (ISO/IEC 19795 terms: ``frr`` = FTA + FNMR x (1 - FTA)), so a
site sees apart how often the gate refuses a photo and how often it
mismatches one it accepted to decide on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from drivers.camera.imagefile import ImageError, check
from drivers.camera.pipeline import Pipeline, read_image
from edge.errors import EdgeError

_YES, _NO = {"yes", "y", "true", "1"}, {"no", "n", "false", "0"}
CEILING = 0.5  # the product never recommends a threshold looser than this
_MAX_PROBLEMS = 20
_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}


class PairsError(EdgeError):
    """The pairs CSV cannot be used; ``problems`` holds (line, message) for each problem found."""

    def __init__(self, path: Path, problems: list[tuple[int | None, str]]):
        self.path, self.problems = path, problems
        self.lines = [f"{path}" + (f" line {n}" if n else "") + f": {msg}" for n, msg in problems]
        super().__init__("; ".join(self.lines))


class Pair(tuple):
    """(file_x, file_y, same) with the CSV line it came from as ``line``."""

    line: int

    def __new__(cls, x: Path, y: Path, same: bool, line: int = 0):
        pair = super().__new__(cls, (x, y, same))
        pair.line = line
        return pair


def _delimiter(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return next((d for d in (",", ";", "\t") if d in line), ",")
    return ","


def read_pairs(path: Path) -> list[Pair]:
    """The pairs of a CSV, or a ``PairsError`` naming every bad line (missing photo, bad value...)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PairsError(path, [(None, "is not a text CSV file; expected lines file_x,file_y,same")]) from None
    except OSError as exc:
        raise PairsError(path, [(None, f"cannot be read ({exc.strerror})")]) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    rows: list[Pair] = []
    problems: list[tuple[int | None, str]] = []
    first_file_line: dict[Path, int] = {}
    seen_data = False
    for row in reader:
        lineno = reader.line_num
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()  # spreadsheets add empty trailing columns
        if not cells or cells[0].startswith("#"):
            continue
        header, seen_data = not seen_data and _is_header(cells, path), True
        if header:
            continue
        if len(cells) != 3:
            problems.append((lineno, f"expected 3 columns file_x,file_y,same; got {len(cells)}: {','.join(cells)}"))
            continue
        same = cells[2].lower()
        if same not in _YES | _NO:
            problems.append((lineno, f"same is {cells[2]!r}; expected yes/no, true/false or 1/0"))
        files = []
        for column, cell in zip(("file_x", "file_y"), cells[:2], strict=True):
            if not cell:
                problems.append((lineno, f"{column} is empty"))
                continue
            p = _resolve(cell, path)
            if not p.exists():
                problems.append((lineno, f"image {p} not found (relative paths are read from the CSV's "
                                         f"folder, {path.parent.resolve()})"))
            elif p.is_dir():
                problems.append((lineno, f"{p} is a folder; expected an image file"))
            else:
                files.append(p)
                first_file_line.setdefault(p, lineno)
        if len(files) == 2 and files[0].resolve() == files[1].resolve():
            problems.append((lineno, f"file_x and file_y are the same file ({files[0].name}); a pair needs "
                                     f"two different photos"))
        elif len(files) == 2 and same in _YES | _NO:
            rows.append(Pair(files[0], files[1], same in _YES, lineno))
    for p, lineno in first_file_line.items():  # what each photo really is, before any encoding
        try:
            check(p)
        except ImageError as exc:
            problems.append((lineno, str(exc)))
    if problems:
        problems.sort(key=lambda x: x[0] or 0)
        extra = len(problems) - _MAX_PROBLEMS
        problems = problems[:_MAX_PROBLEMS] + ([(None, f"... and {extra} more problems")] if extra > 0 else [])
        raise PairsError(path, problems)
    if not rows:
        raise PairsError(path, [(None, "no pairs; expected lines file_x,file_y,same (same = yes or no)")])
    return rows


def _resolve(cell: str, csv_path: Path) -> Path:
    p = Path(cell).expanduser()
    return p if p.is_absolute() else csv_path.parent / p


def _is_header(cells: list[str], csv_path: Path) -> bool:
    """The first row is a header when its ``same`` column is not a value and it names no photo."""
    if len(cells) == 3 and cells[2].lower() in _YES | _NO:
        return False
    return not any(_resolve(c, csv_path).is_file() or Path(c).suffix.lower() in _PHOTO_SUFFIXES
                   for c in cells[:2] if c)


def encode_all(pipeline: Pipeline, files: Iterable[Path]) -> tuple[dict[Path, np.ndarray], dict[Path, dict]]:
    """Encodings of the photos the gate can use, and why each other one could not be used."""
    encodings, failed = {}, {}
    for f in files:
        try:
            a = pipeline.analyse(read_image(f), use_presence=False, thorough=True)
        except ImageError as exc:
            failed[f] = {"image": str(f), "status": "unreadable", "reason": exc.problem}
            continue
        if a.encoding is None:
            why = ", ".join(a.quality.get("problems", [])) or {"multiple": f"{a.faces} faces"}.get(
                a.status, "no face found")
            failed[f] = {"image": str(f), "status": a.status, "reason": why}
        else:
            encodings[f] = a.encoding
    return encodings, failed


def sweep(pipeline: Pipeline, rows: list[tuple[Path, Path, bool]], files: Iterable[Path],
          target_far: float) -> dict[str, Any]:
    encodings, failed = encode_all(pipeline, files)
    genuine, impostor, not_compared = [], [], []
    for pair in rows:
        x, y, same = pair
        if x not in encodings or y not in encodings:
            not_compared.append({"line": getattr(pair, "line", None), "file_x": str(x), "file_y": str(y),
                                 "same": same, "counted_as": "false_reject" if same else "not_counted"})
            continue
        (genuine if same else impostor).append(float(np.linalg.norm(encodings[x] - encodings[y])))
    gen, imp = np.array(genuine), np.array(impostor)
    gen_failed = sum(1 for r in not_compared if r["same"])
    imp_failed = len(not_compared) - gen_failed
    gen_total = gen.size + gen_failed
    table = []
    for t in np.round(np.arange(0.30, 0.701, 0.01), 2):
        far = float((imp <= t).mean()) if imp.size else 0.0
        frr = (float((gen > t).sum()) + gen_failed) / gen_total if gen_total else 0.0
        # fnmr: the decisions alone (pairs the gate would decide on), without failures to acquire.
        fnmr = float((gen > t).mean()) if gen.size else 0.0
        table.append({"threshold": float(t), "far": round(far, 5), "frr": round(frr, 5), "fnmr": round(fnmr, 5)})
    ok = [r for r in table if r["far"] <= target_far and r["threshold"] <= CEILING]
    best = ok[-1] if ok else table[0]
    notes = []
    if not imp.size:
        notes.append("no impostor pairs were compared: the FAR cannot be measured; add pairs of "
                     "different people (same = no)")
    elif target_far < 1.0 / imp.size:
        notes.append(f"only {imp.size} impostor pairs: a FAR below {1.0 / imp.size:.4f} cannot be shown; "
                     f"add impostor pairs before trusting this threshold")
    if gen_failed:
        notes.append(f"{gen_failed} genuine pair(s) include a photo the gate cannot use: they count as false "
                     f"rejects at every threshold (FRR cannot go below {gen_failed / gen_total:.4f})")
    if imp_failed:
        notes.append(f"{imp_failed} impostor pair(s) include a photo the gate cannot use: never counted as "
                     f"accepts, and left out of the FAR")
    if not ok:
        notes.append("no threshold reaches the target FAR; using the strictest in the table")
    if best["threshold"] == CEILING:
        notes.append(f"capped at {CEILING}: the gate never runs looser than that")
    return {"ok": True, "genuine_pairs": int(gen_total), "impostor_pairs": int(imp.size + imp_failed),
            "genuine_compared": int(gen.size), "impostor_compared": int(imp.size),
            "failed_to_acquire": {"photos": sorted(failed.values(), key=lambda r: r["image"]),
                                  "genuine_pairs": gen_failed, "impostor_pairs": imp_failed},
            "not_compared": not_compared,
            "target_far": target_far, "recommended_threshold": best["threshold"],
            "recommended_far": best["far"], "recommended_frr": best["frr"], "recommended_fnmr": best["fnmr"],
            "frr_floor": round(gen_failed / gen_total, 5) if gen_total else 0.0,
            "fta_rate_genuine": round(gen_failed / gen_total, 5) if gen_total else 0.0,
            "genuine_distance_max": round(float(gen.max()), 4) if gen.size else None,
            "impostor_distance_min": round(float(imp.min()), 4) if imp.size else None,
            "notes": notes, "table": table}
