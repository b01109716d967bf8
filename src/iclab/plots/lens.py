"""The logit-lens figure: the answer's log-probability at every layer's input (rows) and position (columns)."""

from __future__ import annotations

from pathlib import Path

from iclab.analysis.lens import LogitLens
from iclab.plots import plt, save


def lens_heatmap(lens: LogitLens, answer_text: str, folder: Path) -> Path:
    L1, T = lens.logprob.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * T + 2.5), max(3.0, 0.18 * L1 + 1.5)))
    im = ax.imshow(lens.logprob, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(T), [repr(t)[1:-1][:12] for t in lens.tokens], rotation=60, ha="right", fontsize=7)
    step = max(1, L1 // 30)
    ax.set_yticks(range(0, L1, step), [f"L{i}" if i < L1 - 1 else "final" for i in range(0, L1, step)], fontsize=7)
    ax.set_ylabel("residual stream entering layer")
    ax.set_title(f"logit lens: log-probability of {answer_text!r} (last row: the model's output)", fontsize=8)
    plt.colorbar(im, ax=ax, fraction=0.04)
    return save(fig, folder, "logit_lens")
