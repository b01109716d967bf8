"""Small numerical helpers every analysis shares: one PCA, one moving average."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class PCA:
    coords: np.ndarray  # [N, r] centred rows in the principal directions (U * s)
    components: np.ndarray  # [r, F] principal directions (rows of Vt)
    explained: np.ndarray  # [r] share of the variance of each direction

    def n_for(self, share: float) -> int:
        """Directions needed to explain ``share`` of the variance."""
        return min(int(np.searchsorted(np.cumsum(self.explained), share) + 1), len(self.explained))


def pca(X: np.ndarray) -> PCA:
    """PCA of the rows of X [N, F] (centred by column means) through the SVD."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0, keepdims=True)
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    var = s**2
    return PCA(U * s, Vt, var / max(var.sum(), 1e-300))


def moving_average(y: np.ndarray, width: int, edges: Literal["drop", "shrink"] = "drop") -> np.ndarray:
    """Moving average of ``y`` [S] over ``width`` points. ``edges="drop"``: only full windows, [S - width + 1],
    entry i averaging y[i : i + width]; ``"shrink"``: centred, [S], edge windows averaging what exists."""
    y = np.asarray(y, dtype=np.float64)
    kernel = np.ones(width)
    if edges == "drop":
        return np.convolve(y, kernel / width, mode="valid")
    return np.convolve(y, kernel, mode="same") / np.convolve(np.ones_like(y), kernel, mode="same")
