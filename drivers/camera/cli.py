"""``edge biometrics``: enroll, verify, identify, inspect the gallery, calibrate thresholds.

These work on the device's own gallery (state_dir/biometrics) without the
daemon running, through the same pipeline and decision code as the gate;
except a staff enrollment, which the running daemon writes once a second
operator has approved it (drivers/camera/staff.py).
Images are decided one at a time, so liveness does not apply here.

Every photo is judged on its own: one that cannot be read (missing, a
folder, empty, cut short, HEIC, not an image) gets one ``error:`` line naming
the file, what is wrong and what to do (``--json``: a row with ``status``
``unreadable`` and ``error.code``), the others are still decided, and the
command exits 1. Enrollment checks every photo and enrolls nothing unless all
of them can be used, so a subject never ends up with fewer templates than
asked for.
"""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from edge.cli._common import (
    EX_FAIL,
    EX_UNAVAILABLE,
    edge_errors,
    fail,
    held_text,
    json_option,
    output,
    settings_from,
)

# Not exists=True: a missing or unreadable photo is reported per photo (drivers/camera/imagefile.py)
# and the others are still decided.
_IMAGE = click.Path(path_type=Path)
_ADVICE = {  # what to do about a photo the pipeline cannot decide on, by quality problem or status
    "multiple": "use a photo with exactly one face",
    "face_too_small": "use a photo where the face is larger (crop closer around it)",
    "blurred": "use a sharp photo",
    "not_frontal": "use a frontal photo (looking at the camera)",
    "cut_off": "use a photo with the whole face in it",
}
_NO_FACE = "use a sharp, frontal photo of one face; if the face is small in a large photo, crop closer around it"


def _driver_options(settings) -> dict[str, Any]:
    """The first camera.face driver's options (thresholds, pipeline), so the CLI decides like the gate."""
    for entry in settings.drivers:
        if entry.kind == "camera.face":
            from edge.config import driver_config

            return driver_config(entry).model_dump(mode="json")
    return {}


def _encoder_cache(state_dir: Path) -> str | None:
    """The device's converted encoder weights, shared with the daemon; None (the account's own
    cache) for an operator's account that cannot reach the daemon's state folder, as on a device
    (a staff enrolment needs only the control socket)."""
    from drivers.camera.models import encoder_cache_dir

    shared = Path(encoder_cache_dir(state_dir))
    if not os.path.isdir(shared.parent):  # first use: made private, as the gallery makes it
        try:
            shared.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return None
    return str(shared) if os.access(shared.parent, os.W_OK | os.X_OK) else None


class _Engine:
    def __init__(self, settings, *, readonly: bool = False, gallery: bool = True):
        from drivers.camera.decide import Decider, Thresholds
        from drivers.camera.gallery import Gallery
        from drivers.camera.pipeline import Pipeline, PipelineConfig

        opts = _driver_options(settings)
        self.pipeline = Pipeline(PipelineConfig.from_dict({"encoder_cache": _encoder_cache(Path(settings.state_dir)),
                                                           **opts.get("pipeline", {}), "allow_multiple": False}))
        if not gallery:  # encoding only: a staff enrolment is written by the daemon
            return
        self.gallery = Gallery(settings.state_dir, readonly=readonly)
        self.decider = Decider(self.gallery, Thresholds.from_dict(opts.get("thresholds", {})),
                               purge_grace_s=float(opts.get("purge_grace_s", 3600.0)))

    def analyse(self, path: Path, enrolling: bool = False):
        from drivers.camera.pipeline import read_image

        return self.pipeline.analyse(read_image(path), use_presence=False, thorough=True, enrolling=enrolling)


def _unusable(a) -> tuple[str, str]:
    """Why the pipeline could not decide on this photo, and what to do instead."""
    if a.status == "multiple":
        return f"{a.faces} faces", _ADVICE["multiple"]
    problems = a.quality.get("problems", []) if a.status == "quality_low" else []
    if not problems:
        return "no face found", _NO_FACE
    return ", ".join(problems), "; ".join(_ADVICE.get(p, "use another photo") for p in problems)


def _error_row(path: Path, exc) -> dict[str, Any]:
    return {"image": str(path), "status": "unreadable", "decision": None, "accepted": False,
            "reason": exc.code, "error": {"code": exc.code, "message": str(exc)}, "timings_ms": {},
            "decision_ms": 0.0}


def _report_errors(rows: list[dict[str, Any]], as_json: bool) -> None:
    """One ``error:`` line per photo that could not be read (stderr; --json has them in its rows)."""
    if not as_json:
        for r in rows:
            if r.get("error"):
                click.echo(f"error: {r['error']['message']}", err=True)


def _when(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date/time; expected ISO 8601, e.g. 2026-03-01T14:00Z",
                                 param_hint=option) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@click.group()
def biometrics() -> None:
    """Face gallery of this device: enroll, verify, identify, gallery, calibrate.

    IMAGE is a JPEG, PNG, WebP, BMP, TIFF or GIF photo (a phone's EXIF orientation is applied;
    HEIC must be exported as JPEG first). A photo that cannot be read gets one error line and
    exit 1; the other photos are still decided.
    """


@biometrics.command()
@click.option("--subject", "subject_id", required=True, help="Subject id (booking system or staff number).")
@click.option("--role", type=click.Choice(["visitor", "staff"]), required=True,
              help="staff needs a second operator's `edge cmd approve` (a staff face is a standing pass).")
@click.option("--valid-from", help="Start of the validity window (ISO 8601, UTC if no zone).")
@click.option("--valid-until", help="End of the validity window (ISO 8601, UTC if no zone); required for visitors.")
@click.option("--reason", required=True, help="Why this person is enrolled here and not through central.")
@click.option("--operator", default=None, help="Visitors: who enrolls (default: your login, or sudo's caller). "
              "Staff: not allowed (the daemon records the accounts it sees).")
@click.argument("images", nargs=-1, required=True, type=_IMAGE)
@json_option
@click.pass_context
@edge_errors
def enroll(ctx, subject_id, role, valid_from, valid_until, reason, operator, images, as_json):
    """Enroll SUBJECT from one or more photos (one face each, good quality).

    A visitor is enrolled at once by one operator. A staff face is a standing pass through the
    gate, so it needs two people: the photos are encoded here and handed to the running daemon,
    which holds the enrolment until a second operator, under their own account, runs
    `edge cmd approve ID` (this command exits 1 and prints the id). Either is reported to central
    as a biometric.local_enrollment event (operator, second operator, reason, template hash)
    and kept only while central's gallery snapshots vouch for it."""
    from drivers.camera.gallery import Subject

    if role == "visitor" and not valid_until:
        raise click.UsageError("a visitor needs --valid-until (the end of the booked visit); "
                               "their template is refused after it and then purged")
    if role == "staff" and operator:
        raise click.UsageError("--operator is for a visitor; a staff enrolment is recorded under the accounts "
                               "the daemon sees on its control socket (yours, and the second operator's)")
    settings = settings_from(ctx)
    engine = _Engine(settings, gallery=role == "visitor")
    templates, faces = _encode_all(engine, images)
    bad = [f["error"]["message"] for f in faces if not f["ok"]]
    if bad:
        summary = (f"nothing enrolled: {len(bad)} of {len(faces)} photos cannot be used; replace them or "
                   f"leave them out and run again")
        if as_json:
            output({"ok": False, "error": bad[0] if len(faces) == 1 else summary, "subject_id": subject_id,
                    "images": faces}, True, "")
        else:
            for line in bad + ([summary] if len(faces) > 1 else []):
                click.echo(f"error: {line}", err=True)
        ctx.exit(EX_FAIL)
    subject = Subject(subject_id, role, templates, _when(valid_from, "--valid-from"),
                      _when(valid_until, "--valid-until")).validate()
    if role == "staff":
        _ask_for_staff(ctx, settings, subject, reason, faces, as_json)
        return
    operator = operator or os.environ.get("SUDO_USER") or getpass.getuser()
    digest = engine.gallery.enroll_local(subject, operator, reason)
    result = {"ok": True, "subject_id": subject_id, "role": role, "templates": len(templates),
              "operator": operator, "template_sha256": digest, "state": "local-pending",
              "valid_from": _iso(subject.valid_from), "valid_until": _iso(subject.valid_until), "images": faces}
    output(result, as_json, lambda r: f"enrolled {r['subject_id']} ({r['role']}) with {r['templates']} template(s); "
                                      "local-pending: reported to central, kept only if central confirms it")


def _encode_all(engine: _Engine, images) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Every photo's template, and a row per photo saying whether it could be used and why not."""
    from drivers.camera.imagefile import ImageError

    templates, faces = [], []
    with click.progressbar(images, label="encoding", file=sys.stderr) as bar:
        for path in bar:
            try:
                a = engine.analyse(path, enrolling=True)
            except ImageError as exc:
                faces.append({"image": str(path), "ok": False, "status": "unreadable",
                              "error": {"code": exc.code, "message": str(exc)}})
                continue
            if a.status != "ok":
                why, advice = _unusable(a)
                faces.append({"image": str(path), "ok": False, "status": a.status,
                              "error": {"code": a.status, "message": f"{path}: cannot enroll from this photo "
                                                                     f"({why}); {advice}"}})
                continue
            templates.append(a.encoding.astype("<f4").tobytes())
            faces.append({"image": str(path), "ok": True, "face_px": a.face.width,
                          "sharpness": a.quality["sharpness"]})
    return templates, faces


def _ask_for_staff(ctx, settings, subject, reason: str, faces: list[dict[str, Any]], as_json: bool) -> None:
    """Hand a staff enrolment to the daemon, which holds it for a second operator's approval."""
    import base64

    from drivers.camera.gallery import templates_sha256
    from drivers.camera.staff import COMMAND, TARGET
    from edge.commands.local import ControlUnavailable, send

    digest = templates_sha256(subject.templates)
    args = {"subject_id": subject.subject_id, "templates": [base64.b64encode(t).decode() for t in subject.templates],
            "template_count": len(subject.templates), "sha256": digest, "reason": reason}
    args.update({k: _iso(v) for k, v in (("valid_from", subject.valid_from), ("valid_until", subject.valid_until))
                 if v is not None})
    try:
        reply = send(settings.state_dir, TARGET, COMMAND, args, reason)
    except ControlUnavailable as exc:
        fail(f"nothing enrolled: a staff enrolment goes through the running daemon, which holds it for a "
             f"second operator ({exc})", EX_UNAVAILABLE, as_json=as_json)
    base = {"subject_id": subject.subject_id, "role": "staff", "templates": len(subject.templates),
            "template_sha256": digest, "images": faces}
    approval = (reply.get("result") or {}).get("approval_id")
    if approval:
        if as_json:
            message = f"{subject.subject_id} (staff) is not enrolled yet: {reply.get('detail')}"
            output({"ok": False, "state": "held", "approval_id": approval, "valid_s": reply["result"].get("valid_s"),
                    "error": message, **base}, True, "")
        else:
            click.echo(f"{subject.subject_id} (staff) is not enrolled yet: {held_text(reply)}")
        ctx.exit(EX_FAIL)
    if reply.get("reason") == "wrong_target":
        fail("nothing enrolled: this device's daemon takes no staff enrolment (no camera.face driver in the "
             "config it runs with)", as_json=as_json, result=reply)
    fail(f"nothing enrolled: {reply.get('reason') or reply.get('status')}: {reply.get('detail')}",
         as_json=as_json, result=reply)


def _decide_images(engine: _Engine, images, decide) -> list[dict[str, Any]]:
    from drivers.camera.imagefile import ImageError

    engine.decider.refresh()  # load the gallery once, outside the per-image timings
    results = []
    for path in images:
        try:
            a = engine.analyse(path)
        except ImageError as exc:
            results.append(_error_row(path, exc))
            continue
        row: dict[str, Any] = {"image": str(path), "status": a.status, "timings_ms": a.timings_ms}
        if a.status == "ok":
            import time

            started = time.perf_counter()
            d = decide(a.encoding)
            a.timings_ms["search"] = round((time.perf_counter() - started) * 1000, 2)
            row.update(decision=d.type, accepted=d.accepted, **d.payload)
        elif a.status == "multiple":
            row.update(decision="biometric.multiple_faces", accepted=False, faces=a.faces, reason=_unusable(a)[0],
                       advice=_unusable(a)[1])
        elif a.status == "quality_low":
            row.update(decision="biometric.quality_low", accepted=False, quality=a.quality,
                       reason=_unusable(a)[0], advice=_unusable(a)[1])
        else:
            row.update(decision=None, accepted=False, reason="no face found", advice=_NO_FACE)
        row["decision_ms"] = round(sum(a.timings_ms.values()), 2)
        results.append(row)
    return results


def _decision_lines(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        if r.get("error"):
            continue  # said on stderr, one error line each
        verdict = (r["decision"] or "no decision").removeprefix("biometric.")
        who = r.get("subject_id") or "-"
        dist = "-" if r.get("distance") is None else f"{r['distance']:.3f}"
        extra = f" margin {r['margin']:.3f}" if r.get("margin") is not None else ""
        reason = f" ({r['reason']})" if r.get("reason") else ""
        if r.get("advice"):
            reason = f" ({r['reason']}: {r['advice']})"
        stages = " ".join(f"{k} {v:.0f}" for k, v in r["timings_ms"].items())
        # Subject and distance only where a face was compared (not for no-face or two-face photos).
        match = (f" subject {who} distance {dist}{' / ' + str(r['threshold']) if 'threshold' in r else ''}{extra}"
                 if r.get("subject_id") or r.get("distance") is not None else "")
        lines.append(f"{r['image']}: {verdict}{reason}{match}\n"
                     f"    {r['decision_ms']:.0f} ms: {stages}")
    return "\n".join(lines)


@biometrics.command()
@click.option("--subject", "subject_id", required=True, help="Subject the person claims to be (their booking).")
@click.option("--booking", "booking_id", help="Booking id, recorded with the decision.")
@click.argument("images", nargs=-1, required=True, type=_IMAGE)
@json_option
@click.pass_context
@edge_errors
def verify(ctx, subject_id, booking_id, images, as_json):
    """1:1: is the face in each IMAGE the enrolled SUBJECT? Exit 1 if any is not (or cannot be read)."""
    engine = _Engine(settings_from(ctx), readonly=True)
    rows = _decide_images(engine, images,
                          lambda enc: engine.decider.verify(subject_id, enc, booking_id=booking_id))
    _report_errors(rows, as_json)
    output({"ok": all(r["accepted"] for r in rows), "results": rows}, as_json, lambda d: _decision_lines(rows))
    if not all(r["accepted"] for r in rows):
        ctx.exit(EX_FAIL)


@biometrics.command()
@click.argument("images", nargs=-1, required=True, type=_IMAGE)
@json_option
@click.pass_context
@edge_errors
def identify(ctx, images, as_json):
    """1:N against staff: who is in each IMAGE, with distances and per-stage timings.

    Exit 1 if an IMAGE cannot be read; a face nobody matches is an answer (unknown), not an error.
    """
    engine = _Engine(settings_from(ctx), readonly=True)
    rows = _decide_images(engine, images, engine.decider.identify)
    _report_errors(rows, as_json)
    unreadable = any(r.get("error") for r in rows)
    output({"ok": not unreadable, "results": rows}, as_json, lambda d: _decision_lines(rows))
    if unreadable:
        ctx.exit(EX_FAIL)


@biometrics.command()
@json_option
@click.pass_context
@edge_errors
def gallery(ctx, as_json):
    """Counts and sync versions of the gallery (never templates)."""
    from drivers.camera.gallery import Gallery

    settings = settings_from(ctx)
    g = Gallery(settings.state_dir, readonly=True)
    stats = g.stats()
    stats["synced_at"] = _iso(stats.get("synced_at"))
    output(stats, as_json, lambda s: (
        f"subjects {s['subjects']} (staff {s['staff']}, visitors {s['visitors']}; central {s['central']}, "
        f"local {s['local']}), templates {s['templates']}\n"
        f"sync epoch {s['epoch']} version {s['version']}, synced at {s['synced_at'] or 'never'}\n"
        f"expired not yet purged {s['expired_not_purged']}, not yet valid {s['not_yet_valid']}"))


@biometrics.command()
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target-far", type=click.FloatRange(0, 1), default=0.001, show_default=True,
              help="Highest acceptable false-accept rate.")
@json_option
@click.pass_context
@edge_errors
def calibrate(ctx, pairs, target_far, as_json):
    """FAR/FRR across thresholds from a CSV of file_x,file_y,same and a recommended threshold.

    same is yes/no, true/false or 1/0; a header row is optional; relative paths are read from the
    CSV's folder. A bad line stops the command with its line number. A photo the gate cannot use
    counts as a false reject in a genuine pair and is never an accept; it is listed apart.
    """
    from drivers.camera.calibrate import PairsError, read_pairs, sweep

    settings = settings_from(ctx)
    try:
        rows = read_pairs(pairs)
    except PairsError as exc:
        errors = [{"line": n, "message": m} for n, m in exc.problems]
        if as_json:
            output({"ok": False, "error": exc.lines[0] if len(exc.lines) == 1 else
                    f"{pairs}: {len(exc.lines)} problems; fix them and run again", "errors": errors}, True, "")
            ctx.exit(EX_FAIL)
        for line in exc.lines:
            click.echo(f"error: {line}", err=True)
        fail(f"{pairs}: fix the line(s) above and run again")
    from drivers.camera.models import encoder_cache_dir
    from drivers.camera.pipeline import Pipeline, PipelineConfig

    opts = _driver_options(settings)
    pipeline = Pipeline(PipelineConfig.from_dict({"encoder_cache": encoder_cache_dir(settings.state_dir),
                                                  **opts.get("pipeline", {})}))
    files = sorted({f for r in rows for f in (r[0], r[1])})
    with click.progressbar(files, label="encoding", file=sys.stderr) as bar:
        result = sweep(pipeline, rows, bar, target_far)
    output(result, as_json, _calibration_text)


def _calibration_text(r: dict[str, Any]) -> str:
    fta = r["failed_to_acquire"]
    lines = [f"pairs {r['genuine_pairs']} genuine, {r['impostor_pairs']} impostor; compared "
             f"{r['genuine_compared']} genuine, {r['impostor_compared']} impostor"]
    if fta["photos"]:
        lines.append(f"photos the gate cannot use: {len(fta['photos'])} (in {fta['genuine_pairs']} genuine pairs, "
                     f"counted as false rejects; {fta['impostor_pairs']} impostor pairs, not counted)")
        lines += [f"  {p['image']}: {p['status']} ({p['reason']})" for p in fta["photos"]]
    lines.append("threshold    FAR      FRR      FNMR (decisions only)")
    lines += [f"  {t['threshold']:.2f}    {t['far']:.4f}   {t['frr']:.4f}   {t['fnmr']:.4f}" for t in r["table"][::5]]
    lines.append(f"recommended threshold {r['recommended_threshold']} for FAR <= {r['target_far']}"
                 f" (FRR {r['recommended_frr']}, FNMR {r['recommended_fnmr']})")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
