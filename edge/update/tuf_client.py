"""Find and download this device's release through TUF (python-tuf's ngclient).

ngclient does the verification in the specification's order (root, timestamp,
snapshot, targets, then the delegation that covers the path); this module only
says which paths to ask for and turns ngclient's errors into one refusal code each,
for the ``update.refused`` event a supervisor reads:

- ``expired``: metadata past its expiry (a freeze: someone replays old metadata)
- ``version``: metadata older than what the device has seen, or snapshot and
  targets that do not match (rollback, mix-and-match)
- ``signature``: not signed by the keys the delegating role names (wrong role)
- ``hash_mismatch``: the archive is not the one the metadata describes
- ``unreachable``: the repository could not be downloaded from
- ``too_slow``: a download passed its deadline or fell below the throughput floor
  (``fetcher.BoundedFetcher``: a repository or a man in the middle dripping bytes);
  the refusal also names the URL, the role, the bytes, the seconds and the limit
- ``metadata``: any other malformed or inconsistent metadata
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import structlog

from edge.errors import EdgeError
from edge.update.repo import target_path
from edge.update.settings import UpdateSettings

log = structlog.get_logger("edge.update")
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


class UpdateRefused(EdgeError):
    """A release or its metadata failed verification; ``problem`` is the refusal code."""

    def __init__(self, problem: str, detail: str, facts: dict | None = None):
        super().__init__(f"update refused ({problem}): {detail}")
        self.problem, self.detail, self.facts = problem, detail, facts or {}


def parse_version(text: str) -> tuple[int, ...]:
    """'1.2.3' -> (1, 2, 3); releases are plain dotted numbers so that order is unambiguous."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise UpdateRefused("metadata", f"release version {text!r} is not dotted numbers like 1.2.3")
    return tuple(int(p) for p in text.split("."))


@dataclass(frozen=True)
class Offer:
    """A verified description of a release this device may install."""

    version: str
    path: str
    group: str
    length: int
    sha256: str


def groups_for(rollout_group: str, site: str) -> list[str]:
    """The rollout groups a device takes releases from, most specific first."""
    return [*(["canary"] if rollout_group == "canary" else []), f"site-{site}", "all"]


def _role(url: str, metadata_url: str) -> str:
    """'timestamp', 'root', 'gate.all', ... for a metadata URL; 'target' for a release archive."""
    if not url.startswith(metadata_url.rstrip("/") + "/"):
        return "target"
    name = unquote(url.rsplit("/", 1)[-1]).removesuffix(".json")
    version, _, rest = name.partition(".")
    return rest if version.isdigit() and rest else name


def _too_slow(exc, metadata_url: str) -> UpdateRefused:
    facts = {"url": exc.url, "role": _role(exc.url, metadata_url), "received_bytes": exc.received,
             "elapsed_s": round(exc.elapsed_s, 1), "limit": exc.limit}
    return UpdateRefused("too_slow", f"{facts['role']}: {exc}"[:500], facts)


def _map_errors(exc: Exception, metadata_url: str = "") -> UpdateRefused:
    from tuf.api import exceptions as tx

    from edge.update.fetcher import DownloadTooSlow

    if isinstance(exc, DownloadTooSlow):
        return _too_slow(exc, metadata_url)
    detail = f"{type(exc).__name__}: {exc}"[:300]
    for cls, problem in ((tx.ExpiredMetadataError, "expired"), (tx.BadVersionNumberError, "version"),
                         (tx.UnsignedMetadataError, "signature"),
                         (tx.LengthOrHashMismatchError, "hash_mismatch"),
                         (tx.DownloadLengthMismatchError, "hash_mismatch"),
                         (tx.DownloadError, "unreachable"), (tx.RepositoryError, "metadata")):
        if isinstance(exc, cls):
            return UpdateRefused(problem, detail)
    return UpdateRefused("metadata", detail)


class ReleaseSource:
    """One TUF session: refresh once, then look up and download this device's release."""

    def __init__(self, settings: UpdateSettings, *, device_class: str, site: str, cache_dir: Path,
                 fetcher=None):
        self.settings, self.device_class, self.site = settings, device_class, site
        self.meta_dir = Path(cache_dir) / "metadata"
        self.download_dir = Path(cache_dir) / "downloads"
        self._fetcher = fetcher  # default: BoundedFetcher with the settings' download limits
        self._updater = None

    def _open(self):
        from tuf.api import exceptions as tx
        from tuf.ngclient import Updater

        from edge.update.fetcher import BoundedFetcher, FetchLimits

        if self._fetcher is None:
            s = self.settings
            self._fetcher = BoundedFetcher(FetchLimits(allowance_s=s.download_allowance_s,
                                                       min_rate=s.download_min_rate,
                                                       rate_window_s=s.download_rate_window_s))
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        # The shipped root is the anchor on first use; after that the cached root, which
        # ngclient only ever replaced by a root that the previous one signed (rotation).
        bootstrap = None
        if not (self.meta_dir / "root.json").exists():
            try:
                bootstrap = self.settings.trusted_root.read_bytes()
            except OSError as exc:
                raise UpdateRefused("metadata", f"trusted root {self.settings.trusted_root}: {exc}") from None
        try:
            return Updater(str(self.meta_dir), self.settings.metadata_url, str(self.download_dir),
                           self.settings.targets_base(), fetcher=self._fetcher, bootstrap=bootstrap)
        except (tx.RepositoryError, ValueError) as exc:
            raise _map_errors(exc, self.settings.metadata_url) from None

    def find(self) -> Offer | None:
        """The newest release offered to this device's groups, or None; raises UpdateRefused."""
        from tuf.api import exceptions as tx

        try:
            self._updater = self._open()
            self._updater.refresh()
            offers = []
            for group in groups_for(self.settings.rollout_group, self.site):
                path = target_path(self.device_class, group)
                info = self._updater.get_targetinfo(path)
                if info is None:
                    continue
                version = (info.custom or {}).get("version")
                parse_version(version)
                offers.append(Offer(version, path, group, info.length, info.hashes.get("sha256", "")))
        except (tx.RepositoryError, tx.DownloadError, OSError) as exc:
            raise _map_errors(exc, self.settings.metadata_url) from None
        if not offers:
            return None
        return max(offers, key=lambda o: parse_version(o.version))

    def download(self, offer: Offer, dest: Path) -> Path:
        """Download and verify the archive against its signed length and hashes."""
        from tuf.api import exceptions as tx

        try:
            info = self._updater.get_targetinfo(offer.path)
            if info is None:
                raise UpdateRefused("metadata", f"{offer.path} is no longer offered")
            dest.parent.mkdir(parents=True, exist_ok=True)
            return Path(self._updater.download_target(info, str(dest)))
        except (tx.RepositoryError, tx.DownloadError) as exc:
            dest.unlink(missing_ok=True)
            raise _map_errors(exc, self.settings.metadata_url) from None
