"""``iclab reproduce``: run every built study at a preset, one folder each, then ``report.html``.

The quick preset also runs the induction and add-k studies on a real
pretrained language model (SmolLM2-135M, fetched once into iclab's cache).

A study that fails is recorded with its error and the others still run. A
study whose ``summary.json`` is already complete for the same preset, the same
settings and the same iclab version is skipped, so an interrupted reproduce
loses nothing that was finished; a study done with other settings or another
version is run again (its cached parts are reused where their settings match).
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from iclab import studies
from iclab.io import atomic_write_json, output_dir
from iclab.errors import Interrupted


def _complete(summary_file: Path, name: str, preset: str, overrides: list[str] = ()) -> dict[str, Any] | None:
    """The finished summary of study ``name`` at ``preset`` (+ ``overrides``), if its settings and iclab version are today's."""
    import iclab
    from iclab.config import config_hash
    if not summary_file.is_file():
        return None
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError:
        return None
    declared = studies.study(name)
    if preset not in declared.presets:
        return None
    same = (summary.get("preset") == preset
            and summary.get("iclab_version") == iclab.__version__
            and summary.get("settings_hash") == config_hash(declared.settings(preset, overrides)))
    return summary if same else None


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


@dataclass(frozen=True)
class Job:
    """One entry of the main job: a study run into ``out/<name>`` with these overrides."""

    name: str
    study: str
    overrides: tuple[str, ...] = ()
    title_suffix: str = ""


# The studies on a real pretrained language model (fetched the first time), at a size that fits the quick budget.
PRETRAINED_JOBS = (
    Job("induction-smollm2", "induction", ("model=smollm2-135m",), " (SmolLM2-135M, a pretrained LM)"),
    Job("addk-smollm2", "addk", ("model=smollm2-135m", "eval_per_task=8", "scan_shots=[1,5]"), " (SmolLM2-135M, a pretrained LM)"),
)


def jobs(preset: str) -> list[Job]:
    """Every built study at ``preset``, then (quick preset) the pretrained-model runs."""
    own = [Job(name, name) for name in studies.STUDIES]
    pretrained = [j for j in PRETRAINED_JOBS if j.study in studies.STUDIES] if preset == "quick" else []
    return own + pretrained


def _complete_job(folder: Path, job: Job, preset: str) -> dict[str, Any] | None:
    return _complete(folder / "summary.json", job.study, preset, list(job.overrides))


def _read_record(out: Path) -> dict[str, Any]:
    """The reproduce.json already in ``out`` ({} when there is none or it cannot be read)."""
    try:
        data = json.loads((out / "reproduce.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("studies"), dict) else {}


def reproduce(
    preset: str,
    out: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Run the built studies (or ``only`` these entries) into ``out/<name>``; write ``out/reproduce.json``.

    With ``only``, the entries of an earlier run of the same preset in ``out`` stay in the record, so the
    report covers every entry the folder holds (entry by entry runs build up one report)."""
    output_dir(out)
    record: dict[str, Any] = {"preset": preset, "device": str(device), "versions": versions(), "studies": {}}
    if only:
        earlier = _read_record(out)
        if earlier.get("preset") == preset:
            record["studies"] = dict(earlier.get("studies", {}))
    order = [job.name for job in jobs(preset)]
    for job in jobs(preset):
        name, info = job.name, studies.STUDIES[job.study]
        if only and name not in only:
            continue
        entry: dict[str, Any] = {"title": info.title + job.title_suffix, "paper": info.paper}
        if not info.built:
            entry["status"] = "not built yet"
            log(f"[{name}] not built yet")
        else:
            folder = out / name
            done = _complete_job(folder, job, preset)
            if done is not None:
                entry.update(status="complete", skipped=True, findings=done.get("findings", []))
                log(f"[{name}] already complete, skipped")
            else:
                log(f"[{name}] running preset {preset} ...")
                t0 = time.perf_counter()
                try:
                    summary = studies.study(job.study).run(preset, folder, list(job.overrides), device)
                    entry.update(status="complete", findings=summary.get("findings", []))
                except Interrupted:  # Ctrl-C / SIGTERM stops the whole job; finished parts are kept
                    raise
                except Exception as err:  # a failing study is reported, the others still run
                    entry.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
                    log(f"[{name}] FAILED: {type(err).__name__}: {err}")
                entry["wall_time_s"] = round(time.perf_counter() - t0, 1)
        record["studies"][name] = entry
        record["studies"] = {n: record["studies"][n] for n in sorted(record["studies"], key=lambda n: order.index(n) if n in order else len(order))}
        atomic_write_json(out / "reproduce.json", record)
    from iclab.report import build_report

    record["report"] = str(build_report(out))
    return record
