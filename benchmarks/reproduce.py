"""The main job from an empty folder: `iclab reproduce --preset quick`, wall time and peak memory per entry and in total.

Each entry (the four studies, then the pretrained-model runs) runs as its own
`iclab reproduce --only NAME` process into one folder, so the peak resident
memory the OS reports is that entry's; the last call writes report.html over
all of them. Targets (2 CPU cores): all of it under 15 minutes and 3 GB.

With ``--workers N`` the whole job runs as one ``iclab reproduce --workers N``
(entries side by side); it prints each entry's wall time, the total, the
average concurrency (sum of the entries' times over the total) and
the peak resident memory of the whole process tree (sampled every 0.5 s).

    python benchmarks/reproduce.py [--out DIR] [--only NAME ...] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def run_entry(name: str, out: Path) -> tuple[float, float, str]:
    """(wall seconds, peak GB, status) of one entry in its own process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "iclab", "reproduce", "--preset", "quick", "--out", str(out), "--only", name,
                           "--device", "cpu"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (KiB)
    record = json.loads((out / "reproduce.json").read_text()) if (out / "reproduce.json").is_file() else {}
    status = record.get("studies", {}).get(name, {}).get("status", f"exit {done.returncode}")
    return wall, (peak if peak > before else before) / 2**20, status


def tree_rss_gb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (Linux /proc), in GB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 2**20


def run_parallel(out: Path, workers: int, only: list[str] | None) -> None:
    """The whole job as one ``iclab reproduce --workers N``: entry times, total, speed-up, peak tree memory."""
    cmd = [sys.executable, "-m", "iclab", "reproduce", "--preset", "quick", "--out", str(out), "--device", "cpu", "--workers", str(workers)]
    for name in only or []:
        cmd += ["--only", name]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_gb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    record = json.loads((out / "reproduce.json").read_text()) if (out / "reproduce.json").is_file() else {"studies": {}}
    entries = record["studies"]
    for name, e in entries.items():
        print(f"{name:20s} {e.get('status', '?'):10s} {e.get('wall_time_s', 0):7.0f} s", flush=True)
    busy = sum(e.get("wall_time_s", 0) for e in entries.values())
    print(f"{'total':20s} {'exit ' + str(proc.returncode):10s} {wall:7.0f} s   ({wall / 60:.1f} min; target 15 min); "
          f"entries' own times sum to {busy:.0f} s: {busy / wall:.2f} entries at a time on average with {workers} workers "
          "(each entry slows with fewer threads: compare the total with a run without --workers)")
    print(f"peak resident memory of the process tree: {peak[0]:.2f} GB (target 3 GB)   results in {out}")
    if proc.returncode:
        print(err[-2000:])


def main() -> None:
    from iclab.reproduce import jobs

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="iclab-reproduce-"))
    if args.workers > 1:
        return run_parallel(out, args.workers, args.only)
    names = args.only or [j.name for j in jobs("quick")]
    total, rows = 0.0, []
    for name in names:
        wall, peak, status = run_entry(name, out)
        total += wall
        rows.append((name, wall, peak, status))
        print(f"{name:20s} {status:10s} {wall:7.0f} s   peak <= {peak:.2f} GB (largest process so far)", flush=True)
    print(f"{'total':20s} {'':10s} {total:7.0f} s   ({total / 60:.1f} min; target 15 min)   results in {out}")
    print("(peak memory is the largest of this and earlier entries' processes: RUSAGE_CHILDREN keeps the maximum)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
