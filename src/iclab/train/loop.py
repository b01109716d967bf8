"""The training loop: resumable, bitwise-reproducible on CPU, atomic on disk.

State after step N (N optimiser steps done) is the model, the AdamW state
and N; batches and learning rates are pure functions of the step, so
restoring those three restores the run exactly. SIGINT (Ctrl-C) and SIGTERM
(what ``timeout`` and cluster schedulers send) are turned into a flag checked
between steps: the run saves a checkpoint at a step boundary and stops, never
mid-update, with exit status 130 or 143.

A run extended to more steps (``train.steps`` raised, nothing else changed)
resumes from its last step; the learning-rate schedule is a function of the
total step count, so the remaining steps follow the new schedule from that
step on (a cosine decay is stretched), and the result differs from a run
started with the larger count.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iclab.config import config_hash
from iclab.errors import CheckpointError, Interrupted, RunDirError, TrainingDiverged
from iclab.io import holding_locks
from iclab.train.memory import check_fits
from iclab.models import Transformer
from iclab.train.rundir import RunDir, identity
from iclab.tasks import Task, make_task
from iclab.train.checkpoint import (
    load_model_tensors,
    load_optimizer_tensors,
    load_tensors,
    model_tensors,
    optimizer_tensors,
    save_tensors,
)
from iclab.train.config import RunConfig, TrainConfig
from iclab.train.progress import Progress
from iclab.train.tensorboard import TensorBoard
from iclab.train.schedule import learning_rate, snapshot_steps

FORMAT = "iclab-checkpoint-1"


@dataclass
class TrainResult:
    model: Transformer
    run: RunDir
    summary: dict[str, Any]
    resumed_from: int


def build_model(config: RunConfig, device: torch.device | str = "cpu") -> Transformer:
    """The model at initialisation (seeded by ``config.seed``)."""
    return Transformer(config.model, generator=torch.Generator().manual_seed(config.seed)).to(device)


def build_optimizer(model: Transformer, config: RunConfig) -> torch.optim.AdamW:
    cfg = config.train
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
    )


def step_precision(cfg: TrainConfig, device: torch.device | str) -> str:
    """The precision a training step on ``device`` runs in: ``cfg.precision``, with ``auto`` resolved by whether the
    device multiplies bfloat16 natively."""
    from iclab.device import fast_bf16

    if cfg.precision == "auto":
        return "bfloat16" if fast_bf16(device) else "float32"
    return cfg.precision


def autocast(cfg: TrainConfig, device: torch.device | str) -> torch.autocast:
    """The autocast context of a training step: bfloat16 where :func:`step_precision` says so, else a no-op."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=step_precision(cfg, device) == "bfloat16")


@torch.no_grad()
def evaluate(model: Transformer, task: Task, config: RunConfig, device: torch.device | str) -> dict[str, float]:
    """Mean of the task's metrics over ``eval_batches`` batches of the eval split."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    n = config.train.eval_batches
    for i in range(n):
        batch = task.batch(i, config.train.batch_size, "eval", device)
        for key, value in task.metrics(model(batch.inputs), batch).items():
            totals[key] = totals.get(key, 0.0) + value / n
    model.train(was_training)
    return totals


class StopSignals:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag for the duration of training (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.raised: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.raised is not None:  # asked twice: stop now; the last saved checkpoint is what a re-run resumes from
            raise Interrupted(f"{name} again, at once, mid-step; what was saved before is kept. Re-run the same "
                              "command to resume from the last checkpoint (or start, if none was saved yet)", signum)
        self.raised = signum
        print(f"{name}: stopping after this step and saving a checkpoint (send it again to stop at once)", file=sys.stderr,
              flush=True)

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _save_resume(run: RunDir, model, optimizer, step: int, config: RunConfig, elapsed: float) -> None:
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    tensors.update(optimizer_tensors(model, optimizer))
    save_resume_tensors(run, tensors, step, config, elapsed)


def save_resume_tensors(run: RunDir, tensors: dict[str, torch.Tensor], step: int, config: RunConfig, elapsed: float) -> None:
    """The resume checkpoint: ``model.<name>`` and ``optim.<name>.<field>`` tensors after ``step`` steps."""
    meta = {"format": FORMAT, "step": step, "config_hash": config_hash(config), "identity_hash": config_hash(identity(config)),
            "elapsed_s": elapsed}
    save_tensors(run.resume_file, tensors, meta)


def _last_good_snapshot(run: RunDir, device) -> tuple[int, dict[str, torch.Tensor]] | None:
    """The latest weight snapshot that loads, with its step."""
    for step in reversed(run.snapshot_steps()):
        try:
            return step, load_tensors(run.snapshot_file(step), device)[0]
        except CheckpointError:
            continue
    return None


def _load_resume(run: RunDir, model, optimizer, config: RunConfig, device) -> tuple[int, float]:
    try:
        tensors, meta = load_tensors(run.resume_file, device)
    except CheckpointError as err:
        good = _last_good_snapshot(run, device)
        fallback = (f"the last good weight snapshot is step {good[0]} ({run.snapshot_file(good[0])}): re-run with --recover "
                    "to continue from it (weights only; AdamW's moments restart, so the run is no longer bitwise "
                    "reproducible), or" if good else "there is no readable weight snapshot to fall back to:")
        raise CheckpointError(f"{err}. To recover: {fallback} delete {run.path} to start over") from None
    same = meta.get("config_hash") == config_hash(config) or meta.get("identity_hash") == config_hash(identity(config))
    if meta.get("format") != FORMAT or not same:
        raise RunDirError(f"{run.resume_file}: checkpoint does not belong to this run's config; delete {run.path} to start over")
    load_model_tensors(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, run.resume_file)
    load_optimizer_tensors(model, optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")})
    return int(meta["step"]), float(meta.get("elapsed_s", 0.0))


def _append_metrics(run: RunDir, row: dict[str, Any]) -> None:
    with open(run.metrics_file, "a") as f:
        f.write(json.dumps(row) + "\n")


@holding_locks()  # the run folder is this process's while it trains (a second writer is refused)
def train(
    config: RunConfig,
    out: Path | str,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
    label: str | None = None,
    recover: bool = False,
) -> TrainResult:
    """Train ``config`` into run directory ``out``, resuming if it holds an unfinished run.

    ``progress``: live bar (True), log lines (False), or decide by terminal (None).
    Raises :class:`TrainingDiverged` on a non-finite loss (the last good
    checkpoint is kept) and :class:`Interrupted` after Ctrl-C or SIGTERM (a checkpoint is saved).
    ``recover``: if the resume checkpoint is unreadable, continue from the last
    readable weight snapshot with a fresh optimiser state (the error says so).
    """
    begun = begin(config, out, device, recover)
    if isinstance(begun, TrainResult):
        return begun
    run, model, optimizer, start, elapsed = begun.run, begun.model, begun.optimizer, begun.start, begun.elapsed
    task = make_task(config.task)
    cfg = config.train
    snaps = set(snapshot_steps(cfg.steps, cfg.snapshots))

    bar = Progress(cfg.steps, start, label or f"{config.task.name}", live=progress)
    if start:
        bar.message(f"resuming {run.path} from step {start}")
    t_start = time.perf_counter() - elapsed
    model.train()
    forward = torch.compile(model) if cfg.compile else model  # shares the parameters; checkpoints save ``model``
    loss_value = float("nan")
    step = start
    try:
        with StopSignals() as stop, TensorBoard(run, cfg.tensorboard) as board:
            while step < cfg.steps:
                batch = task.batch(step, cfg.batch_size, "train", device)
                lr = learning_rate(cfg, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast(cfg, device):  # a task whose loss needs the model itself (more passes, hooks) gives model_loss
                    loss = task.model_loss(model, forward, batch) if hasattr(task, "model_loss") else task.loss(forward(batch.inputs), batch)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    run.write_summary({"status": "diverged", "diverged_at_step": step, "last_good_step": start})
                    raise TrainingDiverged(
                        f"loss became {loss_value} at step {step}; stopped, the last good checkpoint "
                        f"({run.resume_file if run.resume_file.is_file() else 'none yet'}) is kept. Try a lower train.lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = (
                    float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)) if cfg.grad_clip else None
                )
                optimizer.step()
                step += 1
                now = time.perf_counter() - t_start
                if step % cfg.log_every == 0 or step == cfg.steps:
                    row = {"step": step, "split": "train", "loss": loss_value, "lr": lr, "time_s": round(now, 3)}
                    if grad_norm is not None:
                        row["grad_norm"] = grad_norm
                    _append_metrics(run, row)
                    board.log(row)
                    bar.update(step, loss_value)
                if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                    row = {"step": step, "split": "eval", **evaluate(model, task, config, device)}
                    _append_metrics(run, row)
                    board.log(row)
                if step in snaps or step % cfg.checkpoint_every == 0:
                    save_tensors(run.snapshot_file(step), model_tensors(model), {"step": step})
                if step % cfg.checkpoint_every == 0 or stop.raised or step == cfg.steps:
                    _save_resume(run, model, optimizer, step, config, now)
                if stop.raised and step < cfg.steps:
                    name = signal.Signals(stop.raised).name
                    raise Interrupted(f"{name} at step {step}; checkpoint saved. Re-run the same command to resume", stop.raised)
    finally:
        bar.close()

    summary = finish_run(run, config, model_tensors(model), loss_value, time.perf_counter() - t_start, device)
    return TrainResult(model, run, summary, resumed_from=start)


@dataclass
class Begun:
    """A run ready to take its next step: its folder, model and optimiser restored, ``start`` steps done."""

    run: RunDir
    model: Transformer
    optimizer: torch.optim.AdamW
    start: int
    elapsed: float


def begin(config: RunConfig, out: Path | str, device: torch.device | str, recover: bool = False) -> Begun | TrainResult:
    """Claim the run folder ``out`` for ``config`` and restore where it stands: a :class:`TrainResult` when it is
    complete, else a :class:`Begun` (from its resume checkpoint, its last good snapshot with ``recover``, its
    ``init_weights`` or the initialisation; metrics rows after that step dropped, the step-0 snapshot saved).
    Raises :class:`TrainingDiverged` for a run that diverged before."""
    run = RunDir(Path(out))
    check_fits(config, device)  # before the folder is touched
    run.prepare(config)
    model = build_model(config, device)
    summary = run.read_summary()
    if summary is not None and summary.get("status") == "complete":
        tensors, _ = load_tensors(run.final_model, device)
        load_model_tensors(model, tensors, run.final_model)
        return TrainResult(model, run, summary, resumed_from=config.train.steps)
    if summary is not None and summary.get("status") == "diverged":
        raise TrainingDiverged(f"{run.path}: this run diverged at step {summary.get('diverged_at_step')}; change the config (e.g. a lower train.lr)")
    optimizer = build_optimizer(model, config)
    cfg = config.train
    start, elapsed = (0, 0.0)
    if run.resume_file.is_file():
        try:
            start, elapsed = _load_resume(run, model, optimizer, config, device)
        except CheckpointError:
            good = _last_good_snapshot(run, device) if recover else None
            if good is None:
                raise
            start, elapsed = good[0], 0.0
            load_model_tensors(model, good[1], run.snapshot_file(start))
    elif cfg.init_weights:
        source = run.path / cfg.init_weights  # a relative path is the run directory's; an absolute one stays
        load_model_tensors(model, load_tensors(source, device)[0], source)
    run.truncate_metrics(start)
    if start == 0 and 0 in snapshot_steps(cfg.steps, cfg.snapshots):
        save_tensors(run.snapshot_file(0), model_tensors(model), {"step": 0})
    return Begun(run, model, optimizer, start, elapsed)


def finish_run(run: RunDir, config: RunConfig, final: dict[str, torch.Tensor], loss_value: float, wall_time_s: float,
               device: torch.device | str, **more: Any) -> dict[str, Any]:
    """Save the final weights and write the complete run's summary (``more``: extra summary fields); returns it."""
    rows = run.read_metrics()
    final_eval = next((r for r in reversed(rows) if r.get("split") == "eval"), {})
    final_train = next((r for r in reversed(rows) if r.get("split") == "train"), {})
    save_tensors(run.final_model, final, {"step": config.train.steps})
    summary = {
        "status": "complete",
        "task": config.task.name,
        "steps": config.train.steps,
        "final_loss": final_train.get("loss", loss_value),
        "final_eval": {k: v for k, v in final_eval.items() if k not in ("step", "split")},
        "n_params": sum(v.numel() for v in final.values()),
        "wall_time_s": round(wall_time_s, 3),
        "device": str(device),
        "precision": step_precision(config.train, device),
        **more,
    }
    run.write_summary(summary)
    return summary
