"""Training and its runs: ``iclab train``, ``iclab runs``, ``iclab tasks``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from iclab.cli.common import DEVICE_HELP, SET_HELP, app, console, print_table
from iclab.errors import IclabError


@app.command()
def train(
    task: Optional[str] = typer.Option(None, "--task", help="Task to train on (see `iclab tasks`); or task.name in --config."),
    out: Path = typer.Option(..., "--out", help="Run directory. Re-running on an unfinished run resumes it."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (task, model, train, seed sections)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    recover: bool = typer.Option(False, "--recover", help="If the resume checkpoint is corrupt, continue from the last good weight snapshot."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The run's seed (--set seed=N): the model's initialisation; the "
                                       "training data has its own, --set task.data_seed=N."),
) -> None:
    """Train a model on a task into a run directory (resumable; Ctrl-C or SIGTERM saves a checkpoint).

    Re-running a finished run with a larger train.steps (nothing else changed) extends it from its end.
    """
    from iclab.config import load_yaml, section
    from iclab.device import resolve_device
    from iclab.train import RunConfig, apply_overrides
    from iclab.train import train as run_training

    data = load_yaml(config) if config else {}
    if task is not None:
        given = section(data, "task")
        if given.get("name", task) != task:
            raise IclabError(f"--task {task} disagrees with task.name={given['name']} in {config}")
        data["task"] = {**given, "name": task}
    if not section(data, "task").get("name"):
        raise IclabError("no task given: use --task NAME or task.name in --config (see `iclab tasks`)")
    run_config = apply_overrides(RunConfig.from_dict(data), [*set_, *([f"seed={seed}"] if seed is not None else [])])
    if run_config.train.init_weights and not Path(run_config.train.init_weights).is_absolute():
        import dataclasses

        # a path typed here is the shell's (relative to the current folder); the run stores it absolute
        absolute = str(Path(run_config.train.init_weights).resolve())
        run_config = dataclasses.replace(run_config, train=dataclasses.replace(run_config.train, init_weights=absolute))
    dev = resolve_device(device)
    if run_config.train.tensorboard:
        from iclab.train.tensorboard import require_tensorboard

        require_tensorboard()
    result = run_training(run_config, out, dev, recover=recover)
    s = result.summary
    console.print(f"[green]done[/green]: {out} ({s['steps']} steps, final loss {s['final_loss']:.4g}, {s['wall_time_s']:.0f}s)")


@app.command()
def runs(
    root: Path = typer.Argument(Path("."), help="Directory to search for runs (recursively), or one run with --snapshots."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one list of objects) instead of a table."),
    snapshots: bool = typer.Option(False, "--snapshots", help="List the weight snapshots of the run ROOT (load_run(ROOT, step=...))."),
) -> None:
    """List the runs below a directory: task, model size, steps, final loss, status (in a folder of `iclab reproduce`:
    its studies, with their verdicts)."""
    from iclab.runs import list_runs, list_snapshots

    if not snapshots and (root / "reproduce.json").is_file():
        return _list_entries(root, as_json)
    rows = list_snapshots(root) if snapshots else list_runs(root)
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    if not rows:
        console.print(f"no snapshots in {root} (a run keeps them with --set train.snapshots=N)" if snapshots
                      else f"no runs found below {root}")
        return
    if snapshots:
        table = Table("step", "file")
        for r in rows:
            table.add_row(str(r["step"]), r["file"])
    else:
        table = Table("path", "task", "model", "steps", "final loss", "status")
        for r in rows:
            loss = "-" if r["final_loss"] is None else f"{r['final_loss']:.4g}"
            table.add_row(r["path"], r["task"], r["model"], r["steps"], loss, r["status"])
    print_table(table)


def _list_entries(root: Path, as_json: bool) -> None:
    """The studies of a reproduce folder: status, verdict counts, time and memory."""
    from iclab.claims import Verdict
    from iclab.reproduce import list_entries

    rows = list_entries(root)
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    table = Table("study", "status", *(v.value.lower() for v in Verdict), "wall time", "compute time", "peak memory")
    for r in rows:
        counts = [str(r["verdicts"][v.value]) if r["verdicts"] else "-" for v in Verdict]
        wall, compute = ("-" if r[k] is None else f"{r[k]:.0f} s" for k in ("wall_time_s", "compute_time_s"))
        peak = "-" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.2f} GB"
        table.add_row(r["name"], r["status"], *counts, wall, compute, peak)
    print_table(table)
    console.print(f"a reproduction ({root}/reproduce.json); a study's own training runs: iclab runs {root}/NAME")


@app.command()
def tasks(
    name: Optional[str] = typer.Argument(None, help="One task: print its default run config alone, as a starter YAML "
                                         "(iclab tasks linreg > my_run.yaml; iclab train --config my_run.yaml --out runs/x)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (task name -> default run config) instead."),
) -> None:
    """List the tasks (what each is, its task settings); with NAME, print that task's default run config."""
    from iclab.config import dump_yaml
    from iclab.tasks import TASKS, describe, task_classes
    from iclab.train import default_config

    if name is not None:
        task_classes(name)  # a clear error for an unknown name
    names = [name] if name is not None else list(TASKS)
    configs = {n: default_config(n).to_dict() for n in names}
    if as_json:
        print(json.dumps(configs, indent=1, ensure_ascii=False))
    elif name is not None:
        print(f"# iclab train --config THIS_FILE --out runs/NAME: the {name} task's default run config\n" + dump_yaml(configs[name]),
              end="")
    else:
        table = Table("task", "what it is", "task settings (defaults; --set task.KEY=VALUE)")
        for n, config in configs.items():
            settings = ", ".join(f"{k}={v}" for k, v in config["task"].items() if k != "name" and not k.endswith("_seed"))
            table.add_row(n, describe(n), settings)
        print_table(table)
        console.print("iclab tasks NAME prints a task's whole default run config (task, model, train) as YAML.")
