"""What every study shares: its folder, settings from presets + overrides, cached parts, the summary file.

A study computes in *parts* (one per figure or table). Each part's result is
saved as ``parts/<name>.json`` together with the hash of the settings it was
computed from; a re-run with the same settings reuses it, so an interrupted
study loses nothing that was finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from iclab.claims import Claim
from iclab.config import config_hash, dump_yaml, to_dict, with_overrides
from iclab.errors import IclabError
from iclab.tasks.base import part_generator
from iclab.io import atomic_write_json, atomic_write_text, output_dir

S = TypeVar("S")
T = TypeVar("T")


def settings_for(presets: dict[str, S], preset: str, overrides: list[str], study: str) -> S:
    """The preset's settings with ``--set`` overrides applied and validated."""
    if preset not in presets:
        raise IclabError(f"--preset {preset!r} is not a preset of {study}; presets: {', '.join(presets)}")
    return with_overrides(presets[preset], overrides)


SEED_FIELDS = ("data_seed", "task_seed", "noise_seed")


def seeded(task: T, seed: int) -> T:
    """A task config whose data streams follow the study's ``seed``: every ``*_seed`` field it has is offset by
    ``seed`` (seed 0 keeps the task's defaults). A study's seed means the same in every study: the models'
    initialisation (``RunConfig.seed``) and the data they see, so ``iclab sweep --seeds N`` varies both."""
    import dataclasses

    shifts = {f.name: getattr(task, f.name) + seed for f in dataclasses.fields(task) if f.name in SEED_FIELDS}
    return dataclasses.replace(task, **shifts)


def generator(seed: int, part: str) -> torch.Generator:
    """An independent generator for one part of a study (:func:`iclab.tasks.base.part_generator`)."""
    return part_generator(seed, part)


# Files a sweep keeps in a run's folder next to the study's own.
SWEEP_FILES = ("sweep_point.json", "error.txt")


def is_training_run(path: Path) -> bool:
    """Whether ``path`` holds a training run (config.yaml with metrics or checkpoints)."""
    return (path / "config.yaml").is_file() and ((path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir())


class StudyDir:
    """A study's output folder; ``study.json`` says which study owns it.

    Layout::

        DIR/
          study.json      {"study": name, "iclab": version}: the folder belongs to this study
          config.yaml     the study's settings
          parts/*.json    cached analysis parts (settings hash + result)
          runs/NAME/      the training runs the study made (each a run directory)
          figures/        PNG + SVG
          summary.json    numbers, findings, figures, timings; written last
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def marker(self) -> Path:
        return self.path / "study.json"

    def owner(self) -> str | None:
        """The study that owns the folder, if any (older folders: from their summary)."""
        for source in (self.marker, self.path / "summary.json"):
            if source.is_file():
                try:
                    return json.loads(source.read_text()).get("study")
                except (json.JSONDecodeError, AttributeError):
                    return None
        return None

    def claim(self, study: str) -> None:
        """Make the folder ``study``'s, or refuse, untouched, one that holds anything else."""
        if self.path.is_dir():
            owner = self.owner()
            legacy = owner is None and (self.path / "parts").is_dir() and (self.path / "config.yaml").is_file()
            if owner is not None and owner != study:
                raise IclabError(f"--out {self.path}: holds the {owner!r} study, not {study!r}; choose another --out")
            if owner is None and not legacy:
                if is_training_run(self.path):
                    raise IclabError(f"--out {self.path}: holds a training run; a study needs a new or empty folder")
                others = sorted(p.name for p in self.path.iterdir() if p.name not in SWEEP_FILES)
                if others:
                    raise IclabError(f"--out {self.path}: is not empty and holds no {study} study "
                                     f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); choose a new or empty folder")
        output_dir(self.path)
        if not self.marker.is_file():
            import iclab

            atomic_write_json(self.marker, {"study": study, "iclab": iclab.__version__})


class Parts:
    """Cached study parts under ``out/parts``; ``log`` reports progress.

    Creating it claims ``out`` for ``study`` (see :class:`StudyDir`) and writes the settings.
    """

    def __init__(self, study: str, out: Path, settings: Any, log: Callable[[str], None] = print):
        StudyDir(out).claim(study)
        self.study = study
        self.out = Path(out)
        self.dir = self.out / "parts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.log = log
        self.timings: dict[str, float] = {}
        atomic_write_text(self.out / "config.yaml", dump_yaml(to_dict(settings)))

    def get(self, name: str, compute: Callable[[], dict[str, Any]], depends: Any = None) -> dict[str, Any]:
        """The part's cached result, or ``compute()`` saved. The cache is keyed by ``depends`` (the settings the part
        reads), by default the whole settings except ``thresholds``: thresholds decide verdicts only, so changing
        one re-judges the claims without recomputing any part."""
        key = config_hash(depends if depends is not None else without_thresholds(self.settings))
        path = self.dir / f"{name}.json"
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                if saved.get("settings_hash") == key:
                    self.log(f"  {name}: cached")
                    self.timings[name] = saved.get("wall_time_s", 0.0)
                    return saved["result"]
            except json.JSONDecodeError:
                pass
        self.log(f"  {name} ...")
        t0 = time.perf_counter()
        result = compute()
        elapsed = round(time.perf_counter() - t0, 2)
        self.timings[name] = elapsed
        atomic_write_json(path, {"settings_hash": key, "wall_time_s": elapsed, "result": result})
        self.log(f"  {name}: done in {elapsed:.1f}s")
        return result


def without_thresholds(settings: Any) -> dict[str, Any]:
    """The settings as a dict without their ``thresholds`` (which only the claims read)."""
    out = to_dict(settings)
    out.pop("thresholds", None)
    return out


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(Path(out) / "summary.json", summary)


def finish(study: str, preset: str, out: Path, numbers: dict[str, Any], claims: list[Claim], figures: list[Path],
           parts: Parts, notes: list[str]) -> dict[str, Any]:
    """Assemble a study's summary.json (numbers, typed claims and their plain lines, figures, timings, notes);
    written last, so a summary on disk means a finished study."""
    import iclab

    out = Path(out)
    summary = {
        "study": study,
        "preset": preset,
        "settings_hash": config_hash(parts.settings),
        "iclab_version": iclab.__version__,
        **numbers,
        "claims": [c.to_dict() for c in claims],
        "findings": [c.line() for c in claims],
        "figures": [str(Path(p).relative_to(out)) for p in figures],
        "timings_s": parts.timings,
        "notes": notes,
    }
    write_summary(out, summary)
    return summary
