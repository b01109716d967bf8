"""The LLC along training: LLC against tokens seen, beside the run's loss and ICL score, the phase-change window
shaded; each head's refined LLC in a second panel when estimated."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclab.analysis.linreg.development import LearnerTrajectory
from iclab.analysis.llc_runs import LLCTrajectory
from iclab.plots import plt, save


def llc_figure(t: LLCTrajectory, folder: Path) -> Path:
    panels = 2 if t.heads else 1
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, 3.6 * panels), sharex=True, squeeze=False)
    ax = axes[0, 0]
    x = np.maximum(np.array(t.tokens, dtype=float), 1.0)
    ax.errorbar(x, t.llc(), yerr=[e.stderr for e in t.estimates], color="k", marker="o", ms=3, capsize=2, label="LLC")
    ax.set_xscale("log")
    ax.set_ylabel("LLC (whole model)")
    other = ax.twinx()
    if np.isfinite(t.eval_loss).any():
        other.plot(x, t.eval_loss, color="tab:blue", alpha=0.7, marker="s", ms=3, label="eval loss")
    if np.isfinite(t.icl_score).any():
        other.plot(x, t.icl_score, color="tab:orange", alpha=0.7, marker="s", ms=3, label="ICL score")
    tokens = np.isfinite(t.induction_score).any()  # a token model (a regression run has no prefix-matching score)
    other.set_ylabel("nats" if tokens else "eval loss (mean squared error)")
    if tokens:
        third = ax.twinx()
        third.spines["right"].set_position(("axes", 1.12))
        third.plot(x, t.induction_score, color="tab:green", ls="--", marker="^", ms=3, alpha=0.8, label="best prefix matching")
        third.set_ylim(0, 1)
        third.set_ylabel("prefix-matching score (best head)")
        lines_extra = third.get_legend_handles_labels()[0]
    else:
        lines_extra = []
    lines = ax.get_legend_handles_labels()[0] + other.get_legend_handles_labels()[0] + lines_extra
    ax.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="best")
    for a in axes[:, 0]:
        if t.window is not None:
            a.axvspan(*t.window, color="tab:orange", alpha=0.12, lw=0)
    ax.set_title(f"LLC along training ({t.settings.chains} chains x {t.settings.draws} draws, {t.n_samples} samples)"
                 + ("; shaded: the phase-change window" if t.window is not None else ""), fontsize=8)
    if t.heads:
        bx = axes[1, 0]
        for name, values in t.head_llc().items():
            bx.plot(x, values, marker=".", ms=3, label=name)
        bx.set_ylabel("refined LLC (one head's weights)")
        bx.legend(fontsize=6, ncol=4)
    axes[-1, 0].set_xlabel(("tokens seen" if tokens else "prompts seen") if t.tokens != t.step else "step")
    return save(fig, folder, "llc")


def study_llc_figure(curves: dict[str, LLCTrajectory], windows: dict[str, tuple[float, float] | None],
                     around: LLCTrajectory | None, induction: set[str], folder: Path) -> Path:
    """The induction study's LLC curves (one per model, its own window shaded) and, when estimated, each head's refined
    LLC before and after the window (induction heads marked)."""
    panels = 2 if around is not None and around.heads else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for i, (m, c) in enumerate(curves.items()):
        colour = f"C{i}"
        ax.errorbar(np.maximum(np.array(c.tokens, dtype=float), 1.0), c.llc(), yerr=[e.stderr for e in c.estimates], color=colour,
                    marker="o", ms=3, capsize=2, label=m)
        if windows.get(m) is not None:
            ax.axvspan(*windows[m], color=colour, alpha=0.12, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("LLC")
    ax.set_title("LLC along training (shaded: each model's phase-change window)", fontsize=8)
    ax.legend(fontsize=7)
    if panels == 2:
        bx = axes[0, 1]
        names = sorted(around.heads)
        before = [around.heads[h][0].llc for h in names]
        after = [around.heads[h][-1].llc for h in names]
        x = np.arange(len(names))
        bx.bar(x - 0.2, before, width=0.4, label=f"step {around.step[0]}", color="0.7")
        bx.bar(x + 0.2, after, width=0.4, label=f"step {around.step[-1]}",
               color=["tab:red" if h in induction else "tab:blue" for h in names])
        bx.set_xticks(x, names, rotation=60, fontsize=7)
        bx.set_ylabel("refined LLC (one head's weights)")
        bx.set_title("each head before and after the window (red: induction heads)", fontsize=8)
        bx.legend(fontsize=7)
    return save(fig, folder, "llc_along_training")


def learner_llc_figure(t: LLCTrajectory, learners: LearnerTrajectory, folder: Path) -> Path:
    """The linreg study's deepest model: its LLC at each snapshot, each point labelled with the learner it is closest
    to, above its SPD to every learner at the same snapshots."""
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7.5, 7), sharex=True)
    x = np.maximum(np.array(t.step, dtype=float), 1.0)
    ax.errorbar(x, t.llc(), yerr=[e.stderr for e in t.estimates], color="k", marker="o", ms=3, capsize=2)
    ax.margins(y=0.15)  # room above the highest point for its label
    closest = dict(zip(learners.step, learners.closest()))
    shown = None
    for xi, yi, step in zip(x, t.llc(), t.step):
        if closest.get(step) != shown:  # label where the closest learner changes
            shown = closest.get(step)
            ax.annotate(shown or "", (xi, yi), textcoords="offset points", xytext=(3, 5), fontsize=7, rotation=30)
    ax.set_xscale("log")
    ax.set_ylabel("LLC (whole model)")
    ax.set_title(f"LLC along training ({t.settings.chains} chains x {t.settings.draws} draws); label: the closest learner, where it changes",
                 fontsize=8)
    lx = np.maximum(np.array(learners.step, dtype=float), 1.0)
    for j, name in enumerate(learners.learners):
        bx.plot(lx, learners.spd[:, j], marker=".", ms=3, label=name)
    bx.set_yscale("log")
    bx.set_ylabel("SPD / d to each learner (mean over n >= 1)")
    bx.set_xlabel("step (step 0 drawn at 1)")
    bx.legend(fontsize=6, ncol=3)
    return save(fig, folder, "llc_and_closest_learner")
