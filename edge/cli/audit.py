"""``edge audit verify``: walk the tamper-evident chain and name the first break."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge.cli._common import edge_errors, json_option, light_settings, output
from edge.cli._state import open_reader


@click.group()
def audit() -> None:
    """Audit the local event store."""


@audit.command("verify")
@click.option("--heads", "heads_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Chain heads central recorded from this device's batches: a JSON list of "
                   '{"seq", "hash"} or one such object (or a whole batch) per line.')
@json_option
@click.pass_context
@edge_errors
def verify(ctx: click.Context, heads_file: Path | None, as_json: bool) -> None:
    """Check every stored event against the hash chain. Exit 1 on the first break.

    With --heads, also check the chain against the heads central recorded: a local
    rewrite, even by someone holding the audit key, no longer matches them."""
    heads = _load_heads(heads_file) if heads_file else None
    reader = open_reader(light_settings(ctx).state_dir)
    try:
        total = reader.stats()["stored"]
        if as_json or total < 50_000:
            report = reader.verify()
        else:
            with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
                done = [0]

                def progress(n: int) -> None:
                    bar.update(n - done[0])
                    done[0] = n

                report = reader.verify(progress)
        result = report.as_dict()
        if heads is not None:
            result["heads"] = reader.check_heads(heads)
            result["ok"] = report.ok and not result["heads"]["mismatches"]
    finally:
        reader.close()
    output(result, as_json, _text)
    sys.exit(0 if result["ok"] else 1)


def _load_heads(path: Path) -> list[tuple[int, bytes]]:
    text = path.read_text()
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
        heads = []
        for item in items:
            head = item.get("chain", item)
            heads.append((int(head["seq"]), bytes.fromhex(head["hash"])))
        return heads
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.BadParameter(f"{path}: not a list of chain heads ({exc}); expected "
                                 '[{"seq": 12, "hash": "<64 hex>"}, ...] or one object per line',
                                 param_hint="--heads") from None


def _text(r: dict) -> str:
    span = f"seq {r['first_seq']}..{r['last_seq']}" if r["last_seq"] else "no events"
    h = r.get("heads")
    heads = (f"; central's heads: {h['matched']} of {h['checked']} match, {h['unverifiable']} no longer stored"
             if h else "")
    if h and h["mismatches"]:
        first = h["mismatches"][0]
        return (f"audit chain REWRITTEN: at seq {first['seq']} the local chain differs from the head central "
                f"recorded ({len(h['mismatches'])} head(s) differ){heads}\n"
                "(history was changed after it was synced; keep this device's store for investigation)")
    if r["ok"]:
        return f"audit chain ok: {r['checked']} events checked ({span}){heads}"
    return (f"audit chain BROKEN at seq {r['break_seq']}: {r['problem']}\n"
            f"({r['checked']} events verified before the break; keep this device's store for investigation)")
