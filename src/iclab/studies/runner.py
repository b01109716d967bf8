"""The one study runner: settings -> folder -> models -> parts -> claims -> figures -> summary.

A study declares itself as a :class:`Study`: its presets, how it gets its
models, a table of :class:`Part` (name, computation, the settings it depends
on, the earlier parts it reads), its claims and its figures. :meth:`Study.run`
does the rest the same way for all of them::

    STUDY = Study("spinglass", PRESETS, parts=lambda s: PARTS, claims=findings, figures=plot_all)
    summary = STUDY.run("quick", Path("out"), ["fig4a.repeats=1"], torch.device("cpu"))

Each part returns a typed result (its ``result`` type, a :class:`~iclab.results.Result`); a cached part is
``out/parts/<name>.json``, keyed by the settings it reads and its result type's schema, so a re-run with the
same settings reuses it, an interrupted study loses nothing that was finished, and a cache of an older schema is
recomputed. ``summary.json`` (a :class:`~iclab.studies.common.Summary` with the run's
:class:`~iclab.studies.common.RunIdentity`) is written last.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

import torch

from iclab.claims import Claim, judge_over_seeds
from iclab.config import config_hash
from iclab.io import BOOKKEEPING, held, holding_locks
from iclab.results import Result
from iclab.studies.common import Parts, RunIdentity, StudyDir, Summary, finish, finished, part_key, settings_for
from iclab.train.rundir import RunDir

S = TypeVar("S")


@dataclass
class Context(Generic[S]):
    """What a part sees: the settings, the study folder, the device, the study's models (whatever its ``models``
    step returned) and the results of the parts before it, by name. ``max_memory``: how much of a pretrained model's
    weights to keep on the device (``--max-memory``; the rest offloaded): where it lives, not what is computed, so
    it is not a setting and not in any part's key (placed and whole give the same numbers, tests/test_placement.py)."""

    settings: S
    out: Path
    device: torch.device
    log: Callable[[str], None]
    models: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    max_memory: str | None = None


@dataclass(frozen=True)
class Part:
    """One analysis of a study. ``compute(ctx)`` returns a value of ``result`` (a :class:`~iclab.results.Result`
    type, required for a cached part), cached as ``parts/<name>.json`` and keyed by ``depends(settings)`` (default:
    every setting but ``thresholds``), by the keys of the earlier parts in ``needs`` and by the result type's schema.
    ``cached=False``: a cheap value derived from other parts (any Python value), recomputed every run and not
    written. ``when(ctx)`` false: the part is skipped (its result is absent), e.g. nothing to localise without the
    behaviour."""

    name: str
    compute: Callable[[Context], Any]
    result: type[Result] | None = None
    depends: Callable[[Any], Any] | None = None
    needs: tuple[str, ...] = ()
    cached: bool = True
    when: Callable[[Context], bool] | None = None

    def __post_init__(self) -> None:
        if self.cached and self.result is None:
            raise TypeError(f"part {self.name!r} is cached: declare its result type (a Result dataclass)")

    @property
    def schema(self) -> str:
        return self.result.schema() if self.result is not None else "derived"


@dataclass(frozen=True)
class Entry:
    """An entry a study adds to ``iclab reproduce --preset quick`` besides its own: the study run with ``overrides``
    (e.g. on a pretrained model) into ``out/<name>``; ``minutes``: its usual wall time on one CPU thread beside another
    entry (the longest start first). Entries with ``pretrained`` share one worker process (one model in memory)."""

    name: str
    overrides: tuple[str, ...] = ()
    title_suffix: str = ""
    minutes: float = 1.0
    pretrained: bool = False


def training_times(out: Path) -> dict[str, float]:
    """``{"train <name>": seconds}`` for each finished training run a study keeps in ``out/runs/<name>`` (its own
    recorded wall time, resumes included), so that a study's timings count its training beside its parts."""
    times = {}
    for folder in sorted((out / "runs").glob("*")):
        summary = RunDir(folder).read_summary() if (folder / "summary.json").is_file() else None
        if summary is not None and isinstance(summary.get("wall_time_s"), (int, float)):
            times[f"train {folder.name}"] = round(float(summary["wall_time_s"]), 2)
    return times


@dataclass(frozen=True)
class Study(Generic[S]):
    """A study as a declaration; :meth:`run` is the same for every study.

    ``parts(settings)``: the part table, in order (it may depend on the settings, e.g. one trajectory per model);
    ``models(ctx)``: trains or loads what the parts read (``ctx.models``); ``training(settings)``: the training runs
    ``models`` makes whose configs are known beforehand, ``(name, RunConfig)`` for ``out/runs/<name>``, so that a run
    over seeds with ``together`` trains each for every seed at once (:func:`~iclab.train.together.train_seeds`); ``claims(settings, results)``: the typed
    claims and the summary numbers; ``figures(results, settings, folder)``: figure paths; ``notes(settings)``: how
    iclab measured, for the summary; ``check(settings)``: refusals before the folder is touched; ``variant(settings)``:
    another study over the same settings to run instead (a pretrained model instead of trained ones).

    ``title`` and ``paper``: what ``iclab studies`` and the report show; ``minutes``: the quick preset's usual wall time
    per seed on one CPU thread beside another entry (``reproduce --workers`` starts the longest first); ``extra_entries``:
    the entries it adds to the quick reproduce (:class:`Entry`). Everything outside the study package (the CLI,
    reproduce, sweep, the report) reads these fields, so a new study is declared here and nowhere else."""

    name: str
    presets: dict[str, S]
    parts: Callable[[S], Sequence[Part]]
    claims: Callable[[S, dict[str, Any]], tuple[list[Claim], dict[str, Any]]]
    figures: Callable[[dict[str, Any], S, Path], list[Path]]
    models: Callable[[Context], Any] | None = None
    training: Callable[[S], list[tuple[str, Any]]] | None = None
    notes: Callable[[S], list[str]] = lambda settings: []
    check: Callable[[S], None] | None = None
    variant: Callable[[S], "Study | None"] | None = None
    title: str = ""
    paper: str = ""
    minutes: float = 1.0
    extra_entries: tuple[Entry, ...] = ()

    @property
    def takes_model(self) -> bool:
        """Whether the study can analyse a pretrained model instead of training its own (a ``model`` setting)."""
        return any(hasattr(settings, "model") for settings in self.presets.values())

    def settings(self, preset: str, overrides: Sequence[str] = ()) -> S:
        """The preset's settings with ``--set`` overrides applied and validated."""
        return settings_for(self.presets, preset, list(overrides), self.name)

    def identity(self, settings: S) -> RunIdentity:
        """The run identity of these settings: their hash, the schema of the summary and of every part the study
        computes on them (those of its ``variant`` where it has one) and iclab's version."""
        import iclab

        other = self.variant(settings) if self.variant is not None else None
        if other is not None:
            return other.identity(settings)
        schemas = [Summary.schema(), *(f"{p.name}={p.schema}" for p in self.parts(settings))]
        return RunIdentity(config_hash(settings), config_hash(schemas), iclab.__version__)

    def run(self, preset: str, out: Path | str, overrides: Sequence[str], device: torch.device,
            log: Callable[[str], None] = print, together: bool = False) -> Summary:
        """Run the study at ``preset`` with ``--set``-style ``overrides`` into ``out``; returns its summary
        (``together``: see :meth:`run_settings`)."""
        return self.run_settings(self.settings(preset, overrides), Path(out), device, log, preset, together=together)

    @holding_locks()  # the study folder is this process's while it runs
    def run_settings(self, settings: S, out: Path, device: torch.device, log: Callable[[str], None] = print,
                     preset: str | None = None, max_memory: str | None = None, together: bool = False) -> Summary:
        """Run the study on validated ``settings`` (``preset``: the preset's name, for the summary; ``max_memory``: see
        :class:`Context`; ``together``: with several seeds, train each model for every seed at once as one batched
        model, :func:`~iclab.train.together.train_seeds`; equal to the seeds trained one by one up to float
        rounding)."""
        other = self.variant(settings) if self.variant is not None else None
        if other is not None:
            return other.run_settings(settings, out, device, log, preset, max_memory, together)
        if self.check is not None:
            self.check(settings)
        new = not out.exists() or (out.is_dir() and all(p.name in BOOKKEEPING for p in out.iterdir()))
        try:
            if getattr(settings, "seeds", 1) > 1:
                return self._run_seeds(settings, out, device, log, preset, max_memory, together)
            return self._run(settings, out, device, log, preset, max_memory)
        except BaseException:
            # a run that failed before finishing anything leaves no folder (only one this process made and holds)
            if new and held(out) and not StudyDir(out).holds_results():
                shutil.rmtree(out, ignore_errors=True)
            raise

    def _run_seeds(self, settings: S, out: Path, device: torch.device, log: Callable[[str], None], preset: str | None,
                   max_memory: str | None = None, together: bool = False) -> Summary:
        """The study at each of its seeds (``seed`` .. ``seed + seeds - 1``), each a complete run of its own in
        ``out/seeds/<seed>`` (its settings those of a lone run at that seed, so each is resumable, reusable and equal
        to ``iclab run --seed S --set seeds=1``), then every claim judged over them (:func:`~iclab.claims.judge_over_seeds`).
        The summary's numbers and figures are the first seed's; every seed's are in its own folder."""
        preset = preset or getattr(settings, "preset", "custom")
        identity = self.identity(settings)
        Parts(self.name, out, settings, log, preset, identity)  # claims the folder and writes its settings
        first = getattr(settings, "seed")
        if together and self.training is not None:
            self._train_together(settings, out, device, log, preset)
        runs: dict[int, Summary] = {}
        for seed in range(first, first + getattr(settings, "seeds")):
            one = replace(settings, seed=seed, seeds=1)
            folder = out / "seeds" / str(seed)
            log(f"seed {seed} ({seed - first + 1} of {settings.seeds}):")
            runs[seed] = finished(folder, self.identity(one)) or self._run(one, folder, device, log, preset, max_memory)
        claims = judge_over_seeds({seed: summary.claims for seed, summary in runs.items()})
        lead = runs[first]
        numbers = {"seeds": list(runs), **lead.numbers}
        figures = [f"seeds/{first}/{f}" for f in lead.figures]
        timings: dict[str, float] = {}
        for summary in runs.values():
            for name, seconds in summary.timings_s.items():
                timings[name] = round(timings.get(name, 0.0) + seconds, 2)
        notes = [f"Judged over {len(runs)} seeds ({', '.join(map(str, runs))}), each trained and analysed on its own in "
                 "seeds/<seed>: a claim is REPRODUCED or NOT REPRODUCED when every seed says so, INCONCLUSIVE when they "
                 f"differ; its values are their means. Numbers and figures: seed {first}'s; run times: summed over the seeds.",
                 *lead.notes]
        summary = Summary(self.name, preset, identity, numbers, claims, [c.line() for c in claims], figures, timings, notes)
        summary.write(out)
        return summary

    def _train_together(self, settings: S, out: Path, device: torch.device, log: Callable[[str], None], preset: str) -> None:
        """Train every run of ``training`` for the unfinished seeds at once, into ``out/seeds/<seed>/runs/<name>``
        (each seed's folder claimed first), so that each seed's ``models`` step finds its runs finished."""
        from iclab.train.together import train_seeds

        first = getattr(settings, "seed")
        plans: dict[int, list[tuple[str, Any]]] = {}
        for seed in range(first, first + getattr(settings, "seeds")):
            one = replace(settings, seed=seed, seeds=1)
            folder = out / "seeds" / str(seed)
            if finished(folder, self.identity(one)) is None:
                Parts(self.name, folder, one, log, preset, self.identity(one))
                plans[seed] = self.training(one)
        if not plans:
            return
        names = [name for name, _ in next(iter(plans.values()))]
        for i, name in enumerate(names):
            log(f"  model {name}: seeds {', '.join(map(str, plans))} trained together")
            train_seeds([plan[i][1] for plan in plans.values()], [out / "seeds" / str(seed) / "runs" / name for seed in plans],
                        device, label=f"{self.name}/{name}", log=log)

    def _run(self, settings: S, out: Path, device: torch.device, log: Callable[[str], None], preset: str | None,
             max_memory: str | None = None) -> Summary:
        preset = preset or getattr(settings, "preset", "custom")
        parts = Parts(self.name, out, settings, log, preset, self.identity(settings))
        ctx: Context[S] = Context(settings, out, device, log, max_memory=max_memory)
        ctx.models = self.models(ctx) if self.models is not None else None
        parts.timings.update(training_times(out))
        keys: dict[str, str] = {}
        for part in self.parts(settings):
            if part.when is not None and not part.when(ctx):
                continue
            if not part.cached:
                ctx.results[part.name] = part.compute(ctx)
                continue
            keys[part.name] = part_key(settings, part.depends, {n: keys.get(n) for n in part.needs})
            ctx.results[part.name] = parts.get(part.name, keys[part.name], lambda part=part: part.compute(ctx), part.result)
        claims, numbers = self.claims(settings, ctx.results)
        figures = self.figures(ctx.results, settings, out / "figures")
        return finish(self.name, preset, self.identity(settings), out, numbers, claims, figures, parts,
                      [*self.notes(settings), *self.precision_notes(settings, device)])

    def precision_notes(self, settings: S, device: torch.device | str = "cpu") -> list[str]:
        """A note naming the runs of ``training`` whose steps run under bfloat16 autocast on ``device``
        (``train.precision``), where any do: a reader of the summary sees that they did not run in float32."""
        from iclab.train.loop import step_precision

        if self.training is None or self.variant is not None and self.variant(settings) is not None:
            return []
        runs = [name for name, config in self.training(settings) if step_precision(config.train, device) == "bfloat16"]
        if not runs:
            return []
        return [f"Trained under bfloat16 autocast (recipe.precision): {', '.join(runs)}; their weights, AdamW's state and every "
                "analysis are float32 (docs/scaling.md, bfloat16 training, has the check against float32 training)."]
