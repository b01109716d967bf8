"""The command line as a user meets it: help, one-line errors with exit code 2, listings."""

import subprocess
import sys

import pytest


def iclab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "iclab.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_command():
    out = iclab("--help").stdout
    for command in ("train", "runs", "run", "reproduce", "tasks", "studies"):
        assert command in out
    assert "--set" in iclab("train", "--help").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "modle.n_layers=2"], "modle: unknown key (did you mean 'model'?)"),
        (["--set", "model.n_heads=5"], "model.n_heads: must divide d_model=64"),
        (["--set", "train.steps=-3"], "train.steps: must be at least 1"),
        (["--device", "tpu"], "--device 'tpu' is not one of auto, cpu, cuda, mps"),
        (["--config", "missing.yaml"], "missing.yaml: config file not found"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, args, message):
    result = iclab("train", "--task", "linreg", "--out", str(tmp_path / "r"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists(), "a refused run must not create its directory"


def test_debug_shows_the_traceback(tmp_path):
    result = iclab("--debug", "train", "--task", "linreg", "--out", str(tmp_path / "r"), "--set", "train.steps=-3")
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--nope"], "error: No such option: --nope (see "),
    (["lens", "some-model"], "error: Missing option '--prompt' (see "),
    (["heads"], "error: Missing argument 'model' (see "),
    (["nocommand"], "error: No such command 'nocommand' (see "),
])
def test_a_wrong_option_or_argument_is_one_line_and_exit_code_2(args, message):
    result = iclab(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_bare_iclab_prints_its_help():
    result = iclab()
    assert result.returncode == 0 and "Commands" in result.stdout


def test_unknown_option_and_unknown_study_exit_2():
    result = iclab("run", "nonsense")
    assert result.returncode == 2 and "study 'nonsense' is unknown" in result.stderr


def test_train_and_tasks_name_the_tasks_alike(tmp_path):
    trained = iclab("train", "--task", "nope", "--out", str(tmp_path / "r")).stderr
    listed = iclab("tasks", "nope").stderr
    assert trained == listed == "error: task 'nope' is unknown; tasks: linreg, induction, addk\n"


def test_train_from_a_yaml_config_then_list(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "task: {name: linreg, d: 2, n_points: 4}\nmodel: {n_layers: 1, d_model: 16, n_heads: 2}\ntrain: {steps: 20, batch_size: 4}\n"
    )
    result = iclab("train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs" / "a"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "step 20/20" in result.stderr  # plain log lines when not on a terminal
    listing = iclab("runs", str(tmp_path / "runs")).stdout
    assert "linreg" in listing and "complete" in listing and "20/20" in listing
    assert "--set train.snapshots=N" in iclab("runs", str(tmp_path / "runs" / "a"), "--snapshots").stdout
    heads = iclab("heads", str(tmp_path / "runs" / "a"))  # a linreg model reads vectors: no per-head analysis
    assert heads.returncode == 2 and "a linreg run reads vectors, not tokens" in heads.stderr
    # fine-tuning from a path typed relative to the shell's folder: the run records it absolute
    result = iclab("train", "--config", "c.yaml", "--out", "runs/b", "--device", "cpu", "--set", "train.init_weights=runs/a/model.safetensors",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"init_weights: {tmp_path.resolve() / 'runs' / 'a' / 'model.safetensors'}" in (tmp_path / "runs" / "b" / "config.yaml").read_text()


def test_reproduce_refuses_unknown_studies_and_presets(tmp_path):
    result = iclab("reproduce", "--only", "nonsense", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "study 'nonsense' is unknown" in result.stderr
    result = iclab("reproduce", "--preset", "huge", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "--preset 'huge' is not a preset of the main job; presets: quick, paper" in result.stderr
