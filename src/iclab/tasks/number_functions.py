"""Functions on numbers mixed into add-k training, so that the demonstrations are the only way to know the task.

An LLM meets "add k" after pre-training on text full of numbers and of countless implicit tasks: it must identify
the task from the demonstrations before it can apply it (Todd et al. 2024's function vectors, Yang et al. 2025's
task vectors in small transformers trained on many tasks). A model trained on add-k alone never has to. This table
is the family of such tasks for :class:`iclab.tasks.addk.AddKConfig`'s ``mix_ops``: each prompt is one function with
one parameter, e.g. ``x mod 7`` or ``max(x, 40)``, drawn per prompt; the query's x is new, so a prompt's function and
parameter can be read only off its demonstrations.

``add``, ``sub`` and ``mul`` are the add-k study's own operations (their parameter is a training task's k); the
others carry their own parameter range, given the task's x range [x_min, x_max] and k_max. Every value is an
integer, so every prompt keeps the study's one layout (one token per number, or fixed-width digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# the operations whose parameter is a training task's k (the add-k study's tasks)
TASK_OPS = ("add", "sub", "mul")


@dataclass(frozen=True)
class NumberFunction:
    """y = fn(x, p) for inputs x [B, n] and parameters p [B, 1] (zeros for a function without one).

    ``params(x_min, x_max, k_max)``: the inclusive range its parameter takes, or None for no parameter.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    params: Callable[[int, int, int], tuple[int, int]] | None = None


def _digits(x: torch.Tensor) -> list[torch.Tensor]:
    """Base-10 digits of x >= 0, least significant first, as many as the largest x needs (zeros above a smaller x)."""
    out, t = [], x.clone()
    for _ in range(len(str(int(x.max()))) if x.numel() else 1):
        out.append(t % 10)
        t = t // 10
    return out


def reverse_digits(x: torch.Tensor) -> torch.Tensor:
    """x >= 0 with its decimal digits reversed (12 -> 21, 100 -> 1, 7 -> 7): each digit shifts the result left only
    while x still has digits, so a smaller x gains no trailing zeros."""
    rev, t = torch.zeros_like(x), x.clone()
    for digit in _digits(x):
        rev = torch.where(t > 0, rev * 10 + digit, rev)
        t = t // 10
    return rev


def digit_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the decimal digits of x >= 0."""
    return sum(_digits(x), torch.zeros_like(x))


def _task_k(lo: int, hi: int, k_max: int) -> tuple[int, int]:
    return 1, k_max


def _inputs(lo: int, hi: int, k_max: int) -> tuple[int, int]:
    return lo, hi


FUNCTIONS: dict[str, NumberFunction] = {f.name: f for f in (
    NumberFunction("add", lambda x, k: x + k, _task_k),
    NumberFunction("sub", lambda x, k: x - k, _task_k),
    NumberFunction("mul", lambda x, k: x * k, _task_k),
    NumberFunction("mod", lambda x, m: x % m, lambda lo, hi, k_max: (2, max(3, k_max))),  # x mod m
    NumberFunction("div", lambda x, m: x // m, lambda lo, hi, k_max: (2, 10)),  # x // m
    NumberFunction("max", torch.maximum, _inputs),  # max(x, c)
    NumberFunction("min", torch.minimum, _inputs),  # min(x, c)
    NumberFunction("dist", lambda x, c: (x - c).abs(), _inputs),  # |x - c|
    NumberFunction("gt", lambda x, c: (x > c).long(), _inputs),  # 1 if x > c else 0
    NumberFunction("copy", lambda x, _: x.clone()),
    NumberFunction("reverse", lambda x, _: reverse_digits(x)),  # x's digits reversed
    NumberFunction("digitsum", lambda x, _: digit_sum(x)),  # the sum of x's digits
)}


def value_range(name: str, x_min: int, x_max: int, k_max: int) -> tuple[int, int]:
    """The smallest and largest value function ``name`` takes over every x and parameter of the mix (add, sub, mul:
    every k up to k_max, held-out ones included)."""
    f = FUNCTIONS[name]
    lo, hi = f.params(x_min, x_max, k_max) if f.params else (0, 0)
    x = torch.arange(x_min, x_max + 1).unsqueeze(0)  # [1, X]
    p = torch.arange(lo, hi + 1).unsqueeze(1)  # [P, 1]
    y = f.fn(x.expand(len(p), -1), p.expand(-1, x.shape[1]))
    return int(y.min()), int(y.max())


def draw_parameters(name: str, x_min: int, x_max: int, k_max: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For one function outside the study's own operations: each of n prompts' parameter p [n, 1] (zeros for a
    function without one), and what its wrong labels use [n, 1]: another parameter of the same function, or for a
    function without one another input x', drawn in the x range."""
    f = FUNCTIONS[name]
    lo, hi = f.params(x_min, x_max, k_max) if f.params else (x_min, x_max)
    p = torch.randint(lo, hi + 1, (n, 1), generator=g)
    other = torch.randint(lo, hi, (n, 1), generator=g)
    if not f.params:
        return torch.zeros_like(p), p
    return p, other + (other >= p).long()  # uniform over the other parameters


def values(name: str, xs: torch.Tensor, p: torch.Tensor, p_wrong: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """Labels [B, n] of function ``name`` on xs [B, n] with parameters p [B, 1]; where ``wrong``, the label of another
    parameter (or, for a function without one, of another input x' = p_wrong)."""
    f = FUNCTIONS[name]
    bad = f.fn(xs, p_wrong.expand_as(xs)) if f.params else f.fn(p_wrong.expand_as(xs), p.expand_as(xs))
    return torch.where(wrong, bad, f.fn(xs, p.expand_as(xs)))
