"""One writer per folder: a second iclab process on a run, study or reproduce folder is refused with the first one's
process id, and a killed writer's lock never blocks the next run."""

import signal
import subprocess
import sys
import time

from conftest import TINY_SPINGLASS
from iclab.io import BOOKKEEPING, holding_locks, lock_folder
from test_robustness import cli_sets, iclab, one_line_error


def test_two_trainings_into_one_folder_a_second_apart_the_second_is_refused(tmp_path):
    out = tmp_path / "conc"
    args = ["train", "--task", "linreg", "--out", str(out), *cli_sets(10**7)]
    first = subprocess.Popen([sys.executable, "-m", "iclab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size):
            time.sleep(0.05)
        one_line_error(iclab(*args), f"in use by iclab process {first.pid} (training)")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = [row for row in (out / "metrics.jsonl").read_text().splitlines() if row.strip()]
    assert len(steps) == len(set(steps))  # one writer: no row twice
    with holding_locks():
        lock_folder(out, "a test")  # the killed process's lock is gone with it


def test_a_held_study_or_run_folder_refuses_a_second_writer_untouched_and_frees_when_released(tmp_path):
    sets = sum((["--set", s] for s in TINY_SPINGLASS), [])
    for folder, args, what in ((tmp_path / "sg", ["run", "spinglass", *sets], "the spinglass study"),
                               (tmp_path / "run", ["train", "--task", "linreg", *cli_sets(5)], "training"),
                               (tmp_path / "all", ["reproduce", "--only", "spinglass"], "reproduce")):
        folder.mkdir()
        with holding_locks():
            lock_folder(folder, what)
            one_line_error(iclab(*args, "--out", str(folder)), "in use by iclab process")
            assert {p.name for p in folder.iterdir()} <= set(BOOKKEEPING)  # the holder's lock and log only
        if what == "training":  # released: the same command now runs
            result = iclab(*args, "--out", str(folder))
            assert result.returncode == 0, result.stderr


def test_a_lock_is_reentrant_in_one_process_and_released_by_its_block(tmp_path):
    with holding_locks():
        lock_folder(tmp_path, "outer")
        with holding_locks():
            lock_folder(tmp_path, "again")  # the same process: no-op, still held by the outer block
        probe = subprocess.run([sys.executable, "-c", f"from iclab.io import lock_folder; lock_folder({str(tmp_path)!r}, 'x')"],
                               capture_output=True, text=True)
        assert "in use by iclab process" in probe.stderr and "(outer)" in probe.stderr
    probe = subprocess.run([sys.executable, "-c", f"from iclab.io import lock_folder; lock_folder({str(tmp_path)!r}, 'x')"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr


def test_a_config_that_cannot_fit_memory_is_one_line_before_the_folder_is_touched(tmp_path):
    """A batch of 10^8 prompts, or a context of 200,000 positions, is refused at once; the corrected command runs."""
    out = tmp_path / "big"
    for too_big in ("train.batch_size=100000000", "task.n_points=100000"):
        one_line_error(iclab("train", "--task", "linreg", "--out", str(out), *cli_sets(5), "--set", too_big),
                       "lower train.batch_size or the context length")
        assert not out.exists()
    result = iclab("train", "--task", "linreg", "--out", str(out), *cli_sets(5))
    assert result.returncode == 0, result.stderr


def test_a_second_ctrl_c_in_a_slow_training_step_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    """The first signal finishes the step and saves; a second one, sent while that slow step runs, stops at once."""
    out = tmp_path / "slow"
    slow = ["--set", "model.d_model=128", "--set", "model.n_layers=4", "--set", "train.batch_size=2048",  # ~2 s a step
            "--set", "train.log_every=1"]
    proc = subprocess.Popen([sys.executable, "-m", "iclab.cli", "train", "--task", "linreg", "--out", str(out), *cli_sets(1000), *slow],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        line = proc.stderr.readline()
        while line and "stopping after this step" not in line:
            line = proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped by SIGINT again, at once, mid-step; what was saved before is kept" in err and "Traceback" not in err and "error" not in err
    assert not list(out.rglob("*.tmp"))
    from iclab.runs import RunDir

    assert RunDir(out).read_metrics()  # what was finished is on disk, readable
