"""`iclab reproduce`: every study runs, a failing one is reported, finished ones are skipped."""

import json
from dataclasses import dataclass

import pytest
import torch

import iclab
from iclab import reproduce as rep
from iclab import studies
from iclab.errors import IclabError
from iclab.results import Result


@dataclass(frozen=True)
class FakeSettings:
    steps: int = 3


@dataclass(frozen=True)
class Work(Result):
    steps: int


def fake_studies(monkeypatch, calls, presets=None):
    """Two real studies on the runner: "good" and "bad" (its models step fails); each run of either is logged in
    ``calls``."""
    from iclab.claims import measured
    from iclab.studies.runner import Part, Study

    presets = presets or {"quick": FakeSettings(), "paper": FakeSettings(100)}

    def declared(name, fail=False):
        def models(ctx):
            calls.append(name)
            if fail:
                raise RuntimeError("boom")

        return Study(name, presets, parts=lambda s: [Part("work", lambda ctx: Work(ctx.settings.steps), Work)],
                     claims=lambda s, res: ([measured(f"{name} ok", str(res["work"].steps))], {}),
                     figures=lambda res, s, folder: [], models=models, title=f"a study that {'fails' if fail else 'works'}")

    table = {"good": declared("good"), "bad": declared("bad", fail=True)}
    monkeypatch.setattr(studies, "NAMES", tuple(table))
    monkeypatch.setattr(studies, "study", table.__getitem__)


def test_failures_are_isolated_and_finished_studies_are_skipped(tmp_path, monkeypatch):
    calls = []
    fake_studies(monkeypatch, calls)
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1)
    assert record["studies"]["good"]["status"] == "complete"
    assert record["studies"]["good"]["findings"] == ["MEASURED: good ok (3)."]
    assert record["studies"]["bad"]["status"] == "failed" and "boom" in record["studies"]["bad"]["error"]
    assert json.loads((tmp_path / "reproduce.json").read_text())["studies"]["bad"]["status"] == "failed"
    assert "torch" in record["versions"]
    calls.clear()
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1)
    assert calls == ["bad"], "the finished study must be skipped, the failed one retried"
    assert record["studies"]["good"]["skipped"]
    calls.clear()
    before = (tmp_path / "reproduce.json").read_bytes()
    with pytest.raises(IclabError, match="holds a reproduction at preset quick, not paper"):  # results of two presets never mix
        rep.reproduce("paper", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1)
    assert calls == [] and (tmp_path / "reproduce.json").read_bytes() == before


def test_together_reaches_every_entry_and_is_recorded(tmp_path, monkeypatch):
    # `iclab reproduce --together` hands the flag to each study's run (tests/test_runner.py: what it does there)
    from iclab.studies.runner import Study

    calls, seen = [], []
    fake_studies(monkeypatch, calls)
    original = Study.run_settings
    monkeypatch.setattr(Study, "run_settings", lambda self, *a, **kw: seen.append(kw.get("together")) or original(self, *a, **kw))
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, together=True)
    assert seen == [True, True] and record["together"] is True
    assert json.loads((tmp_path / "reproduce.json").read_text())["together"] is True


def test_a_finished_study_with_other_settings_or_version_is_run_again(tmp_path, monkeypatch):
    calls = []
    fake_studies(monkeypatch, calls)
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, only=["good"])
    calls.clear()
    fake_studies(monkeypatch, calls, presets={"quick": FakeSettings(4)})  # the preset changed since
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, only=["good"])
    assert calls == ["good"]
    calls.clear()
    monkeypatch.setattr(iclab, "__version__", "0.0.0-other")
    summary = json.loads((tmp_path / "good" / "summary.json").read_text())
    summary["identity"]["iclab"] = "0.0.1"
    (tmp_path / "good" / "summary.json").write_text(json.dumps(summary))
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, only=["good"])
    assert calls == ["good"], "a result of another iclab version is not reused"


def test_entry_by_entry_runs_build_up_one_record_and_report(tmp_path, monkeypatch):
    calls = []
    fake_studies(monkeypatch, calls)
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, only=["good"])
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, only=["bad"])
    record = json.loads((tmp_path / "reproduce.json").read_text())
    assert list(record["studies"]) == ["good", "bad"]  # the first entry is kept, in the jobs' order
    assert record["studies"]["good"]["status"] == "complete" and record["studies"]["bad"]["status"] == "failed"
    with pytest.raises(IclabError, match="holds a reproduction at preset quick"):  # another preset needs another folder
        rep.reproduce("paper", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1, only=["bad"])


def test_entries_run_side_by_side_in_worker_processes(tmp_path, monkeypatch):
    from conftest import TINY_SPINGLASS

    entries = [rep.Job("sg-a", "spinglass", tuple(TINY_SPINGLASS)), rep.Job("sg-b", "spinglass", (*TINY_SPINGLASS, "seed=1"))]
    monkeypatch.setattr(rep, "jobs", lambda preset: entries)
    lines: list[str] = []
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lines.append, workers=2)
    assert any("2 worker processes" in line for line in lines)
    for name in ("sg-a", "sg-b"):
        assert record["studies"][name]["status"] == "complete" and record["studies"][name]["findings"]
        assert json.loads((tmp_path / name / "summary.json").read_text())["study"] == "spinglass"
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("sg-a", "sg-b"))
    assert a["numbers"]["fig4b"] != b["numbers"]["fig4b"]  # each worker ran its own entry (another seed, other numbers)
    saved = json.loads((tmp_path / "reproduce.json").read_text())
    assert saved["studies"].keys() == {"sg-a", "sg-b"}
    for entry in saved["studies"].values():  # a script can check each entry's time and memory, and the job's
        assert entry["wall_time_s"] > 0 and 0.05 < entry["peak_memory_gb"] < 8 and entry["compute_time_s"] > 0
    assert saved["wall_time_s"] >= max(e["wall_time_s"] for e in saved["studies"].values())
    assert saved["peak_memory_gb"] > 0.05
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=2)
    assert all(e.get("skipped") for e in record["studies"].values())
    assert all(record["studies"][n]["peak_memory_gb"] == saved["studies"][n]["peak_memory_gb"] for n in saved["studies"])
    # a re-run that only re-judges cached parts (its summary gone) is quick, yet the entry keeps its parts' cost
    (tmp_path / "sg-a" / "summary.json").unlink()
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, workers=1)
    again, first = record["studies"]["sg-a"], saved["studies"]["sg-a"]
    assert not again.get("skipped") and again["compute_time_s"] == first["compute_time_s"] > 0


def test_the_peak_memory_counts_what_a_process_held_since_its_reset():
    import numpy as np

    from iclab import memory

    if not memory.reset_peak():
        pytest.skip("no per-process peak reset on this platform")
    base = memory.peak_gb()
    block = np.ones(2**28 // 8)  # 0.25 GB, touched
    held = memory.peak_gb()
    del block
    assert held - base > 0.2
    memory.reset_peak()
    assert memory.peak_gb() < held - 0.2  # the reset forgets the freed block


def test_lanes_keep_the_pretrained_entries_together_and_start_the_longest_first():
    todo = rep.jobs("quick")
    groups = rep.lanes(todo)
    minutes = [sum(j.minutes for j in g) for g in groups]
    assert minutes == sorted(minutes, reverse=True) and [j.name for j in groups[0]] == ["induction"]
    assert [[j.name for j in g] for g in groups if len(g) > 1] == [["induction-smollm2", "addk-smollm2"]]
    assert sorted(j.name for g in groups for j in g) == sorted(j.name for j in todo)


def test_the_default_worker_count_follows_the_machine():
    import os

    assert rep.default_workers(torch.device("cpu")) == len(os.sched_getaffinity(0))
    assert rep.default_workers(torch.device("cuda")) == 1  # the entries would share one accelerator
