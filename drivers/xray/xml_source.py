"""XML result files, parsed with defusedxml: no DTDs, no entities, no external references.

    <scan id="S1" scanner="SC-1" time="2026-01-31T09:15:00Z">
      <subject>A1234BC</subject> <operator>op7</operator> <reason>intelligence</reason>
      <outcome>suspicious</outcome> <decision>search</decision> <dose_usv>2.5</dose_usv>
      <regions><region x="10" y="20" w="30" h="40" label="dense"/></regions>
      <image file="S1.png"/>
    </scan>

A billion-laughs bomb or an external entity is refused before any expansion.
"""

from __future__ import annotations

from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from drivers.xray.scan import ScanRejected

FORMAT = "xml"
SUFFIXES = (".xml",)
_TEXT_FIELDS = ("subject", "operator", "reason", "outcome", "decision", "dose_usv")


def parse(data: bytes, where: str) -> tuple[dict[str, Any], str | None]:
    """Bytes of a result file -> (Scan fields, image file name or None)."""
    try:
        # A bare DTD is harmless to expat (it never fetches one); every entity
        # declaration is refused before expansion, which stops bombs and XXE.
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.EntitiesForbidden as exc:
        if exc.sysid or exc.pubid:
            raise ScanRejected(f"{where}: XML declares an external entity {exc.name!r}; refused "
                               "(XXE: a result file must not read other files)") from None
        raise ScanRejected(f"{where}: XML declares an entity {exc.name!r}; refused "
                           "(entity expansion is how billion-laughs bombs work)") from None
    except defusedxml.ExternalReferenceForbidden:
        raise ScanRejected(f"{where}: XML references an external entity; refused (XXE)") from None
    except SafeET.ParseError as exc:
        raise ScanRejected(f"{where}: invalid XML: {exc} (truncated or not XML)") from None
    if root.tag != "scan":
        raise ScanRejected(f"{where}: wrong schema: root element is <{root.tag[:40]}>, expected <scan>")
    fields: dict[str, Any] = {"scan_id": root.get("id"), "scanner": root.get("scanner"),
                              "time": root.get("time")}
    for name in _TEXT_FIELDS:
        node = root.find(name)
        if node is not None:
            fields[name] = (node.text or "").strip()
    regions = root.find("regions")
    if regions is not None:
        fields["regions"] = [dict(r.attrib) for r in regions.findall("region")]
    image = root.find("image")
    return {k: v for k, v in fields.items() if v is not None}, (image.get("file") if image is not None else None)
