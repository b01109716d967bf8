"""Task diversity in a softmax transformer (Raventós et al. 2023): the bridge from spinglass to linreg.

For each task-pool size M, a transformer is trained on in-context regression
whose task vectors come from a fixed pool of M Gaussian vectors, then tested
on fresh Gaussian tasks. It is compared with the two Bayes predictors: ridge
(optimal for the Gaussian prior, generalises) and the discrete-pool posterior
mean dMMSE (optimal for the training pool, does not). Below a threshold M the
model should track dMMSE, above it ridge, as in the spin glass's P >= D(D+1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from iclab.config import require_positive
from iclab.learners import Bayes, DiscreteMMSE, ModelLearner
from iclab.models import ModelConfig
from iclab.results import Result
from iclab.runs import load_run
from iclab.tasks import LinearRegression, LinRegConfig
from iclab.tasks.base import seeded
from iclab.train import RunConfig, TrainConfig, train


@dataclass(frozen=True)
class TaskDiversitySettings:
    d: int = 8
    n_points: int = 17
    sigma: float = 0.25
    pool_sizes: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096)
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    eval_prompts: int = 1000

    def __post_init__(self) -> None:
        require_positive(self, "d", "n_points", "pool_sizes", "n_layers", "d_model", "n_heads", "steps", "batch_size", "lr", "eval_prompts")


def _config(b: TaskDiversitySettings, M: int, seed: int) -> RunConfig:
    task = LinRegConfig(d=b.d, n_points=b.n_points, sigma=b.sigma, task_pool=M, eval_tasks="gaussian", encoding="akyurek")
    model = ModelConfig(n_layers=b.n_layers, d_model=b.d_model, n_heads=b.n_heads, normalization="none", **task.model_io())
    train_cfg = TrainConfig.for_study(b.steps, b.batch_size, b.lr, warmup_steps=100)
    return RunConfig(task=seeded(task, seed), model=model, train=train_cfg, seed=seed)


@dataclass(frozen=True)
class PoolRow:
    """One pool size M: test error (per dimension) of the model, ridge and dMMSE on fresh Gaussian tasks, the model's
    SPD to ridge and to dMMSE, and which of the two it is closer to."""

    M: int
    error: dict[str, float]
    spd: dict[str, float]
    closer_to: str


@dataclass(frozen=True)
class TaskDiversity(Result):
    rows: list[PoolRow]


def task_diversity(b: TaskDiversitySettings, out: Path, seed: int, device: torch.device, log: Callable[[str], None]) -> TaskDiversity:
    """Per pool size M: test error on Gaussian tasks of the model, ridge (Bayes) and dMMSE, and the model's SPD to each."""
    rows = []
    for M in b.pool_sizes:
        log(f"  task diversity: training on a pool of M={M} tasks")
        config = _config(b, M, seed)
        train(config, out / "runs" / f"task_diversity_M{M}", device, progress=False, label=f"task_diversity/M{M}")
        run = load_run(out / "runs" / f"task_diversity_M{M}")
        task = LinearRegression(config.task)
        xs, ys, _ = task.sample(0, b.eval_prompts, "eval")  # fresh Gaussian tasks (eval_tasks="gaussian")
        preds = {
            "model": ModelLearner(run.model, task).predict(xs, ys),
            "ridge": Bayes(b.sigma, 1.0).predict(xs, ys),
            "dmmse": DiscreteMMSE(task.pool(), b.sigma).predict(xs, ys),
        }
        err = {k: float((p - ys).pow(2).mean() / b.d) for k, p in preds.items()}
        spd = {k: float((preds["model"] - preds[k]).pow(2).mean() / b.d) for k in ("ridge", "dmmse")}
        rows.append(PoolRow(M, err, spd, min(spd, key=spd.get)))
    return TaskDiversity(rows)
