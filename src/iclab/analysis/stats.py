"""Small numerical helpers every analysis shares: one PCA, one moving average, one bootstrap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

# Resamples of every bootstrap interval iclab reports (the intervals are context: no verdict reads them).
N_BOOT = 1000


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


def bootstrap_mean(samples: torch.Tensor | np.ndarray, generator: torch.Generator, n_boot: int = N_BOOT,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean over the first axis of ``samples`` [B, ...] and its percentile bootstrap interval at ``level``:
    (mean, low, high), each of shape [...]; ``n_boot`` resamples of the B samples with replacement."""
    x = torch.as_tensor(np.asarray(samples) if isinstance(samples, np.ndarray) else samples, dtype=torch.float64)
    idx = torch.randint(x.shape[0], (n_boot, x.shape[0]), generator=generator)
    boots = x[idx].mean(1)  # [n_boot, ...]
    tail = (1 - level) / 2
    q = torch.quantile(boots, torch.tensor([tail, 1 - tail], dtype=torch.float64), dim=0)
    return x.mean(0).numpy(), q[0].numpy(), q[1].numpy()
