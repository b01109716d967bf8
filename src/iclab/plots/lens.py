"""The logit-lens figure (the answer's log-probability at every layer's input and position) and the direct logit
attribution figure (each head's and each MLP's share of the answer's logit at the last position)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclab.analysis.lens import LogitAttribution, LogitLens
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


def attribution_figure(dla: LogitAttribution, answer_text: str, wrong_text: str | None, folder: Path) -> Path:
    """Heads (layer x head heatmap) and each layer's attention and MLP (bars) by direct logit attribution."""
    L, H = dla.heads.shape
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(max(8.0, 0.3 * H + 6.5), max(3.0, 0.2 * L + 1.5)),
                                 gridspec_kw={"width_ratios": [max(H, 4), 4]})
    vmax = float(np.abs(dla.heads).max()) or 1.0
    im = ax.imshow(dla.heads, aspect="auto", cmap="RdBu", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    what = f"logit({answer_text!r})" + (f" - logit({wrong_text!r})" if wrong_text is not None else "")
    ax.set_title(f"direct logit attribution to {what}", fontsize=8)
    plt.colorbar(im, ax=ax, fraction=0.04)
    y = np.arange(L)
    bx.barh(y - 0.2, dla.attn, height=0.4, label="attention")
    bx.barh(y + 0.2, dla.mlp, height=0.4, label="MLP")
    bx.set_ylim(L - 0.5, -0.5)
    bx.axvline(0, color="k", lw=0.5)
    bx.set_title(f"per layer; embedding {dla.embed:+.2f}, total {dla.total:+.2f}", fontsize=8)
    bx.legend(fontsize=7, loc="lower right")
    return save(fig, folder, "logit_attribution")
