"""The patching heatmap: every site's normalised effect, positions along x (the prompt's tokens), sites along y."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclab.analysis.patching import HEAD_SITES, PathPatching, Patching
from iclab.plots import plt, save


def patching_heatmap(p: Patching, folder: Path, name: str | None = None) -> Path:
    """One heatmap of ``p.normalised`` (or the raw change when the clean and corrupted metrics coincide): rows are
    layer.head (site ``heads``) or layers, columns the prompt's positions labelled by token."""
    values = p.normalised if np.isfinite(p.normalised).all() else p.effect
    label = "normalised effect (1: restores all)" if values is p.normalised else f"change of {p.metric}"
    if not p.each_position:  # a site at every position at once: one column
        values = values.reshape(values.shape[0], -1) if p.site in HEAD_SITES else values[:, None]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * values.shape[1] + 2.5), max(2.5, 0.2 * values.shape[0] + 1.5)))
        vmax = float(np.nanmax(np.abs(values))) or 1.0
        im = ax.imshow(values, aspect="auto", cmap="RdBu", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xlabel("head" if p.site in HEAD_SITES else "")
        ax.set_ylabel("layer")
        ax.set_title(f"{p.method} {p.direction} patching of {p.site} at every position\non {p.metric}; clean "
                     f"{p.clean_metric:.2f}, corrupted {p.corrupted_metric:.2f}", fontsize=8)  # two lines: the figure is narrow
        plt.colorbar(im, ax=ax, fraction=0.04, label=label)
        return save(fig, folder, name or f"patching_{p.site}_all_{p.method}")
    if p.site in HEAD_SITES:
        L, H, T = values.shape
        grid = values.reshape(L * H, T)
        rows = [f"L{layer}H{h}" for layer in range(L) for h in range(H)]  # k, v: the key/value head
    else:
        grid, rows = values, [f"{'final' if p.site == 'resid' and i == values.shape[0] - 1 else f'L{i}'}" for i in range(values.shape[0])]
    T = grid.shape[1]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * T + 2.5), max(3.0, 0.16 * len(rows) + 1.5)))
    vmax = float(np.nanmax(np.abs(grid))) or 1.0
    im = ax.imshow(grid, aspect="auto", cmap="RdBu", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(T), [repr(t)[1:-1][:12] for t in p.tokens], rotation=60, ha="right", fontsize=7)
    step = max(1, len(rows) // 40)
    ax.set_yticks(range(0, len(rows), step), rows[::step], fontsize=6 if len(rows) > 20 else 8)
    ax.set_xlabel("position (clean prompt's token)")
    ax.set_title(f"{p.method} {p.direction} patching of {p.site} on {p.metric} ({p.n_pairs} pair{'s' if p.n_pairs > 1 else ''}); "
                 f"clean {p.clean_metric:.2f}, corrupted {p.corrupted_metric:.2f}", fontsize=8)
    plt.colorbar(im, ax=ax, fraction=0.04, label=label)
    return save(fig, folder, name or f"patching_{p.site}_{p.method}")


def path_patching_heatmap(p: PathPatching, folder: Path) -> Path:
    """Senders (layer x head) into one receiver's query, key or value: the normalised effect of each path."""
    values = p.normalised if np.isfinite(p.normalised[: p.receiver[0]]).all() else p.effect
    label = "normalised effect (1: restores all)" if values is p.normalised else f"change of {p.metric}"
    grid = values[: p.receiver[0]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * grid.shape[1] + 2.5), max(2.5, 0.25 * grid.shape[0] + 1.5)))
    vmax = float(np.nanmax(np.abs(grid))) or 1.0
    im = ax.imshow(grid, aspect="auto", cmap="RdBu", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xlabel("sender head")
    ax.set_ylabel("sender layer")
    ax.set_title(f"path patching into L{p.receiver[0]}H{p.receiver[1]}'s {p.into} ({p.direction}, {p.metric}, "
                 f"{p.n_pairs} pair{'s' if p.n_pairs > 1 else ''})", fontsize=8)
    plt.colorbar(im, ax=ax, fraction=0.04, label=label)
    return save(fig, folder, f"path_patching_L{p.receiver[0]}H{p.receiver[1]}_{p.into}")
