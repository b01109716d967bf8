"""Progress with an ETA inside long analyses and sweeps, and the iclab.log every written folder keeps."""

import re

from conftest import TINY_SPINGLASS
from iclab.progress import reporting, track
from iclab.sweep import sweep
from test_robustness import cli_sets, iclab

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def test_a_tracked_loop_reports_how_far_it_is_only_inside_a_reporting_block():
    lines = []
    assert list(track(range(3), what="items")) == [0, 1, 2]  # no block: silent
    with reporting(lines.append, "scan", every_s=0):
        assert list(track(range(4), what="heads scanned")) == [0, 1, 2, 3]
    assert [re.sub(r"\d+s", "Ns", line) for line in lines] == [
        f"  scan: heads scanned {i}/4, Ns so far, eta Ns" for i in (1, 2, 3)]  # the last one is the part's own "done"


def test_the_eta_of_a_loop_is_its_own_rate_not_that_of_the_loops_before_it(monkeypatch):
    import iclab.progress as progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    lines = []
    with reporting(lines.append, "scores", every_s=0):
        for _ in track(range(2), what="slow"):
            clock[0] += 100.0  # 100 s an item
        for _ in track(range(10), what="fast"):
            clock[0] += 1.0  # 1 s an item, 200 s after the block began
    assert lines[0] == "  scores: slow 1/2, 100s so far, eta 100s"
    assert lines[1] == "  scores: fast 1/10, 201s so far, eta 9s"  # not 201 s an item


def test_a_sweep_shows_runs_done_of_total_with_an_eta(tmp_path):
    lines = []
    sweep("spinglass", "quick", ["figS7.N=10,20"], tmp_path, base=TINY_SPINGLASS, log=lines.append)
    done = [line for line in lines if line.startswith("  [")]
    assert re.match(r"  \[1/2\] spinglass-\w+: complete \(\d+s, eta \d+s\)", done[0]), done
    assert re.match(r"  \[2/2\] spinglass-\w+: complete \(\d+s\)", done[1]), done
    log = (tmp_path / "iclab.log").read_text()
    assert re.search(STAMP + r"iclab .*, sweep: ", log) and log.rstrip().endswith("finished")


def test_every_run_and_study_folder_keeps_a_log_of_what_was_printed_with_times(tmp_path):
    result = iclab("train", "--task", "linreg", "--out", str(tmp_path / "run"), *cli_sets(10))
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "run" / "iclab.log").read_text().splitlines()
    assert re.match(STAMP + r"iclab [\d.]+, process \d+, training: ", log[0])
    assert any(re.match(STAMP + r"linreg step 10/10 loss ", line) for line in log)
    assert re.match(STAMP + "finished$", log[-1])
    result = iclab("run", "spinglass", "--out", str(tmp_path / "sg"), *sum((["--set", s] for s in TINY_SPINGLASS), []))
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "sg" / "iclab.log").read_text()
    assert re.search(STAMP + r"  fig2: done in [\d.]+s", log) and "the spinglass study" in log
    before = (tmp_path / "run" / "iclab.log").read_text()
    again = iclab("train", "--task", "linreg", "--out", str(tmp_path / "run"), *cli_sets(10), "--set", "train.lr=1")
    assert again.returncode == 2  # refused: a different config; the refusal does not touch the folder's log
    assert (tmp_path / "run" / "iclab.log").read_text() == before
