"""The main job from an empty folder: `iclab reproduce --preset quick`, wall time and peak memory per entry and in total.

Each entry (the four studies, then the pretrained-model runs) runs as its own
`iclab reproduce --only NAME` process into one folder, so the peak resident
memory the OS reports is that entry's; the last call writes report.html over
all of them. Targets (2 CPU cores): all of it under 15 minutes and 3 GB.

With ``--workers N`` the whole job runs as one ``iclab reproduce --workers N``
(entries side by side); it prints each entry's wall time, the total, the
average concurrency (sum of the entries' times over the total) and
the peak resident memory of the whole process tree (sampled every 0.5 s).

With ``--previous REF`` (a git tag or commit of this repository, e.g. the last
release) the same job runs first with that release's code (a temporary git
worktree on PYTHONPATH, the same interpreter and packages), then with this
checkout's, one after the other on the same machine: each entry's time side by
side with the ratio, both totals, both peaks, each study's verdict counts and
every claim whose verdict differs between the two (from each study's
summary.json), so that a speed change is never read without its verdicts.

    python benchmarks/reproduce.py [--out DIR] [--only NAME ...] [--workers N] [--previous REF]
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
from collections import Counter
from pathlib import Path

from iclab.memory import tree_gb


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


def run_parallel(out: Path, workers: int | None, only: list[str] | None, env: dict | None = None) -> tuple[dict, float, float, int, str]:
    """The whole job as one ``iclab reproduce [--workers N]`` (None: the README's command, its default worker count):
    (reproduce.json's record, wall s, peak tree GB, exit code, the end of stderr)."""
    cmd = [sys.executable, "-m", "iclab", "reproduce", "--preset", "quick", "--out", str(out), "--device", "cpu"]
    cmd += ["--workers", str(workers)] if workers else []
    for name in only or []:
        cmd += ["--only", name]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_gb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    record = json.loads((out / "reproduce.json").read_text()) if (out / "reproduce.json").is_file() else {"studies": {}}
    return record, wall, peak[0], proc.returncode, err[-2000:]


def report_parallel(record: dict, wall: float, peak: float, code: int, err: str, workers: int | None, out: Path) -> None:
    entries = record["studies"]
    for name, e in entries.items():
        print(f"{name:20s} {e.get('status', '?'):10s} {e.get('wall_time_s', 0):7.0f} s", flush=True)
    busy = sum(e.get("wall_time_s", 0) for e in entries.values())
    print(f"{'total':20s} {'exit ' + str(code):10s} {wall:7.0f} s   ({wall / 60:.1f} min; target 15 min); "
          f"entries' own times sum to {busy:.0f} s: {busy / wall:.2f} entries at a time on average with {workers or 'the default'} workers "
          "(each entry slows with fewer threads: compare the total with a run without --workers)")
    print(f"peak resident memory of the process tree: {peak:.2f} GB (target 3 GB)   results in {out}")
    if code:
        print(err)


def verdicts(out: Path) -> dict[tuple[str, str], str]:
    """(entry, claim statement) -> verdict, from every study folder's summary.json under ``out``."""
    found = {}
    for summary in sorted(out.glob("*/summary.json")):
        for claim in json.loads(summary.read_text()).get("claims", []):
            found[summary.parent.name, claim["statement"]] = claim["verdict"]
    return found


def against_previous(ref: str, out: Path, workers: int | None, only: list[str] | None) -> None:
    """The job with ``ref``'s code, then with this checkout's: times, peaks and verdicts side by side."""
    repo = Path(__file__).resolve().parents[1]
    tree = Path(tempfile.mkdtemp(prefix="iclab-previous-")) / "src-tree"
    made = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], capture_output=True, text=True)
    if made.returncode:
        raise SystemExit(f"--previous {ref}: no such tag or commit in {repo} ({made.stderr.strip().splitlines()[-1]})")
    try:
        runs = {}
        for name, src in (("previous", tree / "src"), ("current", repo / "src")):
            env = {**os.environ, "PYTHONPATH": str(src)}
            version = subprocess.run([sys.executable, "-c", "import iclab; print(iclab.__version__)"], env=env,
                                     capture_output=True, text=True).stdout.strip()
            print(f"{name}: iclab {version} ({ref if name == 'previous' else 'this checkout'}) ...", flush=True)
            runs[name] = (version, *run_parallel(out / name, workers, only, env))
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
    (v0, rec0, wall0, peak0, code0, err0), (v1, rec1, wall1, peak1, code1, err1) = runs["previous"], runs["current"]
    print(f"\n{'entry':20s} {v0:>10s} {v1:>10s}  ratio")
    for name in dict.fromkeys([*rec0["studies"], *rec1["studies"]]):
        t0, t1 = (r["studies"].get(name, {}).get("wall_time_s") or float("nan") for r in (rec0, rec1))
        print(f"{name:20s} {t0:8.0f} s {t1:8.0f} s  {t0 / t1:.2f}x")
    print(f"{'total':20s} {wall0:8.0f} s {wall1:8.0f} s  {wall0 / wall1:.2f}x   ({wall1 / 60:.1f} min; target 15 min; exit {code0} / {code1})")
    print(f"{'peak tree memory':20s} {peak0:8.2f} GB {peak1:7.2f} GB")
    for code, err in ((code0, err0), (code1, err1)):
        if code:
            print(err)
    before, after = verdicts(out / "previous"), verdicts(out / "current")
    for study in dict.fromkeys(s for s, _ in [*before, *after]):
        counts = [Counter(v for (s, _), v in found.items() if s == study) for found in (before, after)]
        print(f"{study}: " + "  ->  ".join(", ".join(f"{n} {v}" for v, n in sorted(c.items())) or "none" for c in counts))
    moved = [(key, before.get(key), after.get(key)) for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    print(f"{len(moved)} claims differ in verdict or exist in one run only:" if moved else "every claim has the same verdict")
    for (study, statement), a, b in moved:
        print(f"  [{study}] {statement}: {a or '(absent)'} -> {b or '(absent)'}")


def main() -> None:
    from iclab.reproduce import jobs

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--workers", type=int, default=None, help="entries side by side (default: one at a time; with "
                    "--previous, iclab's own default, as the README's command runs)")
    ap.add_argument("--previous", help="a git tag or commit to run first, side by side with this checkout")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="iclab-reproduce-"))
    if args.previous:
        return against_previous(args.previous, out, args.workers, args.only)
    if args.workers and args.workers > 1:
        return report_parallel(*run_parallel(out, args.workers, args.only), args.workers, out)
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
