"""Enrollment, alignment and still-photo options of the face pipeline, FAR/FRR on the same pairs.

Every option decides the same pairs at the default 1:1 threshold, the first photo of a pair
enrolled (the enrollment's quality rules: ``min_face_px``), the second the probe:

- ``default``: one enrollment photo, 5-point landmarks, the numpy encoder, a still probe
  decided down to ``min_still_face_px`` (what the gate and the CLI run);
- ``probe_min_face_80``: the probe held to ``min_face_px`` too (before issue 24);
- ``jitter10``: the enrollment encoded with 10 jittered crops (dlib's ``num_jitters``), the
  probe as by default (a lane has no time for jitters);
- ``multi_photo``: every other photo of the enrollment's person enrolled too (the people are
  the connected groups of same-person pairs; never the probe or a copy of it), the nearest
  template decides;
- ``multi_photo_jitter10``: both;
- ``landmarks68``: the face chip aligned on the 68-point model instead of the 5-point one, on
  both sides (the same boxes).

A photo without a usable face is a reject of its pairs, never skipped. Beside FAR and FRR
each option gives its distances: the largest and mean genuine one (how close a genuine pair
came to a false reject) and the smallest impostor one (how close to a false accept).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

OPTIONS = ("default", "probe_min_face_80", "jitter10", "multi_photo", "multi_photo_jitter10", "landmarks68")
# option -> (enrollment table, probe table)
_TABLES = {"default": ("enroll", "probe"), "probe_min_face_80": ("enroll", "enroll"),
           "jitter10": ("jitter10", "probe"), "multi_photo": ("enroll", "probe"),
           "multi_photo_jitter10": ("jitter10", "probe"), "landmarks68": ("enroll68", "probe68")}


def _encodings(files: list[Path]) -> dict[str, dict[Path, np.ndarray | None]]:
    import cv2

    from drivers.camera.models import DlibEncoder, _model_file, resnet_file
    from drivers.camera.pipeline import Pipeline, read_image

    pipeline = Pipeline()
    dlib_net = DlibEncoder(resnet_file())
    shaper68 = pipeline._dlib.shape_predictor(str(_model_file("shape_predictor_68_face_landmarks.dat")))
    out: dict[str, dict[Path, np.ndarray | None]] = {
        k: {} for k in ("enroll", "probe", "jitter10", "enroll68", "probe68")}
    for i, f in enumerate(files, 1):
        frame = read_image(f)
        rgb, gray = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        for side, enrolling in (("enroll", True), ("probe", False)):
            a = pipeline.analyse(frame, use_presence=False, thorough=True, enrolling=enrolling)
            out[side][f] = a.encoding
            shape68 = shaper68(gray, pipeline._dlib.rectangle(*a.face.box)) if a.encoding is not None else None
            out[f"{side}68"][f] = pipeline._encoder.encode(rgb, shape68) if shape68 is not None else None
            if enrolling:
                out["jitter10"][f] = dlib_net.encode(rgb, a.face.shape, 10) if a.encoding is not None else None
        print(f"\rpairs options: encoded {i}/{len(files)} photos", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def _people(rows) -> dict[Path, frozenset[Path]]:
    """Each photo's person: the photos linked to it by same-person pairs."""
    parent: dict[Path, Path] = {}

    def root(p: Path) -> Path:
        while parent.setdefault(p, p) != p:
            p = parent[p]
        return p

    for x, y, same in rows:
        root(x), root(y)
        if same:
            parent[root(x)] = root(y)
    groups: dict[Path, set[Path]] = {}
    for p in parent:
        groups.setdefault(root(p), set()).add(p)
    return {p: frozenset(groups[root(p)]) for p in parent}


def evaluate(rows, threshold: float) -> dict[str, dict]:
    files = sorted({f for r in rows for f in r[:2]})
    enc = _encodings(files)
    people = _people(rows)

    def templates(option: str, x: Path, y: Path) -> list[np.ndarray]:
        table = enc[_TABLES[option][0]]
        # Never the probe, nor a copy of the same photo (shared_pairs' degraded_* copies).
        enrolled = {p for p in people[x] if _source(p) != _source(y)} if option.startswith("multi_photo") else {x}
        return [table[p] for p in enrolled if table[p] is not None]

    out = {}
    for option in OPTIONS:
        probe_table = enc[_TABLES[option][1]]
        fa = fr = 0
        genuine, impostor = [], []
        for x, y, same in rows:
            probe, enrolled = probe_table[y], templates(option, x, y)
            distance = min((float(np.linalg.norm(t - probe)) for t in enrolled), default=None) \
                if probe is not None else None
            accept = distance is not None and distance <= threshold
            if distance is not None:
                (genuine if same else impostor).append(distance)
            fr += same and not accept
            fa += (not same) and accept
        gen, imp = sum(1 for r in rows if r[2]), sum(1 for r in rows if not r[2])
        out[option] = {"far": round(fa / max(imp, 1), 4), "frr": round(fr / max(gen, 1), 4),
                       "false_accepts": fa, "false_rejects": fr, "genuine": gen, "impostor": imp,
                       "genuine_distance_max": round(max(genuine, default=0.0), 3),
                       "genuine_distance_mean": round(float(np.mean(genuine)) if genuine else 0.0, 3),
                       "impostor_distance_min": round(min(impostor, default=0.0), 3)}
    return out


def _source(photo: Path) -> str:
    return photo.stem.removeprefix(_DEGRADED)


_DEGRADED = "degraded_"


def shared_pairs(faces: Path, folder: Path) -> Path:
    """Pairs built offline from the shared photos: every clean pair, and every enrollment photo
    against a degraded copy of each other photo (small, blurred, dark, heavily compressed: a
    poor lane camera). Written as ``folder/pairs.csv``; returns its path."""
    import cv2

    people = {}
    with open(faces / "MANIFEST.csv", newline="") as f:
        for row in csv.DictReader(f):
            if ";" not in row["identities"]:
                people[faces / row["file"]] = row["identities"]
    degraded = {}
    for photo in people:
        img = cv2.imread(str(photo))
        scale = min(1.0, 640 / max(img.shape[:2]))
        small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        dark = np.clip(255 * (cv2.GaussianBlur(small, (0, 0), 0.8) / 255.0) ** 1.4, 0, 255).astype(np.uint8)
        out = folder / f"{_DEGRADED}{photo.stem}.jpg"
        cv2.imwrite(str(out), dark, [cv2.IMWRITE_JPEG_QUALITY, 40])
        degraded[photo] = out
    photos = sorted(people)
    lines = []
    for i, x in enumerate(photos):
        for y in photos[i + 1:]:
            lines.append((x, y, people[x] == people[y]))
        for y in photos:
            if y != x:
                lines.append((x, degraded[y], people[x] == people[y]))
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_x", "file_y", "same"])
        w.writerows((str(x), str(y), "yes" if same else "no") for x, y, same in lines)
    return path
