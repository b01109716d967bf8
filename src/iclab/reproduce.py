"""``iclab reproduce``: run every built study at a preset, one folder each, then ``report.html``.

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
from pathlib import Path
from typing import Any, Callable

import torch

from iclab import studies
from iclab.io import atomic_write_json, output_dir
from iclab.errors import Interrupted


def _complete(summary_file: Path, name: str, preset: str) -> dict[str, Any] | None:
    """The finished summary of study ``name`` at ``preset``, if its settings and iclab version are today's."""
    import iclab
    from iclab.config import config_hash
    from iclab.studies.common import settings_for

    if not summary_file.is_file():
        return None
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError:
        return None
    module = studies.study_module(name)
    if preset not in module.PRESETS:
        return None
    same = (summary.get("preset") == preset
            and summary.get("iclab_version") == iclab.__version__
            and summary.get("settings_hash") == config_hash(settings_for(module.PRESETS, preset, [], name)))
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


def reproduce(
    preset: str,
    out: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Run the built studies (or ``only`` these) into ``out/<study>``; write ``out/reproduce.json``."""
    output_dir(out)
    record: dict[str, Any] = {"preset": preset, "device": str(device), "versions": versions(), "studies": {}}
    for name, info in studies.STUDIES.items():
        if only and name not in only:
            continue
        entry: dict[str, Any] = {"title": info.title, "paper": info.paper}
        if not info.built:
            entry["status"] = "not built yet"
            log(f"[{name}] not built yet")
        else:
            folder = out / name
            done = _complete(folder / "summary.json", name, preset)
            if done is not None:
                entry.update(status="complete", skipped=True, findings=done.get("findings", []))
                log(f"[{name}] already complete, skipped")
            else:
                log(f"[{name}] running preset {preset} ...")
                t0 = time.perf_counter()
                try:
                    summary = studies.study_module(name).run(preset, folder, [], device)
                    entry.update(status="complete", findings=summary.get("findings", []))
                except Interrupted:  # Ctrl-C / SIGTERM stops the whole job; finished parts are kept
                    raise
                except Exception as err:  # a failing study is reported, the others still run
                    entry.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
                    log(f"[{name}] FAILED: {type(err).__name__}: {err}")
                entry["wall_time_s"] = round(time.perf_counter() - t0, 1)
        record["studies"][name] = entry
        atomic_write_json(out / "reproduce.json", record)
    from iclab.report import build_report

    record["report"] = str(build_report(out))
    return record
