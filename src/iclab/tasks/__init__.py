"""Tasks: samplers of prompts whose batches are pure functions of (seed, split, step).

``TASKS`` maps a task name to its config class and task class. A study adds
its own task by registering it here.
"""

from __future__ import annotations

from typing import Any

from iclab.errors import ConfigError
from iclab.tasks.addk import AddKConfig, AddKTask, DigitTokenizer, NumberTokenizer
from iclab.tasks.base import SPLITS, Batch, Split, Task, derive_seed, stream
from iclab.tasks.induction import InductionConfig, InductionTask
from iclab.tasks.linreg import Curriculum, LinearRegression, LinRegConfig

TASKS: dict[str, tuple[type, type]] = {
    "linreg": (LinRegConfig, LinearRegression),
    "induction": (InductionConfig, InductionTask),
    "addk": (AddKConfig, AddKTask),
}


def task_classes(name: str) -> tuple[type, type]:
    """(config class, task class) for a task name; a clear error for an unknown name."""
    if name not in TASKS:
        raise ConfigError(f"task {name!r} is unknown; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def describe(name: str) -> str:
    """A task's one-line description: the first line of its module's docstring."""
    _, task_cls = task_classes(name)
    module = __import__(task_cls.__module__, fromlist=["_"])
    return (module.__doc__ or "").strip().splitlines()[0].rstrip(".")


def make_task(config: Any) -> Task:
    """The task object for a task config."""
    _, task_cls = task_classes(config.name)
    return task_cls(config)


__all__ = [
    "AddKConfig",
    "AddKTask",
    "NumberTokenizer",
    "DigitTokenizer",
    "SPLITS",
    "TASKS",
    "Batch",
    "Curriculum",
    "InductionConfig",
    "InductionTask",
    "LinRegConfig",
    "LinearRegression",
    "Split",
    "Task",
    "derive_seed",
    "describe",
    "make_task",
    "stream",
    "task_classes",
]
