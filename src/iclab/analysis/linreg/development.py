"""Which reference learner a linear-regression transformer is closest to at each snapshot of its training: the
behavioural side of its development, set beside its LLC curve (Hoogland et al. 2024 follow a linear-regression
transformer from predicting the prior's mean, 0, to in-context regression).

Closeness is Akyürek et al.'s SPD (normalised by d), averaged over held-out prompts and over the prefixes n >= 1
(n = 0 is the same prediction for every learner that starts from w = 0)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from iclab.analysis.linreg.comparison import Learner
from iclab.analysis.linreg.metrics import spd_per_prompt
from iclab.learners import ModelLearner, PriorMean, reference_learners
from iclab.results import Result
from iclab.tasks import LinearRegression


@dataclass(frozen=True)
class LearnerTrajectory(Result):
    """``spd`` [S, L]: the snapshot at ``step`` [S] against each of ``learners`` [L] (normalised SPD, mean over the
    prompts and the prefixes n >= 1)."""

    SCHEMA: ClassVar[int] = 1

    run: str
    step: list[int]
    learners: list[str]
    spd: np.ndarray

    def closest(self) -> list[str]:
        """The closest learner at each snapshot."""
        return [self.learners[int(i)] for i in np.argmin(self.spd, axis=1)]


def development_learners(d: int) -> dict[str, Learner]:
    """The reference learners and the context-free one (the prior's mean) that a snapshot is compared with."""
    return {"prior_mean": PriorMean(), **reference_learners(d)}


def learner_trajectory(path: Path | str, steps: list[int], xs: torch.Tensor, ys: torch.Tensor,
                       learners: dict[str, Learner], device: torch.device | str = "cpu") -> LearnerTrajectory:
    """Each saved snapshot ``steps`` of the linear-regression run at ``path`` against ``learners`` on the held-out
    prompts xs [B, n, d], ys [B, n]."""
    from iclab.runs import load_model
    from iclab.train.rundir import RunDir

    run = RunDir(Path(path))
    config = run.read_config()
    task = LinearRegression(config.task)
    d = xs.shape[-1]
    references = {name: learner.predict(xs, ys) for name, learner in learners.items()}
    table = np.zeros((len(steps), len(learners)))
    for i, step in enumerate(steps):
        preds = ModelLearner(load_model(run, config, step, device)[0], task).predict(xs, ys)
        for j, ref in enumerate(references.values()):
            table[i, j] = float(spd_per_prompt(preds, ref, d)[:, 1:].mean())
    return LearnerTrajectory(str(path), list(steps), list(learners), table)
