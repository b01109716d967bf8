"""Resident memory as the OS counts it (Linux ``/proc``; ``getrusage`` elsewhere): a process's peak since a reset, and
the current total of a process tree, so that ``reproduce.json`` can say what each entry and the whole job held."""

from __future__ import annotations

import resource
import sys
import threading
from pathlib import Path

GB = 2**30


def reset_peak() -> bool:
    """Start this process's peak-memory count afresh (the kernel's high-water mark VmHWM drops to the current resident
    set); False where the platform has no such reset, and :func:`peak_gb` then reports the process's lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(path: Path, field: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_gb() -> float:
    """This process's peak resident memory in GB since :func:`reset_peak` (or since it started)."""
    kb = _status_kb(Path("/proc/self/status"), "VmHWM:")
    if kb is None:  # ru_maxrss: KiB on Linux, bytes on macOS
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / GB if sys.platform == "darwin" else rss * 1024 / GB
    return kb * 1024 / GB


def tree_gb(pid: int) -> float:
    """Resident memory now of process ``pid`` and all its descendants, in GB (0 where /proc is not there)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        kb = _status_kb(Path(f"/proc/{p}/status"), "VmRSS:")
        if kb is None:
            continue
        total += kb
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total * 1024 / GB


class TreePeak:
    """The largest :func:`tree_gb` of a process seen while the ``with`` block runs, sampled every ``every`` seconds by a
    background thread (the job's worker processes included); ``gb`` holds it."""

    def __init__(self, pid: int, every: float = 1.0):
        self.pid, self.every, self.gb = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.gb = max(self.gb, tree_gb(self.pid))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> "TreePeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.gb = max(self.gb, tree_gb(self.pid))
