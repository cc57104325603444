"""``xray.folder``: the scanner exports result files (JSON, XML or DICOS) into a folder.

Per file: wait until it is complete (not open for writing, size and mtime
unchanged for ``settle_s``; names starting with '.' or ending in .tmp/.part are
still being written), check its size *before* reading, parse it with a safe
parser, emit one ``xray.scan``, then move it (and its image) to ``processed/``.
A file that cannot be accepted goes to ``quarantine/`` with
``<name>.reason.json`` beside it and an ``xray.rejected`` event: never
deleted, never a crash, and the next file goes on as usual.

Exactly once: the event store is the commit point. A scan's key
(scanner/scan_id) is checked with the x-ray service before emitting (the
same key with different content is quarantined, never dropped); after a
kill -9 between emit and move the file is still in the inbox, its key is
found (the service caught up on the store before drivers started) and the
file is only moved.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from drivers.xray import _files, dicos_source, json_source, xml_source
from drivers.xray.scan import ImageRef, ScanIncomplete, ScanRejected, build_scan
from edge.config_files import WorkDir
from edge.driver import Driver, DriverConfig
from edge.errors import DriverError
from edge.events import printable

SOURCES = {suffix: mod for mod in (json_source, xml_source, dicos_source) for suffix in mod.SUFFIXES}
_PARTIAL = (".tmp", ".part", ".partial", ".reason.json")


class FolderConfig(DriverConfig):
    path: WorkDir = Field(description="The folder the scanner writes result files into.")
    processed_dir: Path | None = Field(default=None, description="Default: `<path>/processed` (same filesystem).")
    quarantine_dir: Path | None = Field(default=None, description="Default: `<path>/quarantine` (same filesystem).")
    poll_s: float = Field(default=0.5, gt=0, le=60, description="How often the folder is looked at.")
    settle_s: float = Field(default=1.0, ge=0, le=600, description="Size and mtime unchanged this long.")
    max_result_bytes: int = Field(default=1024 * 1024, ge=1024, description="JSON/XML files above are refused unread.")
    max_dicos_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="DICOS files above are "
                                                                                "refused unread.")
    max_image_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="A referenced image above "
                                                                                "this is refused.")
    image_suffixes: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".raw"],
                                      description="Files with these suffixes are images results refer to, "
                                                  "never results themselves.")
    image_wait_s: float = Field(default=30.0, ge=0, description="Wait this long for a referenced image.")
    scanner: str | None = Field(default=None, description="Scanner id for records that do not name one.")
    incomplete_wait_s: float = Field(default=60.0, ge=0, le=86400,
                                     description="A DICOS file cut short waits this long for the rest, then "
                                                 "is quarantined as truncated.")


class XrayFolderDriver(Driver):
    """Watch-folder adapter for JSON, XML and DICOS scan results."""

    Config = FolderConfig

    def __init__(self, config: FolderConfig, ctx):
        super().__init__(config, ctx)
        self.inbox = config.path
        self.processed = config.processed_dir or config.path / "processed"
        self.quarantine = config.quarantine_dir or config.path / "quarantine"
        self._watch: dict[str, tuple[tuple[int, int], float]] = {}  # name -> (size, mtime_ns), since
        self._stuck: set[str] = set()
        self._incomplete_since: dict[str, float] = {}
        self._folder_problem: str | None = None
        # Our own output folders inside the inbox are never input, even if replaced by a file.
        self._own = {p.name for p in (self.processed, self.quarantine) if p.parent == self.inbox}
        self.counts = {"emitted": 0, "duplicates": 0, "quarantined": 0, "polls": 0, "busy": 0}

    def run(self) -> None:
        self.service = self.ctx.service("xray")  # the daemon's dose ledger (services/xray)
        if self.service is None:
            raise DriverError("the x-ray service is not running in this daemon; xray.* drivers need it")
        for folder in (self.inbox, self.processed, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)
        _files.check_inbox(self.inbox)
        self._outputs_ok()  # at start: a link or a foreign filesystem is reported before any scan
        while not self.ctx.stopping.is_set():
            self.poll()
            if self.ctx.wait(self.config.poll_s):
                return

    def poll(self) -> None:
        """One pass over the inbox: take every complete file, oldest first."""
        self.counts["polls"] += 1
        present = set()
        for entry in self._entries():
            if self.ctx.stopping.is_set():
                return
            present.add(entry.name)
            if self._candidate(entry) and self._complete(entry):
                self._take(Path(entry.path))
        self._watch = {k: v for k, v in self._watch.items() if k in present}

    def _entries(self) -> list[os.DirEntry]:
        entries = []
        for entry in os.scandir(self.inbox):
            try:
                entries.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name, entry))
            except FileNotFoundError:
                continue
        return [e for _, _, e in sorted(entries, key=lambda t: (t[0], t[1]))]

    def _candidate(self, entry: os.DirEntry) -> bool:
        name = entry.name
        if name.startswith(".") or name.endswith(_PARTIAL) or name in self._stuck or name in self._own:
            return False
        if entry.is_symlink():
            return True  # quarantined below: a link could point anywhere on the device
        if not entry.is_file(follow_symlinks=False):
            return False
        return Path(name).suffix.lower() not in self.config.image_suffixes

    def _complete(self, entry: os.DirEntry) -> bool:
        try:
            st = os.lstat(entry.path)  # fresh: DirEntry caches its stat
        except FileNotFoundError:
            return False
        signature = (st.st_size, st.st_mtime_ns)
        now = time.monotonic()
        seen = self._watch.get(entry.name)
        if seen is None or seen[0] != signature:
            self._watch[entry.name] = (signature, now)
            return False  # first sighting of this size: look again next poll
        if now - seen[1] < self.config.settle_s:
            return False
        if _files.being_written(Path(entry.path)):
            self.counts["busy"] += 1
            return False
        return True

    def _take(self, path: Path) -> None:
        """Take one file: an event, or quarantine with the reason; never an exception for a bad file."""
        try:
            self._accept(path)
        except ScanIncomplete as exc:
            self._incomplete(path, exc.reason)
        except ScanRejected as exc:
            self._quarantine(path, exc.reason)
        except FileNotFoundError:
            self._watch.pop(path.name, None)  # removed by someone else meanwhile: nothing to do
        except OSError as exc:
            self._quarantine(path, f"{printable(path.name)}: cannot read: {exc.strerror or exc}")
        except (ValueError, ArithmeticError, LookupError, TypeError, RecursionError) as exc:
            # A parser tripped on this file's content: the file is refused, the inbox keeps flowing.
            self._quarantine(path, f"{printable(path.name)}: refused: {type(exc).__name__}: {str(exc)[:200]}")

    def _incomplete(self, path: Path, reason: str) -> None:
        seen = self._incomplete_since.setdefault(path.name, time.monotonic())
        if time.monotonic() - seen < self.config.incomplete_wait_s:
            self._watch.pop(path.name, None)  # look again once it has settled anew
            return
        self._incomplete_since.pop(path.name, None)
        self._quarantine(path, reason.replace("; waiting for the rest", f"; nothing more came in "
                                              f"{self.config.incomplete_wait_s:g}s"))

    def _accept(self, path: Path) -> None:
        name, size = printable(path.name), path.lstat().st_size
        if path.is_symlink():
            raise ScanRejected(f"{name}: symbolic links are not accepted; the scanner must write real files")
        if name != path.name:
            raise ScanRejected(f"{name}: the file name is not valid UTF-8; rename it on the scanner")
        source = SOURCES.get(path.suffix.lower())
        if source is None:
            raise ScanRejected(f"{name}: unsupported file type {path.suffix or '(none)'!r}; "
                               f"expected one of {', '.join(sorted(SOURCES))}")
        limit = self.config.max_dicos_bytes if source is dicos_source else self.config.max_result_bytes
        if size > limit:
            raise ScanRejected(f"{name}: {size} bytes is over the {limit}-byte limit for "
                               f"{source.FORMAT} files; not read")
        if size == 0:
            raise ScanRejected(f"{name}: empty file")
        f, _ = _files.open_regular(path)
        with f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ScanRejected(f"{name}: grew past the {limit}-byte limit while being read; not accepted")
        fields, image_name = source.parse(data, name)
        if self.config.scanner and isinstance(fields, dict):
            fields.setdefault("scanner", self.config.scanner)
        scan = build_scan({**fields, "image": None} if image_name else fields, name)
        record_sha256 = hashlib.sha256(data).hexdigest()
        prior = self.service.recorded(scan.key)
        if prior is not None:
            if prior and prior != record_sha256:
                raise ScanRejected(f"{name}: scan {scan.scan_id!r} of scanner {scan.scanner!r} is already "
                                   "recorded with different content; not counted (is the scanner reusing ids?)")
            self._finish(path, None, duplicate=True, key=scan.key)
            return
        image_path = None
        if image_name:
            image_path = self._image(path, image_name)
            if image_path is False:
                return  # image not there yet: try again next poll
            fields = {**fields, "image": self._hash_image(image_path, name) if image_path else None}
            scan = build_scan(fields, name)
        payload = scan.payload(format=source.FORMAT, record_sha256=record_sha256)
        if image_name and image_path is None:
            payload["image_missing"] = image_name
        self.ctx.emit("xray.scan", payload, "normal")
        self.service.emitted(scan.key, record_sha256)
        self.counts["emitted"] += 1
        self.ctx.log.info("xray_scan_emitted", file=name, scan_id=scan.scan_id, format=source.FORMAT)
        self._finish(path, image_path, duplicate=False, key=scan.key)

    def _image(self, result: Path, image_name: str) -> Path | None | bool:
        """The image's path; False = wait for it; None = gave up waiting (scan goes without it)."""
        if "/" in image_name or "\\" in image_name or image_name.startswith(".") or not image_name:
            raise ScanRejected(f"{result.name}: image {image_name[:60]!r} must be a plain file name "
                               "in the watch folder")
        image = self.inbox / image_name
        if image.is_file() and not image.is_symlink() and not _files.being_written(image):
            return image
        age = time.time() - result.stat().st_mtime
        if age < self.config.image_wait_s:
            return False
        self.ctx.log.warning("xray_image_missing", file=result.name, image=image_name)
        return None

    def _hash_image(self, image: Path, where: str) -> dict[str, Any]:
        f, size = _files.open_regular(image)  # the descriptor is checked: a FIFO cannot hang us
        with f:
            if size > self.config.max_image_bytes:
                raise ScanRejected(f"{where}: image {printable(image.name)} is {size} bytes, over the "
                                   f"{self.config.max_image_bytes}-byte limit")
            digest, read = hashlib.sha256(), 0
            while read < size and (chunk := f.read(min(1024 * 1024, size - read))):
                digest.update(chunk)
                read += len(chunk)
        return ImageRef(sha256=digest.hexdigest(), bytes=read).model_dump()

    def _finish(self, path: Path, image: Path | None, *, duplicate: bool, key: str) -> None:
        if duplicate:
            self.counts["duplicates"] += 1
            self.ctx.log.info("xray_scan_already_stored", file=path.name, key=key)
        if not self._outputs_ok():
            return  # left in place until the folders are fixed; its key keeps it from counting twice
        try:
            if image is not None:
                _files.move(image, self.processed, self.inbox)
            _files.move(path, self.processed, self.inbox)
        except OSError as exc:
            # Emitted already; left in place and skipped from now on, reported once and in health.
            self._stuck.add(path.name)
            self.ctx.log.error("xray_move_failed", file=printable(path.name), to=str(self.processed),
                               error=str(exc))

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move a refused file to quarantine/ with its reason; if it cannot move, skip it from now on."""
        name, reason = printable(path.name), printable(reason, 500)
        try:
            size = path.lstat().st_size
        except FileNotFoundError:
            return
        if not self._outputs_ok():
            return  # refused again, and recorded once, when quarantine/ is a real folder again
        try:
            target = _files.move(path, self.quarantine, self.inbox)
        except OSError as exc:
            self._stuck.add(path.name)  # left in place, never deleted; reported once and in health
            self.ctx.log.error("xray_quarantine_failed", file=name, error=str(exc), reason=reason)
            target = path
        else:
            try:
                _files.write_reason(target, self.inbox, reason, driver=self.ctx.name, size=size)
            except OSError as exc:  # moved, so never read again; the event still carries the reason
                self.ctx.log.error("xray_reason_not_written", file=name, error=str(exc))
        self.counts["quarantined"] += 1
        self.ctx.log.warning("xray_file_quarantined", file=name, reason=reason[:300])
        self.ctx.emit("xray.rejected", {"file": name, "bytes": size, "reason": reason,
                                        "quarantined_to": printable(str(target), 1000)}, "normal")

    def _outputs_ok(self) -> bool:
        """processed/ and quarantine/ are real folders on the inbox's filesystem (checked before each move)."""
        try:
            for folder in (self.processed, self.quarantine):
                try:
                    folder.mkdir(exist_ok=True)  # removed by someone: made again, as at start
                except OSError:
                    pass  # a file or a dangling link in its place: the check below says which
                _files.check_output_folder(folder, self.inbox)
        except DriverError as exc:
            if self._folder_problem != str(exc):
                self.ctx.log.error("xray_output_folder_unsafe", problem=str(exc))
                self._folder_problem = str(exc)
                self.ctx.health_changed()
            return False
        if self._folder_problem is not None:
            self.ctx.log.info("xray_output_folder_ok_again")
            self._folder_problem = None
            self.ctx.health_changed()
        return True

    def health(self) -> dict[str, Any]:
        status = "degraded" if self._stuck or self._folder_problem else "ok"
        if self._folder_problem:
            return {"status": status, "problem": self._folder_problem, **self.counts}
        return {"status": status, "inbox": str(self.inbox), **self.counts,
                "stuck": [printable(n, 120) for n in sorted(self._stuck)[:10]]}
