"""Peak resident memory per pipeline stage, without touching the process's own peak counter.

:class:`PeakRSS` samples the resident set size (``/proc/self/statm``) every ``interval`` seconds in a daemon
thread and reads the kernel's high-water mark (``VmHWM``) at every lap: a stage that set a new process-wide peak
gets that exact peak, any other stage the largest sampled value (a spike shorter than ``interval`` inside such a
stage can be missed). Where ``/proc`` is missing (not Linux), laps report the process peak so far
(``ru_maxrss``), which never decreases.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

__all__ = ["PeakRSS"]

_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def _current_mib() -> float | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_MIB
    except (OSError, ValueError, IndexError):
        return None


def _high_water_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakRSS:
    """Context manager measuring the peak resident memory (MiB) between calls of :meth:`lap`."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._max = 0.0
        self._hwm = _high_water_mib()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = _current_mib()
            if now is not None:
                with self._lock:
                    self._max = max(self._max, now)

    def __enter__(self) -> PeakRSS:
        if _current_mib() is not None:
            self._max = _current_mib() or 0.0
            self._thread = threading.Thread(target=self._sample, name="smo-peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def lap(self) -> float:
        """Return the peak resident memory in MiB since the previous lap (or the start) and start a new lap."""
        hwm = _high_water_mib()
        now = _current_mib()
        with self._lock:
            if now is None:
                peak = hwm
            else:
                peak = max(self._max, now, hwm if hwm > self._hwm else 0.0)
                self._max = now
        self._hwm = hwm
        return float(peak)
