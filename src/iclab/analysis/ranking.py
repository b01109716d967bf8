"""Which entries of a grid of effects (heads, layers, positions) matter most."""

from __future__ import annotations

import numpy as np


def largest_entries(grid: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """The indices of ``grid``'s ``k`` entries largest in absolute value, largest first (any shape, e.g. [L, H])."""
    grid = np.asarray(grid)
    order = np.argsort(-np.abs(grid), axis=None, kind="stable")[:k]
    return [tuple(int(i) for i in np.unravel_index(j, grid.shape)) for j in order]
