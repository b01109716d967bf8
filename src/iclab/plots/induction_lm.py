"""Figures of the induction study on a pretrained model (from :mod:`iclab.studies.induction.pretrained`'s results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iclab.plots import plt, save
from iclab.plots.patching import patching_heatmap
from iclab.plots.views import attention_view, patching_view, save_view


def head_heatmaps(res: dict[str, Any], folder: Path) -> Path:
    keys = [("prefix_matching", "prefix-matching", "Blues", 0, 1), ("copying_eigenvalues", "copying (OV eigenvalues)", "RdBu", -1, 1),
            ("previous_token", "previous-token", "Greens", 0, 1)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 5))
    for ax, (key, title, cmap, lo, hi) in zip(axes, keys):
        im = ax.imshow(res["scores"].of(key), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        plt.colorbar(im, ax=ax)
    fig.suptitle(f"{res['model']}: every head", fontsize=10)
    return save(fig, folder, "head_scores")


def attention_example(res: dict[str, Any], folder: Path) -> Path:
    ex = res["example"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(np.array(ex.pattern), cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title(f"{ex.head} on random tokens repeated twice", fontsize=9)
    plt.colorbar(im, ax=ax)
    return save(fig, folder, "top_induction_head_attention")


def loss_by_position(res: dict[str, Any], folder: Path) -> Path:
    curve = np.array(res["icl"].loss_by_position)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(curve) + 1), curve)
    ax.set_xscale("log")
    ax.set_xlabel("token index in the context")
    ax.set_ylabel("mean loss (nats)")
    ax.set_title(f"{res['model']} on Python reference text: later tokens are easier", fontsize=9)
    return save(fig, folder, "loss_by_position")


def ablation_bars(res: dict[str, Any], folder: Path) -> Path:
    effects = res["ablations"].effects
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("second_copy_loss", "icl_score"), ("second-copy loss (nats)", "ICL score on text (nats)")):
        for i, mode in enumerate(("zero", "mean")):
            eff = effects[mode]
            rand = [getattr(eff[k], metric) for k in eff if k.startswith("random")]
            values = [getattr(eff["clean"], metric), getattr(eff["induction"], metric), float(np.mean(rand))]
            ax.bar(np.arange(3) + 0.38 * i, values, width=0.36, yerr=[0, 0, float(np.std(rand))], capsize=3, label=f"{mode} ablation")
        ax.set_xticks(np.arange(3) + 0.19, ["clean", "induction heads\nablated", "random heads\nablated"])
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Ablating the top induction heads vs as many random heads of the same layers", fontsize=10)
    return save(fig, folder, "ablation_induction_vs_random")


def live_views(res: dict[str, Any], folder: Path) -> list[Path]:
    """The report's interactive views: every head's attention on a repeated random sequence, and attribution patching
    per head and position (the 24 heads with the largest effect)."""
    seen, rp = res["attention"], res["patching"]
    attention = attention_view(seen.tokens, seen.patterns, f"{res['model']}: every head on random tokens, then the same "
                               "tokens again (hover a token, click a head)",
                               {"prefix matching": seen.prefix_matching, "previous token": seen.previous_token},
                               {"loss (nats)": seen.loss})
    patching = patching_view(rp.positions, f"{res['model']}: attribution patching of each head at each position "
                             "(first copy corrupted; the 24 heads with the largest effect)", top=24)
    return [save_view(attention, folder, "attention_live"), save_view(patching, folder, "patching_live")]


def plot_all(res: dict[str, Any], folder: Path) -> list[Path]:
    return [head_heatmaps(res, folder), attention_example(res, folder), loss_by_position(res, folder), ablation_bars(res, folder),
            patching_heatmap(res["patching"].heads, folder, "patching_heads"), *live_views(res, folder)]
