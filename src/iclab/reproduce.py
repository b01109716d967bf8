"""``iclab reproduce``: run every study at a preset, one folder each, then ``report.html``.

The quick preset also runs the induction and add-k studies on a real
pretrained language model (SmolLM2-135M, fetched once into iclab's cache).

A study that fails is recorded with its error and the others still run. A
study whose ``summary.json`` carries today's run identity (the same preset,
settings, result schemas and iclab version) is skipped, so an interrupted reproduce
loses nothing that was finished; a study done with other settings or another
version is run again (its cached parts are reused where their settings match).

By default one worker per CPU core (:func:`default_workers`); with ``workers > 1`` the entries run side by side
in that many processes, the
CPU threads split among them (small models are bound by per-operation
overhead, so two processes of one thread each train more steps per second than
one of two; docs/scaling.md has the measurements);
the pretrained-model entries share one process (one model in memory, fetched
once), and the longest entries start first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from iclab import memory, studies
from iclab.errors import IclabError, Interrupted
from iclab.io import atomic_write_json, holding_locks, lock_folder, output_dir
from iclab.studies.common import Summary, finished


def _complete(folder: Path, name: str, preset: str, overrides: Sequence[str] = ()) -> Summary | None:
    """The finished summary of study ``name`` at ``preset`` (+ ``overrides``) in ``folder``, if it carries today's run
    identity (:func:`~iclab.studies.common.finished`)."""
    declared = studies.study(name)
    if preset not in declared.presets:
        return None
    summary = finished(folder, declared.identity(declared.settings(preset, overrides)))
    return summary if summary is not None and summary.preset == preset else None


def versions() -> dict[str, str]:
    import numpy

    import iclab

    return {
        "iclab": iclab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


# The presets every study declares; the main job runs every study at one of them.
PRESETS = ("quick", "paper")


@dataclass(frozen=True)
class Job:
    """One entry of the main job: ``study`` run into ``out/<name>`` with these overrides."""

    name: str
    study: str
    overrides: tuple[str, ...] = ()
    title_suffix: str = ""
    minutes: float = 1.0
    pretrained: bool = False


def jobs(preset: str) -> list[Job]:
    """Every study at ``preset``, then (quick preset) the entries the studies add (on a pretrained model), all as the
    study declarations say."""
    declared = studies.all_studies()
    own = [Job(s.name, s.name, minutes=s.minutes) for s in declared]
    extra = [Job(e.name, s.name, e.overrides, e.title_suffix, e.minutes, e.pretrained) for s in declared for e in s.extra_entries]
    return own + (extra if preset == "quick" else [])


def lanes(todo: list[Job]) -> list[list[Job]]:
    """The entries grouped into what may run side by side, longest first: each study alone, the pretrained-model
    entries together (one model in memory, fetched once)."""
    shared = [j for j in todo if j.pretrained]
    groups = [[j] for j in todo if not j.pretrained] + ([shared] if shared else [])
    return sorted(groups, key=lambda lane: -sum(j.minutes for j in lane))


def compute_time(summary: Summary) -> float:
    """Seconds the study's training runs and parts took when they were computed (its ``timings_s``: earlier
    invocations' included, every seed summed): an entry's cost even where this invocation only resumed it or
    re-judged cached parts, whose own wall time is short."""
    return round(sum(summary.timings_s.values()), 1)


def run_entry(job: Job, preset: str, out: Path, device: torch.device, log: Callable[[str], None] = print,
              together: bool = False) -> dict[str, Any]:
    """Run one entry (``together``: its seeds' models trained as one batched model each, as ``iclab run --together``);
    its status, findings (or error), wall time and peak resident memory. Only an interruption propagates."""
    log(f"[{job.name}] running preset {preset} ...")
    entry: dict[str, Any] = {}
    fresh = memory.reset_peak()
    t0 = time.perf_counter()
    try:
        summary = studies.study(job.study).run(preset, out / job.name, list(job.overrides), device, together=together)
        entry.update(status="complete", findings=summary.findings, compute_time_s=compute_time(summary))
    except Interrupted:  # Ctrl-C / SIGTERM stops the whole job; finished parts are kept
        raise
    except Exception as err:  # a failing study is reported, the others still run
        entry.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        log(f"[{job.name}] FAILED: {type(err).__name__}: {err}")
    entry["wall_time_s"] = round(time.perf_counter() - t0, 1)
    entry["peak_memory_gb"] = round(memory.peak_gb(), 2)  # this entry's own process, from its start where it could reset
    if not fresh:
        entry["peak_memory_note"] = "the process's lifetime peak (no per-entry reset on this platform)"
    return entry


def _run_lane(lane: list[Job], preset: str, out: Path, device: str, threads: int, together: bool = False) -> dict[str, dict[str, Any]]:
    """One worker process's share: its entries in order, with ``threads`` CPU threads."""
    torch.set_num_threads(threads)
    return {job.name: run_entry(job, preset, out, torch.device(device), together=together) for job in lane}


def _complete_job(folder: Path, job: Job, preset: str) -> dict[str, Any] | None:
    return _complete(folder, job.study, preset, list(job.overrides))


def _read_record(out: Path) -> dict[str, Any]:
    """The reproduce.json already in ``out`` ({} when there is none or it cannot be read)."""
    try:
        data = json.loads((out / "reproduce.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("studies"), dict) else {}


def list_entries(out: Path) -> list[dict[str, Any]]:
    """One row per entry of the reproduction in ``out`` (its reproduce.json): name, status, the count of each verdict
    (from its summary.json; None where there is none to read), wall time and peak memory."""
    from iclab.claims import Verdict

    record = _read_record(Path(out))
    if not record:
        raise IclabError(f"{out}: holds no readable reproduce.json; give a folder written by `iclab reproduce`")
    rows = []
    for name, entry in record["studies"].items():
        try:
            summary = Summary.load(Path(out) / name / "summary.json") if entry.get("status") == "complete" else None
        except IclabError:
            summary = None
        claims = None if summary is None else summary.claims
        compute = entry.get("compute_time_s", None if summary is None else compute_time(summary))  # older records lack it
        rows.append({"name": name, "status": entry.get("status", "?"),
                     "verdicts": None if claims is None else {v.value: sum(c.verdict is v for c in claims) for v in Verdict},
                     "wall_time_s": entry.get("wall_time_s"), "compute_time_s": compute,
                     "peak_memory_gb": entry.get("peak_memory_gb")})
    return rows


def default_workers(device: torch.device) -> int:
    """One worker per CPU core this process may use, on the CPU (each entry's small models run faster on one thread
    of their own than sharing two: docs/scaling.md); one on an accelerator, which the entries would share."""
    if device.type != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


@holding_locks()
def reproduce(
    preset: str,
    out: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    only: list[str] | None = None,
    workers: int | None = None,
    seeds: int | None = None,
    together: bool = False,
) -> dict[str, Any]:
    """Run the studies (or ``only`` these entries) into ``out/<name>``, in ``workers`` processes side by side
    (default :func:`default_workers`); write ``out/reproduce.json`` after each entry.

    With ``only``, the entries of an earlier run in ``out`` stay in the record, so the report covers every entry
    the folder holds (entry by entry runs build up one report). A folder holding a reproduction at another preset is
    refused untouched: its studies' results would mix with this preset's. ``seeds``: how many seeds every entry runs
    and judges over (None: the presets'); ``together``: each study's seeds trained as one batched model per run
    (:meth:`iclab.studies.runner.Study.run_settings`), recorded in the record."""
    earlier = _read_record(Path(out))
    if earlier.get("preset") not in (None, preset):
        raise IclabError(f"--out {out}: holds a reproduction at preset {earlier['preset']}, not {preset}; choose another --out")
    output_dir(out)
    lock_folder(out, "reproduce")
    record: dict[str, Any] = {"preset": preset, "device": str(device), "versions": versions(), "together": together, "studies": {}}
    if only:
        record["studies"] = dict(earlier.get("studies", {}))
    order = [job.name for job in jobs(preset)]
    titles = {}

    def save(name: str, entry: dict[str, Any]) -> None:
        record["studies"][name] = {**titles[name], **entry}
        record["studies"] = {n: record["studies"][n] for n in sorted(record["studies"], key=lambda n: order.index(n) if n in order else len(order))}
        atomic_write_json(out / "reproduce.json", record)

    todo = []
    for job in jobs(preset):
        if seeds is not None:
            job = replace(job, overrides=(*job.overrides, f"seeds={seeds}"))
        name, declared = job.name, studies.study(job.study)
        if only and name not in only:
            continue
        titles[name] = {"title": declared.title + job.title_suffix, "paper": declared.paper}
        if (done := _complete_job(out / name, job, preset)) is not None:
            log(f"[{name}] already complete, skipped")
            was = earlier.get("studies", {}).get(name, {})  # the run that made it: its time and memory
            save(name, {"status": "complete", "skipped": True, "findings": done.findings, "compute_time_s": compute_time(done),
                        **{k: was[k] for k in ("wall_time_s", "peak_memory_gb") if k in was}})
        else:
            todo.append(job)
    workers = default_workers(device) if workers is None else workers
    t0 = time.perf_counter()
    with memory.TreePeak(os.getpid()) as tree:
        _run(todo, preset, out, device, log, workers, save, together)
    record["wall_time_s"] = round(time.perf_counter() - t0, 1)  # this invocation's, skipped entries not counted
    record["peak_memory_gb"] = round(tree.gb, 2)  # the process tree's, workers included, sampled every second
    atomic_write_json(out / "reproduce.json", record)
    from iclab.report import build_report

    record["report"] = str(build_report(out))
    return record


def _run(todo: list[Job], preset: str, out: Path, device: torch.device, log: Callable[[str], None], workers: int,
         save: Callable[[str, dict[str, Any]], None], together: bool = False) -> None:
    """The entries ``todo``, one after the other or in ``workers`` processes; ``save`` records each as it ends."""
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            save(job.name, run_entry(job, preset, out, device, log, together))
    else:
        groups = lanes(todo)
        n = min(workers, len(groups))
        threads = max(1, (os.cpu_count() or 1) // n)
        log(f"{len(todo)} entries in {n} worker processes, {threads} CPU thread(s) each")
        # spawn, not fork: forking a process whose torch / OpenMP threads are running can deadlock the children
        pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
        try:
            running = [pool.submit(_run_lane, lane, preset, out, str(device), threads, together) for lane in groups]
            for done in as_completed(running):
                for name, entry in done.result().items():
                    log(f"[{name}] {entry['status']} in {entry['wall_time_s']:.0f} s")
                    save(name, entry)
        except BaseException:  # an interruption (or a lost worker) stops every worker; what they finished is on disk
            for child in multiprocessing.active_children():
                child.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
