"""Progress of long analyses, and the log file of every folder iclab writes.

Analysis functions stay pure: a long loop wraps its iterable in :func:`track`, which does nothing unless a caller
(a study part, ``iclab heads``) opened :func:`reporting`; then it logs "what i/n, elapsed, eta" at most every
``every_s`` seconds, so a part that runs for minutes (the SmolLM2 ablations, the add-k recovery scan) shows how far
it is. :func:`record` appends a line, with the time, to ``iclab.log`` in every folder this process holds
(:func:`iclab.io.lock_folder` opens it), so each run, study, reproduce and sweep folder keeps what was printed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

REPORT_EVERY_S = 15.0  # seconds between two progress lines of one analysis

_reporter: ContextVar["_Reporter | None"] = ContextVar("iclab_progress", default=None)
_logs: dict[str, TextIO] = {}  # folder -> its open iclab.log


class _Reporter:
    def __init__(self, log: Callable[[str], None], label: str, every_s: float) -> None:
        self.log, self.label, self.every_s = log, label, every_s
        self.t0 = time.perf_counter()
        self.last = self.t0

    def tick(self, done: int, total: int, what: str, started: float) -> None:
        """``done`` of ``total`` items of a loop that began at ``started``: the eta is that loop's own rate (an
        analysis runs several loops in turn; the time of the earlier ones says nothing about this one's)."""
        now = time.perf_counter()
        if now - self.last < self.every_s or done <= 0 or done >= total:
            return
        self.last = now
        elapsed = now - self.t0
        eta = (now - started) / done * (total - done)
        self.log(f"  {self.label}: {what + ' ' if what else ''}{done}/{total}, {elapsed:.0f}s so far, eta {eta:.0f}s")


@contextmanager
def reporting(log: Callable[[str], None], label: str, every_s: float = REPORT_EVERY_S) -> Iterator[None]:
    """Within the block, :func:`track` loops report through ``log`` (the innermost tracked loop of each call)."""
    token = _reporter.set(_Reporter(log, label, every_s))
    try:
        yield
    finally:
        _reporter.reset(token)


def track(items: Iterable[T], total: int | None = None, what: str = "") -> Iterator[T]:
    """Yield ``items``, reporting each one done to the active :func:`reporting` block (if any)."""
    reporter = _reporter.get()
    if reporter is None:
        yield from items
        return
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    started = time.perf_counter()
    for i, item in enumerate(items):
        yield item
        reporter.tick(i + 1, n, what, started)


def open_log(folder_key: str, path) -> None:
    """Start appending to ``path`` (``folder/iclab.log``) for the folder held as ``folder_key``."""
    if folder_key not in _logs:
        _logs[folder_key] = open(path, "a", encoding="utf-8")


def close_log(folder_key: str, reason: str | None = None) -> None:
    """Stop logging to the folder's file; ``reason``: a last line (why the command stopped)."""
    f = _logs.pop(folder_key, None)
    if f is not None:
        if reason:
            f.write(f"{_now()} {reason}\n")
        f.close()


def record(line: str) -> None:
    """Append ``line`` with the time to the log of every folder this process holds."""
    for f in _logs.values():
        f.write(f"{_now()} {line}\n")
        f.flush()


def recorded(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` that also :func:`record`\\ s each line."""

    def both(line: str) -> None:
        record(line)
        log(line)

    return both


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")
