"""`iclab reproduce`: every built study runs, a failing one is reported, finished ones are skipped."""

import json
import types
from dataclasses import dataclass

import torch

import iclab
from iclab import reproduce as rep
from iclab.config import config_hash
from iclab import studies
from iclab.studies import StudyInfo


@dataclass(frozen=True)
class FakeSettings:
    steps: int = 3


def fake_studies(monkeypatch, calls, presets=None):
    presets = presets or {"quick": FakeSettings(), "paper": FakeSettings(100)}

    def module(name, fail=False):
        def run(preset, out, overrides, device):
            calls.append(name)
            if fail:
                raise RuntimeError("boom")
            out.mkdir(parents=True, exist_ok=True)
            summary = {"study": name, "preset": preset, "settings_hash": config_hash(presets[preset]),
                       "iclab_version": iclab.__version__, "findings": [f"{name} ok"]}
            (out / "summary.json").write_text(json.dumps(summary))
            return summary

        return types.SimpleNamespace(run=run, PRESETS=presets)

    table = {
        "good": StudyInfo("good", "a study that works", "-", built=True),
        "bad": StudyInfo("bad", "a study that fails", "-", built=True),
        "later": StudyInfo("later", "not built", "-", built=False),
    }
    modules = {"good": module("good"), "bad": module("bad", fail=True)}
    monkeypatch.setattr(studies, "STUDIES", table)
    monkeypatch.setattr(studies, "study_module", lambda name: modules[name])


def test_failures_are_isolated_and_finished_studies_are_skipped(tmp_path, monkeypatch):
    calls = []
    fake_studies(monkeypatch, calls)
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None)
    assert record["studies"]["good"]["status"] == "complete"
    assert record["studies"]["good"]["findings"] == ["good ok"]
    assert record["studies"]["bad"]["status"] == "failed" and "boom" in record["studies"]["bad"]["error"]
    assert record["studies"]["later"]["status"] == "not built yet"
    assert json.loads((tmp_path / "reproduce.json").read_text())["studies"]["bad"]["status"] == "failed"
    assert "torch" in record["versions"]
    calls.clear()
    record = rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None)
    assert calls == ["bad"], "the finished study must be skipped, the failed one retried"
    assert record["studies"]["good"]["skipped"]
    calls.clear()
    rep.reproduce("paper", tmp_path, torch.device("cpu"), log=lambda s: None)
    assert "good" in calls, "a result of another preset is not reused"


def test_a_finished_study_with_other_settings_or_version_is_run_again(tmp_path, monkeypatch):
    calls = []
    fake_studies(monkeypatch, calls)
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, only=["good"])
    calls.clear()
    fake_studies(monkeypatch, calls, presets={"quick": FakeSettings(4)})  # the preset changed since
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, only=["good"])
    assert calls == ["good"]
    calls.clear()
    monkeypatch.setattr(iclab, "__version__", "0.0.0-other")
    summary = json.loads((tmp_path / "good" / "summary.json").read_text())
    summary["iclab_version"] = "0.0.1"
    (tmp_path / "good" / "summary.json").write_text(json.dumps(summary))
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, only=["good"])
    assert calls == ["good"], "a result of another iclab version is not reused"


def test_entry_by_entry_runs_build_up_one_record_and_report(tmp_path, monkeypatch):
    calls = []
    fake_studies(monkeypatch, calls)
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, only=["good"])
    rep.reproduce("quick", tmp_path, torch.device("cpu"), log=lambda s: None, only=["bad"])
    record = json.loads((tmp_path / "reproduce.json").read_text())
    assert list(record["studies"]) == ["good", "bad"]  # the first entry is kept, in the jobs' order
    assert record["studies"]["good"]["status"] == "complete" and record["studies"]["bad"]["status"] == "failed"
    rep.reproduce("paper", tmp_path, torch.device("cpu"), log=lambda s: None, only=["bad"])
    assert list(json.loads((tmp_path / "reproduce.json").read_text())["studies"]) == ["bad"]  # another preset starts over
