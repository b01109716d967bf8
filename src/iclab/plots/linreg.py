"""Figures of the linreg study (from the results of :mod:`iclab.studies.linreg`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iclab.analysis.linreg.comparison import Behaviour, NoiseTable
from iclab.analysis.linreg.probes import ProbeComparison
from iclab.plots import plt, save
from iclab.plots.llc import learner_llc_figure
from iclab.runs import TrainCurve


def spd_ilwd(beh: Behaviour, folder: Path) -> Path:
    depths = list(beh.depths)
    fig, axes = plt.subplots(len(depths), 2, figsize=(10, 3.2 * len(depths)), squeeze=False)
    for row, depth in zip(axes, depths):
        for ax, metric in zip(row, ("spd", "ilwd")):
            for name, curve in getattr(beh.depths[depth], metric).items():
                n = np.arange(len(curve.mean))
                ax.plot(n[1:], curve.mean[1:], label=name)
                ax.fill_between(n[1:], curve.low[1:], curve.high[1:], alpha=0.15)
            ax.set_yscale("log")
            ax.set_xlabel("number of in-context examples")
            ax.set_ylabel(f"{metric.upper()} / d")
            ax.set_title(f"{depth}-layer model: {metric.upper()} to each learner", fontsize=10)
        row[0].legend(fontsize=7, ncol=2)
    return save(fig, folder, "spd_ilwd_by_depth")


def errors(beh: Behaviour, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, err in beh.learner_error.items():
        ax.plot(range(1, len(err)), err[1:], ls=":", lw=1, label=name)
    for depth, v in beh.depths.items():
        ax.plot(range(1, len(v.error)), v.error[1:], lw=2.5, label=f"model, {depth} layers")
    ax.set_yscale("log")
    ax.set_xlabel("number of in-context examples")
    ax.set_ylabel("squared error / d")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, folder, "error_vs_examples")


def mspd_heatmap(noise: NoiseTable, folder: Path) -> Path:
    table = noise.mspd_table
    cols = sorted(table, key=float)
    rows = sorted(table[cols[0]], key=float)
    grid = np.array([[table[c][r] for c in cols] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(np.log10(grid), cmap="viridis_r")
    for j, c in enumerate(cols):
        ax.add_patch(plt.Rectangle((j - 0.5, j - 0.5), 1, 1, fill=False, ec="red", lw=2))  # the diagonal: lambda = noise ratio
        i = int(np.argmin(grid[:, j]))
        ax.text(j, i, "min", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(cols)), [f"{float(c):.3f}" for c in cols])
    ax.set_yticks(range(len(rows)), ["OLS" if float(r) == 0 else f"ridge {float(r):.3f}" for r in rows])
    ax.set_xlabel("sigma^2 / tau^2 of the model's training data")
    ax.set_ylabel("learner")
    ax.set_title("log10 MSPD (red: lambda = sigma^2/tau^2)", fontsize=10)
    plt.colorbar(im, ax=ax)
    return save(fig, folder, "mspd_noise_table")


def probes(pr: ProbeComparison, folder: Path) -> Path:
    prefix = max(pr.model.fits["w_ols"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, target in zip(axes, ("XTy", "w_ols")):
        for who, style in (("model", "-"), ("control", "--")):
            for kind, marker in (("linear", "o"), ("mlp", "s")):
                r2 = getattr(pr, who).r2(target, kind, prefix)
                ax.plot(range(len(r2)), r2, style, marker=marker, label=f"{who}, {kind} probe")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("held-out R^2")
        ax.set_ylim(-0.1, 1.05)
        ax.set_title(f"probing {target} (prefix of {prefix} examples)", fontsize=10)
        ax.legend(fontsize=7)
    return save(fig, folder, "probes_by_layer")


def loss_curves(curves: dict[str, TrainCurve], folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(c.step, c.loss, label=name, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.legend(fontsize=7)
    return save(fig, folder, "loss_curves")


def plot_all(res: dict[str, Any], cfg: Any, folder: Path) -> list[Path]:
    return [
        spd_ilwd(res["behaviour"], folder),
        errors(res["behaviour"], folder),
        mspd_heatmap(res["noise"], folder),
        probes(res["probes"], folder),
        loss_curves(res["curves"], folder),
        *([learner_llc_figure(res["llc"], res["development"], folder)] if "llc" in res and "development" in res else []),
    ]
