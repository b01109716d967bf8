"""The studies: ``iclab studies``, ``iclab run``, ``iclab reproduce``, ``iclab sweep``, ``iclab report``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from iclab.cli.common import DEVICE_HELP, MAX_MEMORY_HELP, app, console, err_say, print_table, say
from iclab.claims import plural
from iclab.errors import IclabError
from iclab.studies import NAMES as STUDY_NAMES
from iclab.studies.common import check_preset


@app.command()
def studies(as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per study) instead of a table.")) -> None:
    """List the studies: title, paper, presets, whether --model applies."""
    from iclab.studies import all_studies

    rows = [{"study": s.name, "title": s.title, "paper": s.paper, "presets": list(s.presets), "takes_model": s.takes_model,
             "minutes_quick": s.minutes} for s in all_studies()]
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    table = Table("study", "title", "paper", "presets", "--model")
    for r in rows:
        table.add_row(r["study"], r["title"], r["paper"], ", ".join(r["presets"]), "yes" if r["takes_model"] else "no")
    print_table(table)


@app.command("run")
def run_study(
    study: str = typer.Argument(..., help=f"Study name: {', '.join(STUDY_NAMES)} (`iclab studies`)."),
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (the authors' scale)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default runs/<study>-<preset>, or "
                                       "runs/<study>-<model>-<preset> with --model)."),
    set_: list[str] = typer.Option([], "--set", help="Override a study setting, e.g. --set steps=500."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    model: Optional[str] = typer.Option(None, "--model", help="Studies that take a model (`iclab studies`): a pretrained model to analyse instead of training one "
                                        "(a name from `iclab models`, a local Hugging Face folder or a .gguf file)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The study's seed (--set seed=N): every model, data set and "
                                       "random control of the study is drawn from it."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="How many seeds to run and judge every claim over (--set "
                                        "seeds=N; the preset's: 3): seed, seed + 1, ... each in seeds/<seed>."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (summary.json) on stdout when done; progress goes "
                                 "to stderr."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP + " With --model only."),
    together: bool = typer.Option(False, "--together", help="With several seeds: train each model for every seed at "
                                  "once as one batched model (the same models up to float rounding; on 2 CPU cores no "
                                  "faster, docs/scaling.md)."),
) -> None:
    """Run one study and write its figures, summary.json and report.html."""
    from iclab.device import resolve_device
    from iclab.studies import study as study_named

    declared = study_named(study)
    check_preset(declared.presets, preset, study)
    from iclab.studies.common import default_folder

    overrides = [*set_, *([f"seed={seed}"] if seed is not None else []), *([f"seeds={seeds}"] if seeds is not None else [])]
    if model is not None:
        if not declared.takes_model:
            from iclab.studies import all_studies

            takes = [s.name for s in all_studies() if s.takes_model]
            raise IclabError(f"--model applies to the {' and '.join(takes)} studies, not {study!r}")
        overrides.append(f"model={model}")
    settings = declared.settings(preset, overrides)  # validated before any folder is named or touched
    if max_memory is not None:
        from iclab.heads.placement import memory_limit

        if getattr(settings, "model", None) is None:
            raise IclabError(f"--max-memory places a pretrained model (--model); without one the {study} study trains "
                             "its own, which is loaded whole")
        memory_limit(max_memory, resolve_device(device))  # a bad size or device: one line before anything runs
    folder = out or default_folder(study, preset, getattr(settings, "model", None))
    summary = declared.run_settings(settings, folder, resolve_device(device), log=err_say if as_json else say, preset=preset,
                                    max_memory=max_memory, together=together)
    from iclab.report import build_report

    page = build_report(folder)
    if as_json:
        print((Path(folder) / "summary.json").read_text(), end="")
        return
    for line in summary.findings:
        console.print(f"- {line}", markup=False)
    console.print(f"[green]done[/green]: {folder}/summary.json, {page}")


@app.command()
def reproduce(
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (the authors' scale)."),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Output directory; finished studies are skipped on re-run."),
    only: list[str] = typer.Option([], "--only", help="Run only this study or entry, e.g. linreg or induction-smollm2 (repeatable)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int | None = typer.Option(None, "--workers", help="Entries run side by side in this many processes, the CPU "
                                       "threads split among them; memory adds up (docs/scaling.md). Default: one per CPU "
                                       "core on the CPU, one on an accelerator."),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds every study runs and judges its claims over (the "
                                     "presets': 3; 1 is a third of the time, with one seed's verdicts)."),
    together: bool = typer.Option(False, "--together", help="Each study trains each model for every seed at once as one "
                                  "batched model (as `iclab run --together`; on 2 CPU cores no faster, docs/scaling.md)."),
) -> None:
    """Reproduce every built study at a preset and record what each found."""
    from iclab.device import resolve_device
    from iclab.reproduce import PRESETS, jobs
    from iclab.reproduce import reproduce as run_all

    check_preset(PRESETS, preset, "the main job")
    if workers is not None and workers < 1:
        raise IclabError(f"--workers must be at least 1, got {workers}")
    if seeds is not None and seeds < 1:
        raise IclabError(f"--seeds must be at least 1, got {seeds}")
    names = [j.name for j in jobs("quick")]
    for name in only:
        if name not in names:
            raise IclabError(f"study {name!r} is unknown; studies and entries: {', '.join(names)}")
    record = run_all(preset, out, resolve_device(device), log=say, only=only or None,
                     workers=workers, seeds=seeds, together=together)
    table = Table("study", "status", "time (s)", "compute time (s)")
    for name, entry in record["studies"].items():
        table.add_row(name, entry["status"], str(entry.get("wall_time_s", "-")), str(entry.get("compute_time_s", "-")))
    console.print(table)
    console.print(f"results: {out}/reproduce.json, report: {record['report']}")
    if any(e["status"] == "failed" for e in record["studies"].values()):
        raise typer.Exit(1)


@app.command()
def sweep(
    study: str = typer.Argument(..., help=f"Study to sweep: {', '.join(STUDY_NAMES)} (`iclab studies`)."),
    grid: list[str] = typer.Option([], "--grid", help="key=v1,v2,... (repeatable; the runs are every combination)."),
    seeds: int = typer.Option(0, "--seeds", help="Also sweep seed = 0..N-1, one run per seed (each with seeds=1; 0: every run trains the preset's seeds)."),
    preset: str = typer.Option("quick", "--preset", help="Preset every run starts from."),
    set_: list[str] = typer.Option([], "--set", help="Override applied to every run."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory: runs/<study>-<hash>/, results.parquet, results.csv."),
    executor: str = typer.Option("local", "--executor", help="local (sequential, or a process pool with --workers) or ray."),
    workers: int = typer.Option(1, "--workers", help="Processes for the local executor."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray instance)."),
    cpus: float = typer.Option(1.0, "--cpus-per-run", help="CPUs each Ray task asks for."),
    gpus: float = typer.Option(0.0, "--gpus-per-run", help="GPUs each Ray task asks for."),
    device: str = typer.Option("cpu", "--device", help="Device inside each run: cpu, cuda or mps."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Instead of running: plot a result against this grid key."),
    metric: Optional[str] = typer.Option(None, "--metric", help="With --plot: the result column to plot (default: the first numeric one)."),
) -> None:
    """Run a grid of study runs (finished runs are skipped), or plot a finished sweep."""
    from iclab.sweep import plot_sweep
    from iclab.sweep import sweep as run_sweep

    if plot is not None:
        console.print(f"figure: {plot_sweep(out, plot, metric)}")
        return
    if executor not in ("local", "ray"):
        raise IclabError(f"--executor {executor!r} is not one of local, ray")
    if workers < 1:
        raise IclabError(f"--workers must be at least 1, got {workers}")
    if seeds < 0:
        raise IclabError(f"--seeds must be >= 0 (0: the preset's seed only), got {seeds}")
    if not grid and seeds == 0:
        raise IclabError("nothing to sweep: give at least one --grid key=v1,v2 or --seeds N")
    if device not in ("cpu", "cuda", "mps"):
        raise IclabError(f"--device {device!r} is not one of cpu, cuda, mps")
    from iclab.studies import study as study_named

    check_preset(study_named(study).presets, preset, study)
    table = run_sweep(study, preset, grid, out, seeds, set_, executor, workers, address, cpus, gpus, device,
                      log=say)
    failed = int((table["status"] == "failed").sum())
    console.print(f"{plural(len(table), 'run')}, {failed} failed; results: {out}/results.parquet and results.csv")
    if seeds > 1:
        from collections import Counter

        from iclab.sweep import verdict_flips, verdicts_over_seeds

        over = verdicts_over_seeds(table)
        counts = Counter(v.verdict.value for v in over)
        console.print(f"verdicts over {seeds} seeds ({out}/verdicts.csv): "
                      + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), markup=False)
        flips = verdict_flips(table)
        console.print(f"verdicts that differ between seeds (INCONCLUSIVE): {len(flips) or 'none'}", markup=False)
        for flip in flips:
            console.print(f"- {flip.line()}", markup=False)
    if failed:
        print(f"error: {failed} of {len(table)} sweep runs failed (their error.txt says why)", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def report(out: Path = typer.Argument(..., help="A folder written by `iclab reproduce` or by `iclab run`.")) -> None:
    """Rebuild DIR/report.html from the results on disk (no study is re-run)."""
    from iclab.report import build_report

    console.print(f"report: {build_report(out)}")
