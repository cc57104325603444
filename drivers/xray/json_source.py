"""JSON result files: one object per file, keys named as in ``Scan`` plus ``image``.

``image`` (optional) is the file name of the scan image beside the result
file; the folder driver hashes it. Size is bounded before this is called.
"""

from __future__ import annotations

import json
from typing import Any

from drivers.xray.scan import ScanRejected

FORMAT = "json"
SUFFIXES = (".json",)


def parse(data: bytes, where: str) -> tuple[dict[str, Any], str | None]:
    """Bytes of a result file -> (Scan fields, image file name or None)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScanRejected(f"{where}: not UTF-8 text (byte {exc.start}); is this a result file?") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScanRejected(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
                           " (truncated or not JSON)") from None
    except (ValueError, RecursionError) as exc:  # huge integer literals, absurd nesting
        raise ScanRejected(f"{where}: JSON refused: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise ScanRejected(f"{where}: wrong schema: expected a JSON object, got {type(doc).__name__}")
    image = doc.pop("image", None)
    if image is not None and not isinstance(image, str):
        raise ScanRejected(f"{where}: wrong schema: image: expected a file name string")
    return doc, image
