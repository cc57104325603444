"""``edge learning``: the tablet's course cache for field engineers."""

from __future__ import annotations

import sys
import time

import click

from edge.cli._common import (
    EX_UNAVAILABLE,
    edge_errors,
    fail,
    human_bytes,
    json_option,
    output,
    require_role,
    settings_from,
)


@click.group()
def learning() -> None:
    """E-learning content cache: status, fetch a course, verify the files."""


def _tablet(ctx: click.Context, as_json: bool):
    """The settings of a tablet whose learning cache is on; otherwise say which it is not."""
    settings = settings_from(ctx)
    require_role(ctx, settings, "tablet", "the e-learning cache", as_json=as_json)
    if not settings.learning.enabled:
        fail("the e-learning cache is off on this tablet ([learning] enabled = false)", as_json=as_json)
    return settings


def _live_status(settings) -> tuple[dict | None, str | None]:
    """The daemon's live learning status over the local API, or (None, why not)."""
    from edge.localapi.client import ApiUnavailable, call_json, socket_path

    try:
        code, body = call_json(socket_path(settings), "GET", "/v1/learning/status", timeout=3)
    except ApiUnavailable as exc:
        return None, str(exc)
    return (body, None) if code == 200 else (None, f"local API answered {code}")


def _bar(done: int, total: int, width: int = 24) -> str:
    frac = done / total if total else 1.0
    filled = int(frac * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {frac * 100:5.1f}%"


def _status_text(s: dict) -> str:
    lines = [f"catalog   v{s['catalog_version']} ({s['courses']} courses)" if s.get("catalog_version")
             else "catalog   none yet (arrives from central when online)"]
    lines.append(f"cache     {human_bytes(s['cached_bytes'])} in {s['cached_items']} items, pinned "
                 f"{human_bytes(s['pinned_bytes'])}, quota {human_bytes(s['quota_bytes'])}"
                 + (f", {s['pinned_missing']} pinned items missing" if s.get("pinned_missing") else ""))
    if s.get("paused_for_security"):
        lines.append("downloads paused: security events are waiting for the uplink")
    for d in s.get("downloads", []):
        lines.append(f"  {d['course']}/{d['name']:<24} {_bar(d['done_bytes'], d['size'])} "
                     f"{human_bytes(d['done_bytes'])} of {human_bytes(d['size'])}")
    t = s.get("transfer") or {}
    if t:
        lines.append(f"transfer  {t.get('items_completed', 0)} items done, {t.get('items_failed', 0)} failed, "
                     f"{t.get('chunks_corrupt', 0)} corrupt chunks refetched, "
                     f"{human_bytes(t.get('bytes_fetched', 0))} fetched")
    if s.get("catalogs_rejected"):
        lines.append(f"rejected  {s['catalogs_rejected']} catalogs; last: {s['last_rejection']}")
    if s.get("last_error"):
        lines.append(f"last error: {s['last_error']}")
    if s.get("source") == "status_file":
        lines.append(f"(daemon not reachable: {s['why']}; figures from its last status file)")
    return "\n".join(lines)


@learning.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Catalog version, cached and pinned bytes, quota, downloads in flight."""
    from edge.cli._state import read_status

    settings = _tablet(ctx, as_json)
    live, why = _live_status(settings)
    if live is None:
        saved = ((read_status(settings.state_dir) or {}).get("components") or {}).get("learning")
        if saved is None:
            fail(f"no learning status: {why}", EX_UNAVAILABLE, as_json=as_json)
        live = {**saved, "source": "status_file", "why": why}
    output(live, as_json, _status_text)


@learning.command()
@click.argument("course")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the download, with a progress bar.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait at most.")
@json_option
@click.pass_context
@edge_errors
def fetch(ctx: click.Context, course: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Download every item of COURSE into the cache now (pinned or not)."""
    from edge.localapi.client import ApiUnavailable, call_json, socket_path

    settings = _tablet(ctx, as_json)
    path = socket_path(settings)
    try:
        code, body = call_json(path, "POST", "/v1/learning/fetch", {"course": course})
    except ApiUnavailable as exc:  # the daemon downloads: without it, exit 69 as `learning status` does
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    if code != 202:
        fail(body["error"]["message"], as_json=as_json)
    if wait:
        _wait_course(path, course, timeout, quiet=as_json)
    code, cat = call_json(path, "GET", "/v1/learning/catalog")
    items = next(c for c in cat["courses"] if c["id"] == course)["items"]
    missing = [i["name"] for i in items if not i["cached"]]
    result = {"ok": not missing or not wait, "course": course, "items": len(items), "missing": missing}
    output(result, as_json, lambda r: f"{course}: {r['items'] - len(missing)} of {r['items']} items cached"
           + (f"; missing: {', '.join(missing)}" if missing else ""))
    sys.exit(0 if result["ok"] else 1)


def _wait_course(path, course: str, timeout: float, quiet: bool) -> None:
    from edge.localapi.client import call_json

    deadline = time.monotonic() + timeout
    with click.progressbar(length=100, label=f"fetching {course}", file=sys.stderr,
                           hidden=quiet) as bar:
        shown = 0
        while time.monotonic() < deadline:
            _, s = call_json(path, "GET", "/v1/learning/status")
            mine = [d for d in s["downloads"] if d["course"] == course]
            if not mine:
                break
            pct = int(100 * sum(d["done_bytes"] for d in mine) / max(1, sum(d["size"] for d in mine)))
            bar.update(max(0, pct - shown))
            shown = max(shown, pct)
            time.sleep(0.5)  # polling a progress figure for a person, not waiting on a condition
        bar.update(100 - shown)


@learning.command()
@json_option
@click.pass_context
@edge_errors
def verify(ctx: click.Context, as_json: bool) -> None:
    """Re-hash every cached file; corrupt ones are removed and fetched again. Exit 1 if any."""
    from edge.localapi.client import ApiUnavailable, call_json, socket_path
    from services.learning._cache import sha256_file

    settings = _tablet(ctx, as_json)
    objects = settings.state_dir / "learning" / "objects"
    files = sorted(p for p in objects.glob("*") if len(p.name) == 64) if objects.is_dir() else []
    total = sum(p.stat().st_size for p in files)
    corrupt = []
    with click.progressbar(length=total, label="verifying", file=sys.stderr, hidden=as_json) as bar:
        for p in files:
            if sha256_file(p, bar.update) != p.name:
                corrupt.append(p.name)
    repaired = []
    for sha in corrupt:
        try:  # the daemon owns the cache: ask it to drop and refetch
            call_json(socket_path(settings), "POST", "/v1/learning/invalidate", {"sha256": sha})
        except ApiUnavailable:  # not running: remove it; the daemon fetches it again when it starts
            (objects / sha).unlink(missing_ok=True)
        repaired.append(sha)
    result = {"ok": not corrupt, "files": len(files), "bytes": total, "corrupt": corrupt}
    output(result, as_json, lambda r: f"verified {r['files']} files ({human_bytes(r['bytes'])}): "
           + ("all good" if not corrupt else f"{len(corrupt)} corrupt, removed and queued for refetch"))
    sys.exit(0 if not corrupt else 1)
