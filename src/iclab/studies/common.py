"""What every study shares: its folder, settings from presets + overrides, cached parts, the run identity and the
typed summary.

A study computes in *parts* (one per figure or table). Each part's result is
saved as ``parts/<name>.json`` with the hash of what it read and the schema of
its result type; a re-run with the same settings reuses it, so an interrupted
study loses nothing that was finished, and a cache of another schema is
recomputed.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from iclab.claims import Claim
from iclab.config import config_hash, dump_yaml, to_dict, with_overrides
from iclab.errors import IclabError, OlderFormatError, RunDirError
from iclab.results import Result, SchemaError, decode, encode
from iclab.tasks.base import part_generator as generator, seeded  # noqa: F401 (the studies' way in)
from iclab.progress import reporting
from iclab.io import BOOKKEEPING, atomic_write_json, atomic_write_text, lock_folder, output_dir

S = TypeVar("S")


def check_preset(presets, preset: str, study: str) -> None:
    """A clear error for a preset name that ``presets`` (names, or a dict keyed by them) does not hold."""
    if preset not in presets:
        raise IclabError(f"--preset {preset!r} is not a preset of {study}; presets: {', '.join(presets)}")


def settings_for(presets: dict[str, S], preset: str, overrides: list[str], study: str) -> S:
    """The preset's settings with ``--set`` overrides applied and validated."""
    check_preset(presets, preset, study)
    return with_overrides(presets[preset], overrides)


# Files a sweep keeps in a run's folder next to the study's own.
SWEEP_FILES = ("sweep_point.json", "error.txt")


def is_training_run(path: Path) -> bool:
    """Whether ``path`` holds a training run (config.yaml with metrics or checkpoints)."""
    return (path / "config.yaml").is_file() and ((path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir())


class StudyDir:
    """A study's output folder; ``study.json`` says which study owns it.

    Layout::

        DIR/
          study.json      {"study", "preset", "model", "identity", "iclab"}: the folder holds this study at this preset on
                          this model (None: iclab's own), last run with these settings (its run identity)
          config.yaml     the study's settings
          parts/*.json    cached analysis parts (their key, their result type's schema, the result)
          runs/NAME/      the training runs the study made (each a run directory)
          figures/        PNG + SVG
          seeds/SEED/     with seeds > 1: the study at each seed, a complete study folder of its own
          summary.json    the typed :class:`Summary`; written last
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def marker(self) -> Path:
        return self.path / "study.json"

    def record(self) -> dict[str, Any]:
        """What ``study.json`` says ({} when there is none or it cannot be read)."""
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def holds_results(self) -> bool:
        """Whether anything finished lies here: a cached part, a training run, a figure or a summary (here or in a
        seed's folder)."""
        seeds = self.path / "seeds"
        return (self.path / "summary.json").is_file() or any(
            any(p.is_file() for p in (self.path / sub).rglob("*")) for sub in ("parts", "runs", "figures")) or (
            seeds.is_dir() and any(StudyDir(d).holds_results() for d in seeds.iterdir() if d.is_dir()))

    def owner(self) -> str | None:
        """The study that owns the folder, if any."""
        return self.record().get("study")

    def claim(self, study: str, preset: str | None = None, model: str | None = None,
              identity: "RunIdentity | None" = None) -> None:
        """Make the folder ``study``'s at ``preset`` on ``model`` (None: iclab's own models), or refuse, untouched, one
        that holds anything else: another study, or this study at another preset or on another model (their results
        would mix). Other settings may change: the parts they touch are recomputed."""
        if self.path.is_dir():
            record = self.record()
            owner = record.get("study")
            if owner is not None and owner != study:
                raise IclabError(f"--out {self.path}: holds the {owner!r} study, not {study!r}; choose another --out")
            if owner is not None and preset is not None:
                held = (record.get("preset", preset), record.get("model", model))
                if held != (preset, model):
                    raise IclabError(f"--out {self.path}: holds {study} at preset {held[0]} on {_subject(held[1])}, not preset "
                                     f"{preset} on {_subject(model)}; choose another --out")
            if owner is None:
                if is_training_run(self.path):
                    raise IclabError(f"--out {self.path}: holds a training run; a study needs a new or empty folder")
                if (self.path / "summary.json").is_file():
                    raise IclabError(f"--out {self.path}: a study folder written by an iclab older than 0.4 (no study.json); "
                                     "re-run into a new folder")
                others = sorted(p.name for p in self.path.iterdir() if p.name not in SWEEP_FILES + BOOKKEEPING)
                if others:
                    raise IclabError(f"--out {self.path}: is not empty and holds no {study} study "
                                     f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); choose a new or empty folder")
        output_dir(self.path)
        lock_folder(self.path, f"the {study} study")
        import iclab

        record = {"study": study, "iclab": iclab.__version__}
        if preset is not None:
            record.update(preset=preset, model=model, identity=encode(identity) if identity is not None else None)
        if record != self.record():
            atomic_write_json(self.marker, record)


def _subject(model: str | None) -> str:
    return "iclab's own models" if model is None else f"model {model}"


def default_folder(study: str, preset: str, model: str | None = None) -> Path:
    """Where a study runs without ``--out``: ``runs/<study>-<preset>``, or ``runs/<study>-<model>-<preset>`` on a
    pretrained model (its catalogue name, or the folder's / file's name), so runs on different models never share
    a folder."""
    if model is None:
        return Path("runs") / f"{study}-{preset}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model).rstrip("/")).name).strip("-") or "model"
    return Path("runs") / f"{study}-{name}-{preset}"


class Parts:
    """Cached study parts under ``out/parts``; ``log`` reports progress.

    Creating it claims ``out`` for ``study`` at ``preset`` (see :class:`StudyDir`) and writes the settings.
    """

    def __init__(self, study: str, out: Path, settings: Any, log: Callable[[str], None] = print, preset: str | None = None,
                 identity: "RunIdentity | None" = None):
        StudyDir(out).claim(study, preset, getattr(settings, "model", None), identity)
        self.study = study
        self.out = Path(out)
        self.dir = self.out / "parts"  # made by the first part saved (a run over seeds saves its parts per seed)
        self.settings = settings
        self.log = log
        self.timings: dict[str, float] = {}
        atomic_write_text(self.out / "config.yaml", dump_yaml(to_dict(settings)))

    def get(self, name: str, key: str, compute: Callable[[], Any], result: type[Result]) -> Any:
        """The part's cached result, or ``compute()`` saved. ``key``: the hash of what the part reads (its
        :func:`part_key`); ``result``: its result type. A cache with another key, or written with another schema of
        the result type (an older iclab), is recomputed, never adapted."""
        schema = result.schema()
        path = self.dir / f"{name}.json"
        cached = self._read(path, key, schema, result)
        if cached is not None:
            self.log(f"  {name}: cached")
            self.timings[name] = cached[1]
            return cached[0]
        self.log(f"  {name} ...")
        t0 = time.perf_counter()
        with reporting(self.log, name):  # a long loop inside reports how far it is, with an ETA
            value = compute()
        if not isinstance(value, result):
            raise TypeError(f"part {name!r} returned {type(value).__name__}, not its declared {result.__name__}")
        elapsed = round(time.perf_counter() - t0, 2)
        self.timings[name] = elapsed
        atomic_write_json(path, {"key": key, "schema": schema, "wall_time_s": elapsed, "result": encode(value)})
        self.log(f"  {name}: done in {elapsed:.1f}s")
        return value

    @staticmethod
    def _read(path: Path, key: str, schema: str, result: type[Result]) -> tuple[Any, float] | None:
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(saved, dict) or saved.get("key") != key or saved.get("schema") != schema:
            return None
        try:
            value = decode(result, saved["result"])
        except (SchemaError, KeyError):
            return None
        return value, saved.get("wall_time_s", 0.0)


def without_thresholds(settings: Any) -> dict[str, Any]:
    """The settings as a dict without their ``thresholds`` (which only the claims read)."""
    out = to_dict(settings)
    out.pop("thresholds", None)
    return out


def part_key(settings: Any, depends: Callable[[Any], Any] | None, needs: dict[str, str]) -> str:
    """A part's cache key: the hash of what it reads: ``depends(settings)`` (default: every setting but
    ``thresholds``, which decide verdicts only, so changing one re-judges the claims without recomputing any part)
    and the keys of the earlier parts it reads (``needs``: name -> key)."""
    read = depends(settings) if depends is not None else without_thresholds(settings)
    return config_hash({"settings": read, "needs": needs} if needs else read)


@dataclass(frozen=True)
class RunIdentity(Result):
    """What makes two runs of a study the same: the hash of the complete settings, the schema of everything the
    study writes (its summary and each part's result type) and iclab's version. ``reproduce`` and ``sweep`` skip a
    folder whose summary carries today's identity and re-run any other."""

    settings_hash: str
    schemas: str
    iclab: str


@dataclass(frozen=True)
class Summary(Result):
    """A finished study: ``numbers`` for scripts and sweeps, the typed ``claims`` (``findings``: each as one plain
    line), figure paths relative to the folder, part timings and notes on how iclab measured. ``summary.json``
    holds it and is written last, so a summary on disk means a finished study."""

    SCHEMA: ClassVar[int] = 5  # 3: claims carry their measured values by name; 4: and why one may not hold (typed);
    # 5: and, judged over seeds, what each seed gave (Claim.per_seed)

    study: str
    preset: str
    identity: RunIdentity
    numbers: dict[str, Any]
    claims: list[Claim]
    findings: list[str]
    figures: list[str]
    timings_s: dict[str, float]
    notes: list[str]

    @classmethod
    def load(cls, path: Path) -> "Summary":
        """The summary in ``path``; a one-line error for one that is unreadable (:class:`RunDirError`) or was written
        by an older iclab (:class:`OlderFormatError`)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunDirError(f"{path}: cannot be read ({type(err).__name__}); re-run the study") from None
        if not isinstance(data, dict) or not ("study" in data or "schema" in data):
            raise RunDirError(f"{path}: does not hold a study summary (no study, no schema); re-run the study")
        if data.get("schema") != cls.schema():
            identity = data.get("identity")
            version = data.get("iclab_version") or (identity.get("iclab") if isinstance(identity, dict) else None)
            raise OlderFormatError(f"{path}: written by iclab {version or 'of another version'} in an older format; re-run the study "
                              "into the same folder to bring it up to date")
        try:
            return decode(cls, {k: v for k, v in data.items() if k != "schema"})
        except SchemaError as err:
            raise RunDirError(f"{path}: does not hold a study summary ({err}); re-run the study") from None

    def write(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / "summary.json", {"schema": self.schema(), **encode(self)})


def finished(folder: Path, identity: RunIdentity) -> Summary | None:
    """The summary in ``folder`` when it carries ``identity`` (a finished run of the same settings, result schemas and
    iclab version); None for no summary, an unreadable one or one of another run."""
    try:
        summary = Summary.load(folder / "summary.json")
    except RunDirError:
        return None
    return summary if summary.identity == identity else None


def finish(study: str, preset: str, identity: RunIdentity, out: Path, numbers: dict[str, Any], claims: list[Claim],
           figures: list[Path], parts: Parts, notes: list[str]) -> Summary:
    """Assemble and write a study's summary.json; written last, so a summary on disk means a finished study."""
    out = Path(out)
    summary = Summary(study, preset, identity, encode(numbers), claims, [c.line() for c in claims],
                      [str(Path(p).relative_to(out)) for p in figures], parts.timings, notes)
    summary.write(out)
    return summary
