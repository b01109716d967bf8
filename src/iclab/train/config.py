"""Run configs: what to train (task, model) and how (optimiser, schedule, checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from iclab.config import build, parse_override, require, section, set_path, to_dict, unknown_key_message
from iclab.errors import ConfigError
from iclab.models.config import ModelConfig
from iclab.tasks import task_classes


# What a training step runs in (``TrainConfig.precision``; every study recipe's ``precision`` takes the same values).
Precision = Literal["float32", "bfloat16", "auto"]


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warm-up then cosine (or constant) learning rate.

    ``checkpoint_every``: steps between resumable checkpoints (model + optimiser).
    ``snapshots``: number of log-spaced weight snapshots (for phase-change
    analyses); 0 for none. ``eval_every``: steps between evaluations on the
    eval split (0: only at the end). ``init_weights``: a safetensors file of
    weights of the same model to start from instead of a random init
    (fine-tuning); it is part of the run's identity. A relative path is read
    relative to the run directory (so a folder of runs that start from each
    other can be moved); ``iclab train --set train.init_weights=PATH`` makes a
    path given on the command line absolute first. ``tensorboard``: also
    log the metrics as TensorBoard event files in ``DIR/tensorboard/``.
    ``compile``: run the training forward and backward through ``torch.compile``
    (inductor; on CPU it needs a C++ compiler). Off by default: a quick run's few thousand
    steps do not win the compile time back (docs/scaling.md, Training speed, has the
    measurement). A compiled run resumes bitwise-identically to its own rerun;
    compiled and eager runs differ in the last bits, so the setting is part of the run.
    ``precision``: ``float32``, or ``bfloat16``: the training forward pass and loss run under
    ``torch.autocast`` to bfloat16 (the weights, their gradients and AdamW's state stay float32; evaluation,
    snapshots and every analysis read the float32 weights), or ``auto``: bfloat16 where the device multiplies
    bfloat16 natively (:func:`iclab.device.fast_bf16`), float32 elsewhere, where emulated bfloat16 products
    are several times slower. It pays where matrix products of some width dominate the step (docs/scaling.md,
    "bfloat16 training"). Part of the run; the summary records the precision the steps ran in; a bfloat16 run
    resumes bitwise too.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float | None = 1.0
    checkpoint_every: int = 500
    snapshots: int = 0
    log_every: int = 25
    eval_every: int = 0
    eval_batches: int = 4
    init_weights: str | None = None
    tensorboard: bool = False
    compile: bool = False
    precision: Precision = "float32"

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", f"must be at least 1, got {self.steps}")
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must lie in [0, 1], got {self.min_lr_ratio}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas must lie in [0, 1)")
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be positive or null")
        require(self.checkpoint_every >= 1, "checkpoint_every", f"must be at least 1, got {self.checkpoint_every}")
        require(self.snapshots >= 0, "snapshots", f"must be >= 0, got {self.snapshots}")
        require(self.log_every >= 1, "log_every", f"must be at least 1, got {self.log_every}")
        require(self.eval_every >= 0, "eval_every", f"must be >= 0, got {self.eval_every}")
        require(self.eval_batches >= 1, "eval_batches", f"must be at least 1, got {self.eval_batches}")

    @classmethod
    def for_study(cls, steps: int, batch_size: int, lr: float, warmup_steps: int, log_rows: int = 100, log_floor: int = 10,
                  **more) -> "TrainConfig":
        """The one rule by which a study turns its recipe into a training config: warm-up at most a fifth of the
        run, a resumable checkpoint every fifth (at least 100 steps apart), about ``log_rows`` metric rows (at
        least ``log_floor`` steps apart); ``more``: any other field."""
        return cls(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(warmup_steps, steps // 5),
                   checkpoint_every=max(100, steps // 5), log_every=max(log_floor, steps // log_rows), **more)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run. Saved as config.yaml in the run directory.

    ``task`` is the config of a registered task (its ``name`` field picks the
    class); ``seed`` initialises the model (data seeds live in the task).
    """

    task: Any
    model: ModelConfig
    train: TrainConfig
    seed: int = 0

    def __post_init__(self) -> None:
        for key, needed in self.task.model_io().items():
            have = getattr(self.model, key)
            if key == "n_ctx":
                require(have >= needed, "model.n_ctx", f"the task needs at least {needed} positions, got {have}")
            else:
                require(have == needed, f"model.{key}", f"the task {self.task.name!r} needs {needed!r}, got {have!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Build from plain data (YAML); model fields the task fixes are filled in."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping, got {data!r}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in allowed:
                raise ConfigError(unknown_key_message(str(key), allowed, ""))
        task_data = section(data, "task")
        if "name" not in task_data:
            raise ConfigError("task.name: required key is missing (e.g. task.name=linreg)")
        task_cfg_cls, _ = task_classes(task_data["name"])
        task = build(task_cfg_cls, task_data, "task")
        model_data = section(data, "model")
        for key, needed in task.model_io().items():
            model_data.setdefault(key, needed)
        return build(
            cls,
            {
                "task": task,
                "model": build(ModelConfig, model_data, "model"),
                "train": build(TrainConfig, section(data, "train"), "train"),
                "seed": 0 if data.get("seed") is None else data["seed"],  # null, like an empty section: the default
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def default_config(task_name: str) -> RunConfig:
    """The default run for a task: its default config and a small model."""
    return RunConfig.from_dict({"task": {"name": task_name}})


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """``--set key.sub=value`` overrides on a run config, re-validated.

    Model fields that were derived from the task (``d_input`` for linreg, ...)
    follow the task when it changes, unless an override sets them explicitly.
    """
    data = config.to_dict()
    for key, derived in config.task.model_io().items():
        if data["model"].get(key) == derived:
            del data["model"][key]
    for text in overrides:
        path, value = parse_override(text)
        set_path(data, path, value)
    return RunConfig.from_dict(data)
