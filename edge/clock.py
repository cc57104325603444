"""Is the wall clock trustworthy right now? Flags events, never reorders them.

Two signals: the kernel's NTP status (adjtimex, as timedatectl reads it) and a
high-water mark of wall time that catches the clock being stepped backwards.
After a backwards step, events are flagged ``stepped_back`` until the wall
clock passes the latest time seen before the step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
_NTP_RECHECK_S = 10.0
_JUMP_TOLERANCE_S = 1.0


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (x86_64/aarch64 glibc); only modes/status are read.
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


def kernel_ntp_synced() -> bool | None:
    """True/False from adjtimex; None where the kernel cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return not (state == _TIME_ERROR or tx.status & _STA_UNSYNC)


class ClockMonitor:
    """Cheap per-event clock verdict: synced | unsynced | stepped_back | unknown."""

    def __init__(self, ntp_probe=kernel_ntp_synced, wall=time.time, mono=time.monotonic):
        self._probe, self._wall, self._mono = ntp_probe, wall, mono
        self._lock = threading.Lock()
        self._high_water = wall()
        self._ntp: bool | None = None
        self._ntp_checked = float("-inf")

    def state(self) -> str:
        with self._lock:
            mono, wall = self._mono(), self._wall()
            stepped_back = wall < self._high_water - _JUMP_TOLERANCE_S
            self._high_water = max(self._high_water, wall)
            if mono - self._ntp_checked >= _NTP_RECHECK_S:
                self._ntp, self._ntp_checked = self._probe(), mono
            ntp = self._ntp
        if stepped_back:
            return "stepped_back"
        if ntp is None:
            return "unknown"
        return "synced" if ntp else "unsynced"
