"""The task protocol: a batch is a pure function of (seeds, split, step).

Stateless sampling makes resumption exact: a run resumed at step N draws the
batches an uninterrupted run would have drawn. Each random quantity has its
own stream (``data`` for inputs, ``task`` for task parameters, ``noise`` for
label noise), each with its own base seed, so one can be held fixed while
another varies. The split (``train`` / ``eval``) is part of every stream key,
so evaluation never sees a training batch; :func:`derive_seed` is the only
place seeds are made.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import torch

Split = Literal["train", "eval"]
SPLITS: tuple[Split, ...] = ("train", "eval")


def derive_seed(base_seed: int, stream: str, split: str, step: int) -> int:
    """A 63-bit seed for one (stream, split, step), from a cryptographic hash.

    Different splits or streams give unrelated seeds; the same arguments always
    give the same seed, on every machine.
    """
    key = f"{base_seed}/{stream}/{split}/{step}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def stream(base_seed: int, name: str, split: str, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` for one (stream, split, step)."""
    if split not in SPLITS and split != "shared":
        raise ValueError(f"split must be one of {SPLITS} (or 'shared' for split-independent draws), got {split!r}")
    return torch.Generator(device=device).manual_seed(derive_seed(base_seed, name, split, step))


@dataclass
class Batch:
    """One batch of prompts.

    inputs:    [B, T] token ids or [B, T, I] vectors (what the model reads)
    targets:   [B, T] token ids or [B, P] regression targets (what is scored)
    extras:    task-specific tensors (e.g. the task vectors w [B, d])
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """What the trainer needs from a task."""

    config: Any

    def batch(self, step: int, batch_size: int, split: Split, device: torch.device | str) -> Batch:
        """The batch for this (split, step): same arguments, same tensors."""
        ...

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Scalar training loss from the model's outputs on ``batch.inputs``."""
        ...

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Evaluation numbers (plain floats) for one batch."""
        ...


def part_generator(base_seed: int, part: str) -> torch.Generator:
    """An independent CPU generator for one named part of an analysis (a study's part, a step of a pipeline)."""
    return torch.Generator().manual_seed(derive_seed(base_seed, part, "train", 0))


T = TypeVar("T")
SEED_FIELDS = ("data_seed", "task_seed", "noise_seed")


def seeded(task: T, seed: int) -> T:
    """A task config whose data streams follow a study's ``seed``: every ``*_seed`` field it has is offset by
    ``seed`` (seed 0 keeps the task's defaults). A study's seed means the same in every study: the models'
    initialisation (``RunConfig.seed``) and the data they see, so ``iclab sweep --seeds N`` varies both."""
    shifts = {f.name: getattr(task, f.name) + seed for f in dataclasses.fields(task) if f.name in SEED_FIELDS}
    return dataclasses.replace(task, **shifts)
