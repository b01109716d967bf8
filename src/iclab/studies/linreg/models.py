"""The linreg study's models: one per depth (noiseless), the deepest fine-tuned on each noise of the grid until it
is near the Bayes-optimal ridge, and the probed model with its control (one fixed task); every one an ordinary
resumable iclab run under ``out/runs/``. Also the held-out prompts every part evaluates on."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from iclab.analysis.linreg.comparison import bayes_excess
from iclab.learners.model import ModelLearner
from iclab.models import ModelConfig
from iclab.runs import RunDir
from iclab.studies.common import generator, seeded
from iclab.studies.linreg.settings import LinRegStudySettings, noise_ratio
from iclab.tasks import LinearRegression, LinRegConfig
from iclab.train import RunConfig, TrainConfig, train


def run_config(cfg: LinRegStudySettings, n_layers: int, steps: int, d: int, n_points: int, noise: tuple[float, float] = (0.0, 1.0),
                fixed_w: bool = False, init_weights: str | None = None, curriculum: bool = True, snapshots: int = 0) -> RunConfig:
    r = cfg.recipe
    task = LinRegConfig(d=d, n_points=n_points, sigma=noise[0], tau=noise[1], fixed_w=fixed_w, encoding=r.encoding,
                        curriculum=r.curriculum if curriculum else None)
    io = task.model_io()
    model = ModelConfig(n_layers=n_layers, d_model=r.d_model, n_heads=r.n_heads, normalization=r.normalization, init=r.init, **io)
    train_cfg = TrainConfig.for_study(steps, r.batch_size, r.lr, r.warmup_steps, init_weights=init_weights, snapshots=snapshots,
                                      precision=r.precision)
    if init_weights is not None:  # fine-tuning in rounds: a constant rate, so that raising the steps extends the run
        n = cfg.noise_training
        train_cfg = replace(train_cfg, lr=r.lr * n.lr_factor, schedule="constant", warmup_steps=0,
                            checkpoint_every=n.round_steps, log_every=max(10, n.round_steps // 30))
    return RunConfig(task=seeded(task, cfg.seed), model=model, train=train_cfg, seed=cfg.seed)


def train_models(cfg: LinRegStudySettings, out: Path, device: torch.device, log: Callable[[str], None]) -> dict[str, RunDir]:
    """Train (or resume, or reuse) every model of the study; returns run directories by name."""
    runs: dict[str, RunDir] = {}

    def fit(name: str, config: RunConfig) -> None:
        log(f"  model {name}: {config.model.n_layers} layers, {config.train.steps} steps")
        result = train(config, out / "runs" / name, device, progress=False, label=f"linreg/{name}")
        runs[name] = result.run

    for name, config in planned_runs(cfg):
        fit(name, config)
    for pair in cfg.noise_grid:
        if pair[0] > 0:
            _fit_to_bayes(cfg, pair, runs, fit, out, log)
    return runs


def planned_runs(cfg: LinRegStudySettings) -> list[tuple[str, RunConfig]]:
    """The runs whose configs are known before any trains (every one but the noise fine-tunings, whose length
    depends on how close each round comes to Bayes): one per depth, the probing model and its control."""
    runs = [(f"L{depth}", run_config(cfg, depth, steps, cfg.d, cfg.n_points,  # the deepest saves its LLC snapshots
                                     snapshots=cfg.llc.snapshots if depth == max(cfg.depths) else 0))
            for depth, steps in zip(cfg.depths, cfg.steps)]
    p = cfg.probing
    runs.append(("probe", run_config(cfg, p.n_layers, p.steps, p.d, p.n_points, curriculum=False)))
    runs.append(("control", run_config(cfg, p.n_layers, p.control_steps or p.steps, p.d, p.n_points, fixed_w=True,
                                       curriculum=False)))
    return runs


def _fit_to_bayes(cfg: LinRegStudySettings, pair: tuple[float, float], runs: dict[str, RunDir], fit, out: Path,
                  log: Callable[[str], None]) -> None:
    """Fine-tune the deepest model on noise ``pair`` in rounds until it is within the Bayes margin (or out of steps)."""
    n, name = cfg.noise_training, noise_name(pair)
    on_disk = RunDir(out / "runs" / name)
    # relative to the noise run's folder, so the study folder can be moved
    start = os.path.relpath(runs[f"L{max(cfg.depths)}"].final_model, on_disk.path)
    steps = max(n.round_steps, on_disk.read_config().train.steps if on_disk.config_file.is_file() else 0)
    while True:
        fit(name, run_config(cfg, max(cfg.depths), steps, cfg.d, cfg.n_points, noise=pair, init_weights=start, curriculum=False))
        xs, ys, _, _ = eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "bayes", noise=pair)
        excess = bayes_excess(model_learner(runs[name]), xs, ys, noise_ratio(pair))
        log(f"    {name}: error {excess:+.1%} relative to the Bayes-optimal ridge after {steps} steps")
        if excess <= n.bayes_margin or steps >= n.max_steps:
            return
        steps = min(steps + n.round_steps, n.max_steps)


def noise_name(pair: tuple[float, float]) -> str:
    return f"L_noise_s{pair[0]:g}_t{pair[1]:g}"


def eval_data(cfg: LinRegStudySettings, d: int, n: int, count: int, part: str, noise: tuple[float, float] = (0.0, 1.0)):
    """Held-out prompts (xs [count, n, d], ys [count, n], ws) of the study's seed, the same for every part, and the
    part's own generator."""
    task = LinearRegression(LinRegConfig(d=d, n_points=n, sigma=noise[0], tau=noise[1], data_seed=cfg.seed + 101,
                                         task_seed=cfg.seed + 102, noise_seed=cfg.seed + 103))
    xs, ys, ws = task.sample(0, count, "eval")
    g = generator(cfg.seed, part)
    return xs, ys, ws, g


def model_learner(run: RunDir) -> ModelLearner:
    """A trained run as a learner answering ``predict(xs, ys)``."""
    from iclab.runs import load_run

    loaded = load_run(run.path)
    return ModelLearner(loaded.model, LinearRegression(loaded.config.task))
