"""The ``iclab`` command line.

Errors a user can fix print one line (``error: ...``) and exit with status 2;
``iclab --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from iclab.errors import IclabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="iclab, the in-context learning laboratory: train, probe and dissect in-context learning in transformers.",
)
console = Console()


class _State:
    debug = False


STATE = _State()

DEVICE_HELP = "Where to compute: auto (cuda, then mps, then cpu), cpu, cuda or mps."
SET_HELP = "Override a config key, e.g. --set model.n_layers=4 --set train.lr=3e-4 (repeatable)."


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    STATE.debug = debug


@app.command()
def train(
    task: Optional[str] = typer.Option(None, "--task", help="Task to train on (see `iclab tasks`); or task.name in --config."),
    out: Path = typer.Option(..., "--out", help="Run directory. Re-running on an unfinished run resumes it."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (task, model, train, seed sections)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Train a model on a task into a run directory (resumable; Ctrl-C saves a checkpoint)."""
    from iclab.config import load_yaml
    from iclab.device import resolve_device
    from iclab.train import RunConfig, apply_overrides, train as run_training

    data = load_yaml(config) if config else {}
    if task is not None:
        data.setdefault("task", {})
        if data["task"].get("name", task) != task:
            raise IclabError(f"--task {task} disagrees with task.name={data['task']['name']} in {config}")
        data["task"]["name"] = task
    if not (data.get("task") or {}).get("name"):
        raise IclabError("no task given: use --task NAME or task.name in --config (see `iclab tasks`)")
    run_config = apply_overrides(RunConfig.from_dict(data), set_)
    dev = resolve_device(device)
    result = run_training(run_config, out, dev)
    s = result.summary
    console.print(f"[green]done[/green]: {out} ({s['steps']} steps, final loss {s['final_loss']:.4g}, {s['wall_time_s']:.0f}s)")


@app.command()
def runs(root: Path = typer.Argument(Path("."), help="Directory to search for runs (recursively).")) -> None:
    """List the runs below a directory: task, model size, steps, final loss, status."""
    from iclab.runs import list_runs

    rows = list_runs(root)
    if not rows:
        console.print(f"no runs found below {root}")
        return
    table = Table("path", "task", "model", "steps", "final loss", "status")
    for r in rows:
        loss = "-" if r["final_loss"] is None else f"{r['final_loss']:.4g}"
        table.add_row(r["path"], r["task"], r["model"], r["steps"], loss, r["status"])
    console.print(table)


@app.command()
def heads(
    model: Path = typer.Argument(..., help="An iclab run directory or a local Hugging Face model folder."),
    top: int = typer.Option(10, "--top", help="How many heads to list, by prefix-matching score."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write every head's scores to this JSON file."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Score every head for induction: prefix-matching, copying, previous-token and detection scores."""
    import torch

    from iclab.analysis.induction_probes import score_heads
    from iclab.device import resolve_device
    from iclab.heads import from_run, load_hf

    dev = resolve_device(device)
    if (model / "config.json").is_file():
        m = load_hf(model, dev)
        special = set(m.tokenizer.all_special_ids)
        vocab = torch.tensor([i for i in range(len(m.tokenizer)) if i not in special and i < m.model.config.vocab_size])
    elif (model / "config.yaml").is_file():
        m = from_run(model, device=dev)
        vocab = torch.arange(2 if m.bos_id is None else 3, m.model.cfg.d_vocab)
    else:
        raise IclabError(f"{model}: neither an iclab run (config.yaml) nor a Hugging Face model folder (config.json)")
    n_ctx = m.model.cfg.n_ctx if (model / "config.yaml").is_file() else 101
    repeats = 4 if n_ctx >= 101 else 2  # Olsson et al.'s 25 tokens x 4 when the context has room
    length = min(25, (n_ctx - 1) // repeats)
    scores = score_heads(m, vocab, torch.Generator().manual_seed(seed), length=length, repeats=repeats)
    pm = scores["prefix_matching"]
    order = torch.argsort(pm.flatten(), descending=True)[:top]
    table = Table("layer", "head", "prefix-matching", "copying", "copies (top-1)", "previous-token", "induction (TL mul)")
    H = pm.shape[1]
    for i in order.tolist():
        layer, h = divmod(i, H)
        table.add_row(str(layer), str(h), *(f"{float(scores[k][layer, h]):.3f}" for k in
                                          ("prefix_matching", "copying", "copying_top1", "previous_token", "induction_detection")))
    console.print(table)
    if out is not None:
        from iclab.train.checkpoint import atomic_write_json

        atomic_write_json(out, {k: v.tolist() for k, v in scores.items()})
        console.print(f"scores: {out}")


@app.command()
def tasks() -> None:
    """List the tasks and print each one's default run config."""
    from iclab.config import dump_yaml
    from iclab.tasks import TASKS
    from iclab.train import default_config

    for name in TASKS:
        console.rule(name)
        console.print(dump_yaml(default_config(name).to_dict()), markup=False)


@app.command()
def studies() -> None:
    """List the studies and whether each is built."""
    from iclab.studies import STUDIES

    table = Table("study", "title", "paper", "built")
    for s in STUDIES.values():
        table.add_row(s.name, s.title, s.paper, "yes" if s.built else "not yet")
    console.print(table)


def _preset_check(module, preset: str, name: str) -> None:
    if preset not in module.PRESETS:
        raise IclabError(f"--preset {preset!r} is not a preset of {name}; presets: {', '.join(module.PRESETS)}")


@app.command("run")
def run_study(
    study: str = typer.Argument(..., help="Study name: linreg, induction, spinglass or addk."),
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (the authors' scale)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default runs/<study>-<preset>)."),
    set_: list[str] = typer.Option([], "--set", help="Override a study setting, e.g. --set steps=500."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    model: Optional[Path] = typer.Option(None, "--model", help="addk: a local Hugging Face model folder to analyse instead of training one."),
) -> None:
    """Run one study and write its figures and summary.json."""
    from iclab.device import resolve_device
    from iclab.studies import study_module

    module = study_module(study)
    _preset_check(module, preset, study)
    folder = out or Path("runs") / f"{study}-{preset}"
    overrides = list(set_)
    if model is not None:
        if study != "addk":
            raise IclabError(f"--model applies to the addk study only, not {study!r}")
        overrides.append(f"model={model}")
    summary = module.run(preset, folder, overrides, resolve_device(device))
    for line in summary.get("findings", []):
        console.print(f"- {line}", markup=False)
    console.print(f"[green]done[/green]: {folder}/summary.json")


@app.command()
def reproduce(
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (the authors' scale)."),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Output directory; finished studies are skipped on re-run."),
    only: list[str] = typer.Option([], "--only", help="Run only this study (repeatable)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Reproduce every built study at a preset and record what each found."""
    from iclab.device import resolve_device
    from iclab.reproduce import reproduce as run_all
    from iclab.studies import STUDIES

    if preset not in ("quick", "paper"):
        raise IclabError(f"--preset {preset!r} is not one of quick, paper")
    for name in only:
        if name not in STUDIES:
            raise IclabError(f"study {name!r} is unknown; studies: {', '.join(STUDIES)}")
    record = run_all(preset, out, resolve_device(device), log=lambda line: console.print(line, markup=False), only=only or None)
    table = Table("study", "status", "time (s)")
    for name, entry in record["studies"].items():
        table.add_row(name, entry["status"], str(entry.get("wall_time_s", "-")))
    console.print(table)
    console.print(f"results: {out}/reproduce.json, report: {record['report']}")
    if any(e["status"] == "failed" for e in record["studies"].values()):
        raise typer.Exit(1)


@app.command()
def sweep(
    study: str = typer.Argument(..., help="Study to sweep: linreg or spinglass."),
    grid: list[str] = typer.Option([], "--grid", help="key=v1,v2,... (repeatable; the runs are every combination)."),
    seeds: int = typer.Option(0, "--seeds", help="Also sweep seed = 0..N-1 (0: the preset's seed only)."),
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
    from iclab.sweep import plot_sweep, sweep as run_sweep

    if plot is not None:
        console.print(f"figure: {plot_sweep(out, plot, metric)}")
        return
    if executor not in ("local", "ray"):
        raise IclabError(f"--executor {executor!r} is not one of local, ray")
    if workers < 1:
        raise IclabError(f"--workers must be at least 1, got {workers}")
    if not grid and seeds == 0:
        raise IclabError("nothing to sweep: give at least one --grid key=v1,v2 or --seeds N")
    if device not in ("cpu", "cuda", "mps"):
        raise IclabError(f"--device {device!r} is not one of cpu, cuda, mps")
    from iclab.studies import study_module

    module = study_module(study)
    _preset_check(module, preset, study)
    table = run_sweep(study, preset, grid, out, seeds, set_, executor, workers, address, cpus, gpus, device,
                      log=lambda line: console.print(line, markup=False))
    failed = int((table["status"] == "failed").sum())
    console.print(f"{len(table)} runs, {failed} failed; results: {out}/results.parquet and results.csv")


@app.command()
def report(out: Path = typer.Argument(..., help="A directory written by `iclab reproduce`.")) -> None:
    """Rebuild DIR/report.html from the results on disk (no study is re-run)."""
    from iclab.report import build_report

    console.print(f"report: {build_report(out)}")


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app()
    except IclabError as err:
        if STATE.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
