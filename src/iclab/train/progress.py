"""Progress display: a live bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from iclab.progress import record


class Progress:
    """Reports (step, loss, steps/s, ETA). ``live`` defaults to whether ``stream`` is a terminal."""

    def __init__(self, total: int, start: int, label: str, stream: TextIO | None = None, live: bool | None = None):
        self.total, self.start, self.label = total, start, label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.t0 = time.perf_counter()
        self._bar = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=start, loss="-", rate="-")

    def rate(self, step: int) -> float:
        done = step - self.start
        return done / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, step: int, loss: float) -> None:
        rate = self.rate(step)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        line = f"{self.label} step {step}/{self.total} loss {loss:.4g} {rate:.1f} steps/s eta {eta:.0f}s"
        record(line)  # the run folder's log, live bar or not
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4g}", rate=f"{rate:.1f}")
            return
        print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        record(text)
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
