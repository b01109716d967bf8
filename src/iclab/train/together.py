"""Training the seeds of one recipe together: one batched model, one optimiser step for every seed.

:func:`train_seeds` takes the configs of one recipe at several seeds (equal but for their seeds) and their
run folders, and trains them as one :class:`~iclab.models.stacked.StackedTransformer`: each seed keeps its
own initialisation and its own data stream (its task, seeded by its config), its batches padded on the right
to a common length (causal attention: a position never sees what follows it, and the loss reads each
seed's own positions only), the sum of the seeds' losses differentiated once, each seed's gradient clipped
by its own norm, and one AdamW step on the stacked parameters (AdamW is elementwise, so that step is every
seed's own). Seed s of a run trained together therefore equals a lone :func:`~iclab.train.loop.train` at
seed s up to float rounding (tests/test_train_together.py).

Each seed's folder is an ordinary run folder, written as a lone run writes it (metrics, snapshots, resume
checkpoints, final weights, summary), so each resumes, extends and is read alone; its summary adds
``trained_with_seeds`` and counts its share of the common wall time. Resuming a run trained together is
bitwise on CPU. Runs that cannot share a step train alone: a compiled run, a task whose loss needs hooks
(``loss_needs_model``), seeds standing at different steps.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from iclab.config import config_hash
from iclab.errors import Interrupted, TrainingDiverged
from iclab.io import holding_locks
from iclab.models.stacked import StackedTransformer
from iclab.tasks import Batch, Task, make_task
from iclab.tasks.base import SEED_FIELDS
from iclab.train.config import RunConfig
from iclab.train.loop import (
    Begun,
    StopSignals,
    TrainResult,
    _append_metrics,
    autocast,
    begin,
    finish_run,
    save_resume_tensors,
    train,
)
from iclab.train.progress import Progress
from iclab.train.rundir import identity
from iclab.train.schedule import learning_rate, snapshot_steps
from iclab.train.checkpoint import save_tensors


def recipe_of(config: RunConfig) -> str:
    """The hash of a config without its seeds (the run's and its task's): configs with one recipe train together."""
    data = identity(config)
    data.pop("seed", None)
    data["task"] = {k: v for k, v in data["task"].items() if k not in SEED_FIELDS}
    return config_hash(data)


def can_train_together(configs: Sequence[RunConfig]) -> str | None:
    """Why ``configs`` cannot train as one batched model, or None when they can."""
    if len(configs) < 2:
        return "one seed"
    if len({recipe_of(c) for c in configs}) > 1:
        return "their configs differ in more than the seed"
    if configs[0].train.compile:
        return "train.compile is set (a compiled step is per model)"
    if configs[0].train.tensorboard:
        return "train.tensorboard is set (its writer is per run)"
    if getattr(make_task(configs[0].task), "loss_needs_model", False):
        return "the task's loss needs the model itself (hooks)"
    return None


def train_seeds(configs: Sequence[RunConfig], outs: Sequence[Path | str], device: torch.device | str = "cpu",
                label: str | None = None, log=None) -> list[TrainResult]:
    """Train each ``configs[i]`` into run folder ``outs[i]``: together as one batched model where they can, each alone
    (:func:`~iclab.train.loop.train`) where not. Finished runs are read, unfinished ones resumed."""
    if len(configs) != len(outs):
        raise ValueError("one run folder per config")
    why = can_train_together(configs)
    if why is not None:
        if log is not None and len(configs) > 1:
            log(f"    seeds trained one after another: {why}")
        return [train(c, o, device, progress=False, label=label) for c, o in zip(configs, outs)]
    return _train_together(list(configs), [Path(o) for o in outs], device, label)


@holding_locks()
def _train_together(configs: list[RunConfig], outs: list[Path], device, label: str | None) -> list[TrainResult]:
    results: dict[int, TrainResult] = {}
    begun: dict[int, Begun] = {}
    for i, (config, out) in enumerate(zip(configs, outs)):
        b = begin(config, out, device)
        if isinstance(b, TrainResult):
            results[i] = b
        else:
            begun[i] = b
    by_start: dict[int, list[int]] = {}
    for i, b in begun.items():
        by_start.setdefault(b.start, []).append(i)
    for start, group in sorted(by_start.items()):
        if len(group) == 1:  # alone at this step: the lone loop continues it from where it stands
            i = group[0]
            results[i] = train(configs[i], outs[i], device, progress=False, label=label)
            continue
        for i, result in zip(group, _steps([configs[i] for i in group], [begun[i] for i in group], device, label)):
            results[i] = result
    return [results[i] for i in range(len(configs))]


@dataclass
class _Seeds:
    """The seeds of one batched run: their configs, tasks and folders, the stacked model and its optimiser."""

    configs: list[RunConfig]
    tasks: list[Task]
    begun: list[Begun]
    model: StackedTransformer
    optimizer: torch.optim.AdamW

    def seed_tensors(self, s: int, with_optimizer: bool) -> dict[str, torch.Tensor]:
        """Seed s's model tensors (``model.``-prefixed with the optimiser's, for a resume checkpoint)."""
        model = self.model.seed_state(s)
        if not with_optimizer:
            return model
        tensors = {f"model.{k}": v for k, v in model.items()}
        for name, p in self.model.named_stacked():
            for key, value in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    tensors[f"optim.{name}.{key}"] = value if key == "step" else value[s]
        return tensors


def _stack(configs: list[RunConfig], begun: list[Begun], device) -> _Seeds:
    """The seeds' restored models and optimiser states as one stacked model and one AdamW."""
    model = StackedTransformer([b.model for b in begun]).to(device)
    cfg = configs[0].train
    decay = [p for p in model.stacked if p.dim() >= 3]  # a lone weight matrix (dim >= 2) and its seed axis
    no_decay = [p for p in model.stacked if p.dim() < 3]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    for name, p in model.named_stacked():
        lone = [dict(b.model.named_parameters())[name] for b in begun]
        states = [b.optimizer.state.get(q, {}) for b, q in zip(begun, lone)]
        if not all(states):
            continue
        state = optimizer.state[p]
        for key in states[0]:
            if key == "step":
                state[key] = states[0][key].clone()  # the same step count at every seed
            else:
                state[key] = torch.stack([st[key] for st in states]).to(p.device)
    return _Seeds(configs, [make_task(c.task) for c in configs], begun, model, optimizer)


def _inputs(batches: list[Batch]) -> torch.Tensor:
    """The seeds' inputs [N, B, T(, I)], each padded on the right to the longest (causal: nothing earlier sees it)."""
    T = max(b.inputs.shape[1] for b in batches)
    padded = []
    for b in batches:
        x = b.inputs
        if x.shape[1] < T:
            pad = x.new_zeros((x.shape[0], T - x.shape[1], *x.shape[2:]))
            x = torch.cat([x, pad], dim=1)
        padded.append(x)
    return torch.stack(padded)


def _per_seed(outputs: torch.Tensor, batches: list[Batch]) -> list[torch.Tensor]:
    """Outputs [N, B, T, ...] -> each seed's [B, T_s, ...] (its own positions). ``unbind``, not indexing: its
    gradient is one stack, where each index's would be a zero tensor of the whole output."""
    return [out if out.shape[1] == b.inputs.shape[1] else out[:, : b.inputs.shape[1]]
            for out, b in zip(outputs.unbind(0), batches)]


def _clip(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip each seed's gradient by its own total norm, as ``clip_grad_norm_`` does for a lone model; the norms [N]."""
    norms = torch.stack([p.grad.flatten(1).norm(dim=1) for p in params]).norm(dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.view(-1, *[1] * (p.dim() - 1)))
    return norms


@torch.no_grad()
def _evaluate(seeds: _Seeds, device) -> list[dict[str, float]]:
    """Each seed's task metrics over ``eval_batches`` batches of its eval split (as :func:`~iclab.train.loop.evaluate`)."""
    cfg = seeds.configs[0].train
    totals: list[dict[str, float]] = [{} for _ in seeds.tasks]
    for i in range(cfg.eval_batches):
        batches = [t.batch(i, cfg.batch_size, "eval", device) for t in seeds.tasks]
        outputs = _per_seed(seeds.model(_inputs(batches)), batches)
        for s, (task, out, batch) in enumerate(zip(seeds.tasks, outputs, batches)):
            for key, value in task.metrics(out, batch).items():
                totals[s][key] = totals[s].get(key, 0.0) + value / cfg.eval_batches
    return totals


def _steps(configs: list[RunConfig], begun: list[Begun], device, label: str | None) -> list[TrainResult]:
    seeds = _stack(configs, begun, device)
    cfg = configs[0].train
    runs = [b.run for b in begun]
    start = begun[0].start
    snaps = set(snapshot_steps(cfg.steps, cfg.snapshots))
    params = list(seeds.model.stacked)
    n = len(configs)
    bar = Progress(cfg.steps, start, f"{label or configs[0].task.name} ({n} seeds together)", live=False)
    t_start = time.perf_counter() - sum(b.elapsed for b in begun)  # each seed records its share of the common time
    losses = [float("nan")] * n
    step = start
    try:
        with StopSignals() as stop:
            while step < cfg.steps:
                batches = [t.batch(step, cfg.batch_size, "train", device) for t in seeds.tasks]
                lr = learning_rate(cfg, step)
                for group in seeds.optimizer.param_groups:
                    group["lr"] = lr
                with autocast(cfg, device):
                    outputs = _per_seed(seeds.model(_inputs(batches)), batches)
                    per_seed = [t.loss(out, b) for t, out, b in zip(seeds.tasks, outputs, batches)]
                loss = torch.stack(per_seed).float()
                losses = loss.detach().tolist()
                bad = [s for s, v in enumerate(losses) if not math.isfinite(v)]
                if bad:
                    s = bad[0]
                    runs[s].write_summary({"status": "diverged", "diverged_at_step": step, "last_good_step": start})
                    now = time.perf_counter() - t_start
                    for other in range(n):  # the others keep what they reached, resumable
                        if other != s:
                            save_resume_tensors(runs[other], seeds.seed_tensors(other, True), step, configs[other], now / n)
                    raise TrainingDiverged(f"loss became {losses[s]} at step {step} of seed {configs[s].seed} ({runs[s].path}); "
                                           "stopped, the last good checkpoint is kept. Try a lower train.lr")
                seeds.optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                norms = _clip(params, cfg.grad_clip).tolist() if cfg.grad_clip else None
                seeds.optimizer.step()
                step += 1
                now = time.perf_counter() - t_start
                share = now / n
                if step % cfg.log_every == 0 or step == cfg.steps:
                    for s in range(n):
                        row = {"step": step, "split": "train", "loss": losses[s], "lr": lr, "time_s": round(share, 3)}
                        if norms is not None:
                            row["grad_norm"] = norms[s]
                        _append_metrics(runs[s], row)
                    bar.update(step, sum(losses) / n)
                if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                    for s, metrics in enumerate(_evaluate(seeds, device)):
                        _append_metrics(runs[s], {"step": step, "split": "eval", **metrics})
                if step in snaps or step % cfg.checkpoint_every == 0:
                    for s in range(n):
                        save_tensors(runs[s].snapshot_file(step), seeds.seed_tensors(s, False), {"step": step})
                if step % cfg.checkpoint_every == 0 or stop.raised or step == cfg.steps:
                    for s in range(n):
                        save_resume_tensors(runs[s], seeds.seed_tensors(s, True), step, configs[s], share)
                if stop.raised and step < cfg.steps:
                    name = signal.Signals(stop.raised).name
                    raise Interrupted(f"{name} at step {step}; checkpoints saved. Re-run the same command to resume", stop.raised)
    finally:
        bar.close()
    wall = (time.perf_counter() - t_start) / n
    seed_list = [c.seed for c in configs]
    results = []
    for s, (config, b) in enumerate(zip(configs, begun)):
        final = {k: v.clone() for k, v in seeds.model.seed_state(s).items()}
        summary = finish_run(b.run, config, final, losses[s], wall, device, trained_with_seeds=seed_list)
        b.model.load_state_dict(final)
        results.append(TrainResult(b.model, b.run, summary, resumed_from=start))
    return results

