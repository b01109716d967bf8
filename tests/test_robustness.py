"""What a new user hits: refused folders, bad options, signals, listings, extended and damaged runs, conveniences."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_SPINGLASS
from iclab.errors import IclabError
from iclab.runs import RunDir, load_run
from iclab.sweep import expand, run_directory
from iclab.train import apply_overrides, default_config, train

SMALL = ["task.d=3", "task.n_points=6", "model.n_layers=1", "model.d_model=16", "model.n_heads=2",
         "train.batch_size=8", "train.warmup_steps=5", "train.log_every=5"]


def iclab(*args, cwd=None, module="iclab.cli"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(result, message, code=2):
    assert result.returncode == code, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def small_run(path, steps=20, extra=()):
    config = apply_overrides(default_config("linreg"), SMALL + [f"train.steps={steps}", *extra])
    return train(config, path, "cpu", progress=False)


def cli_sets(steps):
    out = []
    for s in SMALL + [f"train.steps={steps}"]:
        out += ["--set", s]
    return out


# ---------------------------------------------------------------- folders that are not the study's own
def test_a_study_refuses_a_training_run_and_an_unrelated_folder_untouched(tmp_path):
    small_run(tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    one_line_error(iclab("run", "spinglass", "--out", str(tmp_path / "run"), *sum((["--set", s] for s in TINY_SPINGLASS), [])),
                   "holds a training run")
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert load_run(tmp_path / "run").step == 20
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    one_line_error(iclab("run", "spinglass", "--out", str(tmp_path / "mine")), "is not empty and holds no spinglass study")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_a_study_folder_belongs_to_its_study(tmp_path):
    from iclab.studies.common import StudyDir

    StudyDir(tmp_path / "s").claim("spinglass")
    StudyDir(tmp_path / "s").claim("spinglass")  # its own study may come back
    with pytest.raises(IclabError, match="holds the 'spinglass' study, not 'linreg'"):
        StudyDir(tmp_path / "s").claim("linreg")


def _files(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_study_folder_holds_one_preset_and_one_model_and_refuses_another_untouched(tmp_path):
    from iclab.studies import spinglass

    out = tmp_path / "sg"
    spinglass.run("quick", out, TINY_SPINGLASS, torch.device("cpu"), log=lambda s: None)
    record = json.loads((out / "study.json").read_text())
    assert record["preset"] == "quick" and record["model"] is None and record["identity"]["iclab"]
    before = _files(out)
    one_line_error(iclab("run", "spinglass", "--preset", "paper", "--out", str(out)),
                   "holds spinglass at preset quick on iclab's own models, not preset paper on iclab's own models")
    assert _files(out) == before
    sets = sum((["--set", s] for s in [*TINY_SPINGLASS, "seed=1"]), [])  # other settings at the same preset: allowed
    assert iclab("run", "spinglass", "--out", str(out), *sets).returncode == 0
    assert json.loads((out / "study.json").read_text())["identity"] != record["identity"]


def test_a_pretrained_model_gets_its_own_default_folder_and_a_trained_run_is_refused_there(hf_folder, tmp_path):
    small = ["seeds=1", "pretrained.probe_length=6", "pretrained.probe_batch=2", "pretrained.text_sequences=2", "pretrained.text_length=24",
             "pretrained.top_k=2", "pretrained.random_draws=2", "pretrained.batch=2"]
    result = iclab("run", "induction", "--model", str(hf_folder), *sum((["--set", s] for s in small), []), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / f"induction-{hf_folder.name}-quick"
    record = json.loads((folder / "study.json").read_text())
    assert record["model"] == str(hf_folder) and record["preset"] == "quick"
    before = _files(folder)
    one_line_error(iclab("run", "induction", "--out", str(folder), cwd=tmp_path),
                   f"holds induction at preset quick on model {hf_folder}, not preset quick on iclab's own models")
    assert _files(folder) == before and not (tmp_path / "runs" / "induction-quick").exists()


@pytest.mark.parametrize("command", [["train", "--task", "linreg"], ["run", "spinglass"], ["reproduce", "--only", "spinglass"]])
def test_an_out_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path, command):
    (tmp_path / "file").write_text("x")
    one_line_error(iclab(*command, "--out", str(tmp_path / "file")), "is a file, not a folder")
    one_line_error(iclab(*command, "--out", "/proc/iclab-cannot-be-here"), "cannot")


def test_heads_checks_its_output_file_before_any_work(tmp_path):
    # the output is checked first: the model argument is not even looked at
    one_line_error(iclab("heads", str(tmp_path / "no-model"), "--out", "/proc/x.json", "--device", "cpu"), "--out /proc/x.json")
    one_line_error(iclab("heads", str(tmp_path / "no-model"), "--out", str(tmp_path), "--device", "cpu"), "is a folder")


@pytest.mark.parametrize("top", ["0", "-3"])
def test_top_must_be_positive(tmp_path, top):
    result = iclab("heads", str(tmp_path), "--top", top)
    assert result.returncode == 2 and "--top" in result.stderr and "Traceback" not in result.stderr


def test_pickled_weights_refused_by_the_restricted_loader_are_one_line(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_readme import tiny_llama_folder

    folder = tmp_path / "m"
    tiny_llama_folder(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    (folder / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo PWNED > " + str(tmp_path / "pwned"),))

    torch.save({**model.state_dict(), "evil": Evil()}, folder / "pytorch_model.bin")
    result = iclab("heads", str(folder), "--device", "cpu")
    one_line_error(result, "restricted loader")
    assert not (tmp_path / "pwned").exists()


def test_decode_without_a_tokenizer_is_a_clear_error():
    transformers = pytest.importorskip("transformers")
    from iclab.heads import HFHeadModel

    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=16)
    with pytest.raises(IclabError, match="without a tokenizer"):
        HFHeadModel(transformers.LlamaForCausalLM(cfg), None).decode([1, 2])


def test_rundir_takes_a_string():
    assert RunDir("runs/x").config_file == Path("runs/x/config.yaml")


# ---------------------------------------------------------------- sweeps
def test_a_bad_sweep_grid_is_exit_2_and_failed_runs_exit_1(tmp_path):
    base = sum((["--set", s] for s in TINY_SPINGLASS), [])
    for grid in (["--grid", "nosuch.key=1,2"], ["--grid", "=1,2"], ["--grid", "figS7.N=abc,xyz"], ["--grid", "figS7.D=[1,2"],
                 ["--grid", "figS7.N=10", "--grid", "figS7.N=20"]):
        result = iclab("sweep", "spinglass", *grid, *base, "--out", str(tmp_path / "sw"))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "sw").exists()
    grid = ["figS7.N=10,20"]
    bad = run_directory("spinglass", "quick", expand(grid, 0, TINY_SPINGLASS)[0].overrides, tmp_path / "sw")
    bad.mkdir(parents=True)
    (bad / "stray.txt").write_text("x")  # this point fails when it runs
    result = iclab("sweep", "spinglass", "--grid", grid[0], *base, "--out", str(tmp_path / "sw"))
    assert result.returncode == 1
    assert "1 of 2 sweep runs failed" in result.stderr
    assert "spinglass" in iclab("sweep", "--help").stdout and "addk" in iclab("sweep", "--help").stdout


# ---------------------------------------------------------------- conveniences
def test_version_module_entry_point_and_completion():
    import iclab as package

    assert iclab("--version").stdout.strip() == f"iclab {package.__version__}"
    assert iclab("--version", module="iclab").stdout.strip() == f"iclab {package.__version__}"
    assert "--install-completion" in iclab("--help").stdout


def test_runs_lists_full_paths_when_piped_json_and_snapshots(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "run"
    small_run(deep, extra=["train.checkpoint_every=5"])
    listing = iclab("runs", str(tmp_path))
    assert str(deep) in listing.stdout
    rows = json.loads(iclab("runs", str(tmp_path), "--json").stdout)
    assert rows[0]["path"] == str(deep) and rows[0]["status"] == "complete"
    snaps = json.loads(iclab("runs", str(deep), "--snapshots", "--json").stdout)
    assert [s["step"] for s in snaps] == [5, 10, 15, 20]
    with pytest.raises(IclabError, match=r"no snapshot at step 7; nearest: 5, 10, 15, 20"):
        load_run(deep, step=7)


def test_runs_shows_a_corrupt_config_and_skips_study_folders(tmp_path):
    small_run(tmp_path / "good")
    small_run(tmp_path / "bad")
    (tmp_path / "bad" / "config.yaml").write_text("task: [unclosed\n")
    from iclab.studies.common import StudyDir

    StudyDir(tmp_path / "study").claim("linreg")
    (tmp_path / "study" / "config.yaml").write_text("seed: 0\n")
    rows = {Path(r["path"]).name: r for r in json.loads(iclab("runs", str(tmp_path), "--json").stdout)}
    assert rows["good"]["status"] == "complete"
    assert rows["bad"]["status"].startswith("corrupt config")
    assert "study" not in rows


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        small_run(tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("config.yaml", "summary.json", "model.safetensors"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


# ---------------------------------------------------------------- extending and recovering runs
def test_a_finished_run_is_extended_when_only_the_step_count_grew(tmp_path):
    small_run(tmp_path / "run", steps=20)
    result = small_run(tmp_path / "run", steps=30)
    assert result.resumed_from == 20 and result.summary["steps"] == 30
    run = load_run(tmp_path / "run")
    assert run.step == 30 and run.config.train.steps == 30
    assert run.metrics.query("split == 'train'")["step"].max() == 30
    with pytest.raises(IclabError, match="train.steps: 30 on disk vs 10"):
        small_run(tmp_path / "run", steps=10)
    result = iclab("train", "--task", "linreg", "--device", "cpu", "--out", str(tmp_path / "run"), *cli_sets(35))  # from the CLI
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and load_run(tmp_path / "run").step == 35
    with pytest.raises(IclabError, match="different config"):
        small_run(tmp_path / "run", steps=40, extra=["train.lr=0.01"])


def test_a_corrupt_resume_checkpoint_names_the_last_good_snapshot_and_recover_uses_it(tmp_path):
    args = ["train", "--task", "linreg", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert iclab(*args, *cli_sets(20), "--set", "train.checkpoint_every=5").returncode == 0
    run = RunDir(tmp_path / "run")
    (run.summary_file).unlink()
    run.final_model.unlink()
    run.resume_file.write_bytes(b"garbage")
    (run.checkpoints / "step_00000020.safetensors").write_bytes(b"garbage too")
    result = iclab(*args, *cli_sets(20), "--set", "train.checkpoint_every=5")
    one_line_error(result, "the last good weight snapshot is step 15")
    assert "--recover" in result.stderr
    result = iclab(*args, *cli_sets(20), "--set", "train.checkpoint_every=5", "--recover")
    assert result.returncode == 0, result.stderr
    assert load_run(tmp_path / "run").step == 20


def test_a_write_leaves_a_stop_handler_set_outside_python_alone(tmp_path, monkeypatch):
    """signal.getsignal gives None for a handler installed outside Python (an embedding runtime's): the write must
    neither replace nor 'restore' it (setting None is an error), and still write."""
    import signal

    from iclab.io import atomic_write

    touched = []
    monkeypatch.setattr(signal, "getsignal", lambda n: None)
    monkeypatch.setattr(signal, "signal", lambda n, h: touched.append(n))
    atomic_write(tmp_path / "out.txt", lambda tmp: tmp.write_text("whole"))
    assert (tmp_path / "out.txt").read_text() == "whole" and touched == []


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_inside_a_write_is_delivered_once_the_file_is_whole(tmp_path, signame):
    """Planted: the signal is sent from inside the write, before any byte is written; it arrives after the rename
    (the file whole, no temporary left). Control: with the signal sent after the write, it arrives at once."""
    import signal
    import time

    from iclab.io import atomic_write

    number, events = getattr(signal, signame), []

    def stop(signum, frame):
        events.append(("stopped", (tmp_path / "out.txt").is_file()))
        raise KeyboardInterrupt

    def write(tmp):
        os.kill(os.getpid(), number)
        time.sleep(0.05)  # without the hold, the stop is raised here, mid-write
        tmp.write_text("whole")
        events.append("written")

    before = signal.signal(number, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(tmp_path / "out.txt", write)
        assert events == ["written", ("stopped", True)]
        assert (tmp_path / "out.txt").read_text() == "whole" and not list(tmp_path.glob(".*.tmp"))
        events.clear()
        with pytest.raises(KeyboardInterrupt):
            atomic_write(tmp_path / "other.txt", lambda tmp: tmp.write_text("x"))
            os.kill(os.getpid(), number)
            time.sleep(0.05)
        assert events == [("stopped", True)]
    finally:
        signal.signal(number, before)


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_outside_training_stops_saying_what_was_kept_and_keeps_finished_parts(tmp_path, signame, code):
    import signal
    import time

    out = tmp_path / "sg"
    proc = subprocess.Popen([sys.executable, "-m", "iclab.cli", "run", "spinglass", "--out", str(out),
                             *sum((["--set", s] for s in TINY_SPINGLASS), [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((out / "parts").glob("*.json")):
        time.sleep(0.02)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the study finished before the signal arrived")
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err and f"stopped by {signame}; everything finished so far is kept".encode() in err
    for part in (out / "parts").glob("*.json"):
        json.loads(part.read_text())  # every part on disk is whole
    assert not list(out.rglob("*.tmp"))


def test_tensorboard_logging_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    small_run(tmp_path / "run", extra=["train.tensorboard=true"])
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    shutil.rmtree(tmp_path / "run" / "tensorboard")
    small_run(tmp_path / "run", extra=["train.tensorboard=false"])  # logging is not part of the run's identity


@pytest.mark.parametrize("damage", [b"{truncated", b"\xff\xfe binary", b'["a list"]'])
def test_report_on_a_damaged_record_or_summary_is_one_line_and_leaves_the_old_page(tmp_path, damage):
    (tmp_path / "reproduce.json").write_text("{not json")
    one_line_error(iclab("report", str(tmp_path)), "reproduce.json: cannot be read (JSONDecodeError)")
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "studies": {"spinglass": {"status": "complete"}}}))
    (tmp_path / "spinglass").mkdir()
    (tmp_path / "spinglass" / "summary.json").write_bytes(damage)
    (tmp_path / "report.html").write_text("<p>the good page of an earlier run</p>")
    one_line_error(iclab("report", str(tmp_path)), "spinglass/summary.json: ")
    assert (tmp_path / "report.html").read_text() == "<p>the good page of an earlier run</p>"


def test_report_on_a_study_folder_with_a_damaged_summary_is_one_line_and_leaves_the_old_page(tmp_path):
    from iclab.report import build_report
    from iclab.studies import spinglass

    study = tmp_path / "sg"
    spinglass.run("quick", study, TINY_SPINGLASS, torch.device("cpu"), log=lambda s: None)
    good = build_report(study).read_bytes()
    (study / "summary.json").write_text('{"schema": "iclab.studies.common.Summary/4", "study": ')
    result = iclab("report", str(study))
    one_line_error(result, "summary.json: cannot be read (JSONDecodeError)")
    assert "report.html not written" in result.stderr
    assert (study / "report.html").read_bytes() == good


def test_report_on_a_summary_of_an_older_iclab_is_a_re_run_row(tmp_path):
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "quick", "studies": {"spinglass": {"status": "complete"}}}))
    (tmp_path / "spinglass").mkdir()
    (tmp_path / "spinglass" / "summary.json").write_text(json.dumps({"schema": "iclab.studies.common.Summary/3",
                                                                      "study": "spinglass", "identity": {"iclab": "0.16.0"}}))
    result = iclab("report", str(tmp_path))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report.html").read_text()
    assert "written by iclab 0.16.0 in an older format; re-run the study" in page and 'class="badge bad">re-run' in page


@pytest.mark.parametrize("args, message", [
    (["--task", "linreg", "--set", "model=3"], "model: is a section of settings"),
    (["--task", "linreg", "--set", "train=[1]"], "train: is a section of settings"),
])
def test_a_value_where_a_section_belongs_is_one_line_and_writes_nothing(tmp_path, args, message):
    one_line_error(iclab("train", *args, "--out", str(tmp_path / "out")), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, content, message", [
    ("string.yaml", b'"just a string"\n', "expected a mapping at the top level"),
    ("binary.yaml", b"\x00\x01\xff\xfe", "is not a text (UTF-8) file"),
    ("folder.yaml", None, "is a folder, not a config file"),
    ("twice.yaml", b"seed: 1\nseed: 2\n", "line 2: key 'seed' is given twice"),
    ("nested.yaml", b"task:\n  name: linreg\n  d: 3\n  d: 4\n", "line 4: key 'd' is given twice"),
    ("task.yaml", b"task: linreg\n", "task: is a section of settings, a mapping (in YAML `task: {name: linreg}`"),
    ("model.yaml", b"task: {name: linreg}\nmodel: [2, 64]\n", "model: is a section of settings, a mapping"),
])
def test_a_bad_config_file_is_one_line_and_writes_nothing(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    one_line_error(iclab("train", "--config", str(path), "--out", str(tmp_path / "out")), message)
    assert not (tmp_path / "out").exists()
    if name == "task.yaml":  # --task beside the file changes nothing: the file is still wrong
        one_line_error(iclab("train", "--task", "linreg", "--config", str(path), "--out", str(tmp_path / "out")), message)
        assert not (tmp_path / "out").exists()


def test_a_study_folder_is_named_for_what_it_is_by_train_heads_and_sweep(tmp_path):
    from iclab.studies import spinglass

    study = tmp_path / "sg"
    spinglass.run("quick", study, TINY_SPINGLASS, torch.device("cpu"), log=lambda s: None)
    before = _files(study)
    for command in (["train", "--task", "linreg", "--out", str(study)], ["heads", str(study)]):
        one_line_error(iclab(*command), "holds the 'spinglass' study, not a training run")
    one_line_error(iclab("sweep", "spinglass", "--seeds", "1", "--out", str(study)), "holds the 'spinglass' study; a sweep needs")
    assert _files(study) == before
    small_run(tmp_path / "run")
    run_before = _files(tmp_path / "run")
    one_line_error(iclab("sweep", "spinglass", "--seeds", "1", "--out", str(tmp_path / "run")), "holds a training run; a sweep")
    assert _files(tmp_path / "run") == run_before


@pytest.mark.parametrize("args, message", [
    (["sweep", "spinglass", "--seeds", "-1"], "--seeds must be >= 0"),
    (["run", "spinglass", "--set", "thresholds.gd_gap=-1"], "thresholds.gd_gap: must be positive"),
    (["run", "addk", "--set", "thresholds.min_label_share=2"], "thresholds.min_label_share: must be a share in (0, 1]"),
    (["run", "induction", "--set", "thresholds.attribution_p=0"], "thresholds.attribution_p: must lie in (0, 1]"),
])
def test_negative_seeds_and_thresholds_out_of_range_are_one_line(tmp_path, args, message):
    one_line_error(iclab(*args, "--out", str(tmp_path / "out")), message)
    assert not (tmp_path / "out").exists()


def test_report_on_a_missing_folder_or_a_file_says_which(tmp_path):
    one_line_error(iclab("report", str(tmp_path / "nosuch")), "nosuch: no such folder; give a folder written by")
    (tmp_path / "file.txt").write_text("x")
    one_line_error(iclab("report", str(tmp_path / "file.txt")), "file.txt: is a file, not a folder")
    assert not (tmp_path / "nosuch").exists()
