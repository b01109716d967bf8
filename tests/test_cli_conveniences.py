"""What people expect of a command line: flags shown as flags, help for every option, --json, --seed, a starter
config, tables that fit a terminal, errors that name an argument as it was typed."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import TINY_SPINGLASS
from test_robustness import cli_sets, iclab, one_line_error


def test_every_option_and_argument_of_every_command_has_help_and_flags_show_as_flags():
    import click
    import typer

    from iclab.cli import app

    def commands(cmd, path=()):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, (*path, name))

    for path, cmd in commands(typer.main.get_command(app)):
        for param in cmd.params:
            assert getattr(param, "help", None), f"iclab {' '.join(path)}: {param.name} has no help"
            if isinstance(param, click.Option) and param.is_flag:
                assert not param.metavar
    shown = iclab("runs", "--help").stdout
    assert "--json " in shown and "<bool>" not in shown


def test_json_on_studies_tasks_heads_and_run_is_json_alone_on_stdout(tmp_path):
    studies = json.loads(iclab("studies", "--json").stdout)
    assert {s["study"] for s in studies} == {"linreg", "induction", "spinglass", "addk"}
    assert json.loads(iclab("tasks", "--json").stdout).keys() == {"linreg", "induction", "addk"}
    result = iclab("train", "--task", "induction", "--out", str(tmp_path / "ind"), "--set", "model.n_layers=1",
                   "--set", "model.d_model=16", "--set", "train.steps=3")
    assert result.returncode == 0, result.stderr
    heads = json.loads(iclab("heads", str(tmp_path / "ind"), "--json", "--top", "2").stdout)
    assert len(heads) == 2 and {"head", "prefix_matching", "copying_rank"} <= heads[0].keys()
    run = iclab("run", "spinglass", "--out", str(tmp_path / "sg"), "--json", *sum((["--set", s] for s in TINY_SPINGLASS), []))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["study"] == "spinglass" and "fig2" in run.stderr  # progress on stderr


def test_a_starter_config_from_tasks_trains_as_it_is_and_seed_sets_the_seed(tmp_path):
    starter = iclab("tasks", "linreg").stdout
    assert yaml.safe_load(starter)["task"]["name"] == "linreg"
    (tmp_path / "my_run.yaml").write_text(starter)
    result = iclab("train", "--config", str(tmp_path / "my_run.yaml"), "--out", str(tmp_path / "run"), *cli_sets(3), "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 7
    one_line_error(iclab("tasks", "nosuch"), "task 'nosuch' is unknown; tasks: linreg, induction, addk")
    result = iclab("run", "spinglass", "--out", str(tmp_path / "sg"), "--seed", "2", *sum((["--set", s] for s in TINY_SPINGLASS), []),
                   "--seeds", "2")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "sg" / "config.yaml").read_text())
    assert (config["seed"], config["seeds"]) == (2, 2)
    assert {p.name for p in (tmp_path / "sg" / "seeds").iterdir()} == {"2", "3"}  # seed, seed + 1: a run each
    assert "(over 2 seeds: " in result.stdout and "Verdicts over 2 seeds" in (tmp_path / "sg" / "report.html").read_text()


def test_models_fits_a_100_column_terminal():
    result = subprocess.run([sys.executable, "-m", "iclab.cli", "models"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 100, result.stdout


@pytest.mark.parametrize("args, typed", [(["heads", "/no/such/model"], "/no/such/model"),
                                         (["run", "induction", "--model", "/no/such/model"], "/no/such/model")])
def test_a_model_error_names_the_argument_as_it_was_typed(args, typed):
    result = iclab(*args)
    one_line_error(result, f"error: {typed}: no such folder or .gguf file")
    assert "--model /no" not in result.stderr


def test_tasks_alone_is_an_overview_not_every_config():
    shown = iclab("tasks").stdout
    assert len(shown.splitlines()) < 15  # one row per task (piped: rows are not wrapped), not 165 lines of configs
    for task in ("linreg", "induction", "addk"):
        assert task in shown
    assert "Hu et al. 2025" in shown and "iclab tasks NAME" in shown


def test_runs_on_a_reproduce_folder_lists_its_studies_with_their_verdicts(tmp_path):
    import torch

    from iclab import reproduce as rep

    rep_jobs = [rep.Job("sg-a", "spinglass", tuple(TINY_SPINGLASS))]
    from unittest import mock

    with mock.patch.object(rep, "jobs", lambda preset: rep_jobs):
        rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1)
    rows = json.loads(iclab("runs", str(tmp_path), "--json").stdout)
    assert [r["name"] for r in rows] == ["sg-a"] and rows[0]["status"] == "complete"
    assert sum(rows[0]["verdicts"].values()) > 0 and rows[0]["wall_time_s"] > 0
    shown = iclab("runs", str(tmp_path)).stdout
    assert "sg-a" in shown and "reproduced" in shown and f"iclab runs {tmp_path}/NAME" in shown.replace("\n", "")
