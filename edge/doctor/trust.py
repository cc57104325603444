"""Doctor checks of trust: every anchor file (public only, roles, mode), and package versions."""

from __future__ import annotations

from edge.doctor.check import Check

#: Packages whose version decides whether a known vulnerability is present.
SECURITY_PACKAGES = ("cryptography", "paho-mqtt", "pydantic", "pydicom", "pyserial", "structlog")


def check_trust(settings) -> list[Check]:
    from edge.trust import TrustAnchorError, load_anchors, read_anchor

    paths = settings.trust.central_keys
    if not paths:
        return [Check("trust", True, "no central keys configured: remote commands are refused, "
                      "local ones work")]
    checks = []
    for path in paths:
        try:
            anchor = read_anchor(path)
        except TrustAnchorError as exc:
            checks.append(Check("trust", False, exc.lines[0], "install central's PUBLIC key (0640) with its "
                                "NAME.pub.json roles file; see docs/security.md", str(path)))
            continue
        expires = anchor.expires.isoformat() if anchor.expires else "never"
        checks.append(Check("trust", True, f"key id {anchor.key_id} roles {','.join(sorted(anchor.roles))} "
                            f"expires {expires}", target=str(path)))
    if all(c.ok for c in checks):
        try:
            load_anchors(paths)  # the checks across files: duplicates
        except TrustAnchorError as exc:
            checks.append(Check("trust", False, "; ".join(exc.lines), "list each key once"))
    return checks


def check_packages(settings) -> list[Check]:
    """Installed versions of the security-relevant packages (compare with the advisories)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in SECURITY_PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return [Check("packages", True, "; ".join(found))]
