"""The main job from an empty folder: `iclab reproduce --preset quick`, wall time and peak memory per entry and in total.

Each entry (the four studies, then the pretrained-model runs) runs as its own
`iclab reproduce --only NAME` process into one folder, so the peak resident
memory the OS reports is that entry's; the last call writes report.html over
all of them. Targets (2 CPU cores): all of it under 15 minutes and 3 GB.

    python benchmarks/reproduce.py [--out DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
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


def main() -> None:
    from iclab.reproduce import jobs

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="iclab-reproduce-"))
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
