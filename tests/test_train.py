"""Training: exact resumption (in-process, after SIGINT and after SIGKILL), atomic files, clear failures."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iclab.errors import CheckpointError, RunDirError, TrainingDiverged
from iclab.runs import RunDir, list_runs, load_run
from iclab.tasks import make_task
from iclab.train import Interrupted, apply_overrides, build_model, default_config, evaluate, snapshot_steps, train
from iclab.train.checkpoint import load_tensors

SMALL = [
    "task.d=3",
    "task.n_points=6",
    "model.n_layers=1",
    "model.d_model=16",
    "model.n_heads=2",
    "train.batch_size=8",
    "train.warmup_steps=5",
    "train.log_every=5",
]


def small_config(steps=40, every=10, extra=()):
    return apply_overrides(default_config("linreg"), SMALL + [f"train.steps={steps}", f"train.checkpoint_every={every}", *extra])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_training_reduces_the_loss_and_writes_the_run_layout(tmp_path):
    # One fixed task vector (a pool of one): learnable in the weights, so the error must fall far.
    cfg = small_config(steps=300, every=100, extra=["train.lr=3e-3", "train.snapshots=6", "train.batch_size=32", "task.task_pool=1"])
    before = evaluate(build_model(cfg), make_task(cfg.task), cfg, "cpu")["normalized_error"]
    result = train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.config == cfg and run.status == "complete" and run.step == 300
    after = run.metrics.query("split == 'eval'")["normalized_error"].iloc[-1]
    assert after < 0.1 and before > 0.5, (before, after)
    assert set(snapshot_steps(300, 6)) <= set(result.run.snapshot_steps())
    assert 0 in result.run.snapshot_steps()
    for name, p in run.model.state_dict().items():
        assert torch.equal(p, result.model.state_dict()[name])
    rows = list_runs(tmp_path)
    assert rows[0]["status"] == "complete" and rows[0]["steps"] == "300/300"


@pytest.mark.parametrize("extra", [[], ["train.compile=true"], ["train.precision=bfloat16"]], ids=["eager", "compiled", "bfloat16"])
def test_resume_in_process_is_bitwise_equal(tmp_path, extra):
    full = train(small_config(steps=40, extra=extra), tmp_path / "full", progress=False)
    # A run stopped after 20 steps: same config except the step count is not part of
    # the state, so simulate the stop by training the first 20 steps and copying the resume file.
    part_dir = tmp_path / "part"
    cfg = small_config(steps=40, extra=extra)
    from iclab.train import loop

    calls = {"n": 0}
    original = loop._save_resume

    def stop_after_first_checkpoint(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    loop._save_resume = stop_after_first_checkpoint
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, part_dir, progress=False)
    finally:
        loop._save_resume = original
    _, meta = load_tensors(part_dir / "checkpoints" / "resume.safetensors")
    assert meta["step"] == 20
    resumed = train(cfg, part_dir, progress=False)
    assert resumed.resumed_from == 20
    assert_bitwise_equal(weights(tmp_path / "full"), weights(part_dir))
    steps = [r["step"] for r in RunDir(part_dir).read_metrics() if r["split"] == "train"]
    assert steps == sorted(set(steps)), "metrics after the checkpoint must not be duplicated"
    assert full.summary["final_loss"] == resumed.summary["final_loss"]


def test_bfloat16_autocast_trains_the_float32_weights_to_the_same_loss(tmp_path):
    # The learnable run of the first test in float32 and under bfloat16 autocast: the stored weights stay float32, the
    # steps differ (the forward pass really ran in bfloat16), and both learn the task as far, up to bfloat16's rounding.
    extra = ["train.lr=3e-3", "train.batch_size=32", "task.task_pool=1"]
    cfg = small_config(steps=300, every=100, extra=extra)
    fp32 = train(cfg, tmp_path / "fp32", progress=False)
    bf16 = train(small_config(steps=300, every=100, extra=[*extra, "train.precision=bfloat16"]), tmp_path / "bf16", progress=False)
    a, b = weights(tmp_path / "fp32"), weights(tmp_path / "bf16")
    assert all(t.dtype == torch.float32 for t in b.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)
    error = {name: evaluate(r.model, make_task(cfg.task), cfg, "cpu")["normalized_error"] for name, r in (("fp32", fp32), ("bf16", bf16))}
    assert error["bf16"] < 0.1 and abs(error["bf16"] - error["fp32"]) < 0.05, error


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_auto_precision_trains_in_bfloat16_only_where_the_device_multiplies_it_natively(tmp_path, monkeypatch, native):
    # emulated bfloat16 products are several times slower than float32 (docs/scaling.md): "auto" takes float32 there
    import iclab.device

    monkeypatch.setattr(iclab.device, "fast_bf16", lambda device: native)
    auto = train(small_config(steps=20, extra=["train.precision=auto"]), tmp_path / "auto", progress=False)
    assert auto.summary["precision"] == ("bfloat16" if native else "float32")
    same = train(small_config(steps=20, extra=[f"train.precision={auto.summary['precision']}"]), tmp_path / "same", progress=False)
    assert_bitwise_equal(weights(tmp_path / "auto"), weights(tmp_path / "same"))
    assert same.summary["precision"] == auto.summary["precision"]


def test_evaluation_builds_no_autograd_graph():
    cfg = small_config(steps=1)
    task = make_task(cfg.task)
    seen, metrics = [], task.metrics
    task.metrics = lambda out, batch: seen.append(out.requires_grad) or metrics(out, batch)
    evaluate(build_model(cfg), task, cfg, "cpu")
    assert seen and not any(seen)


def test_a_directory_with_another_config_is_refused_untouched(tmp_path):
    train(small_config(steps=10), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(RunDirError, match=r"different config \(model.n_layers: 1 on disk vs 2"):
        train(small_config(steps=10, extra=["model.n_layers=2"]), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "config.yaml").read_text() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty and holds no run"):
        train(small_config(steps=10), tmp_path / "other", progress=False)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from iclab.tasks.linreg import LinearRegression

    original = LinearRegression.loss

    def poisoned(self, outputs, batch):
        loss = original(self, outputs, batch)
        return loss * float("nan") if int(batch.extras.get("step", -1)) == 25 else loss

    original_batch = LinearRegression.batch

    def tagged(self, step, *args, **kwargs):
        b = original_batch(self, step, *args, **kwargs)
        b.extras["step"] = step
        return b

    monkeypatch.setattr(LinearRegression, "loss", poisoned)
    monkeypatch.setattr(LinearRegression, "batch", tagged)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 25"):
        train(small_config(steps=40), tmp_path / "r", progress=False)
    tensors, meta = load_tensors(tmp_path / "r" / "checkpoints" / "resume.safetensors")
    assert meta["step"] == 20
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_a_resumed_run_removes_what_a_killed_writer_left(tmp_path):
    train(small_config(steps=10), tmp_path / "r", progress=False)
    stale = tmp_path / "r" / "checkpoints" / ".resume.safetensors.abc123.tmp"  # as atomic_write names its temporaries
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half a checkpoint")
    keep = tmp_path / "r" / "notes.tmp"  # not one of iclab's temporaries
    keep.write_text("mine")
    train(small_config(steps=10), tmp_path / "r", progress=False)
    assert not stale.exists() and keep.exists()


def test_corrupt_and_pickle_checkpoints_are_refused(tmp_path):
    train(small_config(steps=10), tmp_path / "r", progress=False)
    (tmp_path / "r" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(tmp_path / "r")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
        load_tensors(tmp_path / "x.pt")


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "iclab.cli", *args], env


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_training_resumes_to_bitwise_equal_weights(tmp_path, sig):
    """Kill the trainer mid-run (SIGKILL: no chance to clean up; SIGINT: Ctrl-C; SIGTERM: a scheduler), resume, compare."""
    sets = []
    for s in SMALL + ["train.steps=400", "train.checkpoint_every=7", "model.d_model=32"]:
        sets += ["--set", s]
    args = ["train", "--task", "linreg", "--device", "cpu", *sets]
    cmd, env = _cli(*args, "--out", str(tmp_path / "full"), cwd=tmp_path)
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    cmd, env = _cli(*args, "--out", str(tmp_path / "killed"), cwd=tmp_path)
    resume_file = tmp_path / "killed" / "checkpoints" / "resume.safetensors"
    for kill_after in (0.0, 0.15):  # once as soon as a checkpoint exists, once a little later
        stamp = resume_file.stat().st_mtime_ns if resume_file.exists() else None
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:  # wait for a checkpoint of this process
            if resume_file.exists() and resume_file.stat().st_mtime_ns != stamp:
                break
            time.sleep(0.005)
        time.sleep(kill_after)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, "the run finished before it was killed"
        if sig == signal.SIGINT:
            assert proc.returncode == Interrupted.exit_code, err.decode()
        if sig in (signal.SIGINT, signal.SIGTERM):
            assert proc.returncode == 128 + sig, err.decode()
            assert f"stopped by {sig.name} at step ".encode() in err and b"checkpoint saved" in err and b"error" not in err
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run should have been stopped before its end"
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert_bitwise_equal(weights(tmp_path / "full"), weights(tmp_path / "killed"))
    assert not list((tmp_path / "killed").rglob("*.tmp")), "no temporary files may be left behind"
