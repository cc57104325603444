"""Resident memory of a process tree, from /proc: RSS, PSS, USS per process, and their union.

RSS counts a page shared by two processes (the interpreter, a library) in
both; PSS splits it between every process that maps it, on the whole machine
(so it drops when unrelated processes load the same files); the union counts
every page resident in the tree once, whoever else maps it: what the tree
holds in RAM. The union needs the page frame numbers of ``/proc/PID/pagemap``,
which only root can read; without them it is None.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import psutil

_PAGE = os.sysconf("SC_PAGE_SIZE")
_PFN_MASK = (1 << 55) - 1


def smaps_mb(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of one process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value) / 1024
    return {"rss_mb": fields["Rss"], "pss_mb": fields["Pss"],
            "uss_mb": fields["Private_Clean"] + fields["Private_Dirty"]}


def resident_frames(pid: int) -> set[int] | None:
    """Physical page frames resident in one process; None when they read as 0 (not root)."""
    frames: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if start >= 1 << 47:  # [vsyscall]: no pagemap entries
                continue
            pagemap.seek(start // _PAGE * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((end - start) // _PAGE * 8)):
                if entry >> 63:  # present in RAM
                    frames.add(entry & _PFN_MASK)
    return None if frames <= {0} else frames


def union_mb(pids: list[int]) -> float | None:
    """Every page resident in any of ``pids``, counted once, in MB."""
    frames: set[int] = set()
    for pid in pids:
        try:
            mine = resident_frames(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        except PermissionError:
            return None
        if mine is None:
            return None
        frames |= mine
    return len(frames) * _PAGE / 2**20


def tree(pid: int) -> dict[int, str]:
    """The process and every descendant: {pid: label} (``-m`` module, else the program's name)."""
    top = psutil.Process(pid)
    out = {}
    for p in [top, *top.children(recursive=True)]:
        try:
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        label = cmd[2] if len(cmd) > 2 and cmd[1] == "-m" else Path(cmd[0]).name if cmd else "?"
        out[p.pid] = label
    return out


def snapshot(pid: int) -> dict[str, dict]:
    """smaps figures, threads and CPU seconds of every process in the tree, keyed "label:pid"."""
    out = {}
    for child, label in tree(pid).items():
        try:
            p = psutil.Process(child)
            out[f"{label}:{child}"] = {**smaps_mb(child), "threads": p.num_threads(), "cpu_s": sum(p.cpu_times()[:2])}
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
    return out
