"""Figures of the spinglass study (from the results of :mod:`iclab.studies.spinglass`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iclab.analysis.linreg.task_diversity import TaskDiversity
from iclab.plots import plt, save
from iclab.spinglass import experiments as X


def _heat(ax, matrix, title: str, cmap: str = "RdBu_r", symmetric: bool = True) -> None:
    m = np.asarray(matrix)
    vmax = float(np.abs(m).max()) or 1.0
    im = ax.imshow(m, cmap=cmap, vmin=-vmax if symmetric else None, vmax=vmax if symmetric else None)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    plt.colorbar(im, ax=ax, fraction=0.046)


def fig2_maps(res: X.Fig2Result, folder: Path) -> Path:
    maps = res.maps
    n_trained = min(2, max((len(r.trained) for r in maps.values()), default=0))
    fig, axes = plt.subplots(len(maps), 4 + n_trained, figsize=(3 * (4 + n_trained), 3 * len(maps)))
    axes = np.atleast_2d(axes)
    for row, (P, r) in zip(axes, maps.items()):
        for i, W in enumerate(r.trained[:n_trained]):  # what the paper's figure shows: trained weights
            _heat(row[4 + i], W, f"P={P}: trained W, start {i + 1} (last column\nunread: its init) spread {r.init_spread:.2f}")
        _heat(row[0], r.m_exact, f"P={P}: mean m (exact)\nCR = {r.contrast_ratio:.2f}")
        _heat(row[1], r.v_exact, f"P={P}: variance v (exact)", cmap="viridis", symmetric=False)
        for ax, m, info, name in ((row[2], r.m_amp, r.amp, "AMP"), (row[3], r.m_amp_paper, r.amp_paper, "AMP (paper)")):
            if m is not None:
                gap = info.gap_to_exact_mean
                _heat(ax, m, f"P={P}: mean m ({name})\n{info.iterations} it." + (f", {gap:.1e} from exact" if gap is not None else ""))
            else:
                ax.axis("off")
                err = info.error
                ax.text(0.5, 0.5, f"P={P}: {name} did not converge\n(last change {err:.2g})" if err is not None else f"P={P}: {name} diverged",
                        ha="center", va="center")
    return save(fig, folder, "fig2_magnetization_maps")


def diversity(res: X.DiversityCurve, folder: Path) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.loglog(res.P, res.test_error, "o-")
    a.axhline(res.label_variance, ls=":", c="gray", label="label variance")
    a.set_xlabel("task diversity P")
    a.set_ylabel("test MSE on unseen tasks")
    a.legend()
    b.semilogx(res.P, res.contrast_ratio, "o-")
    b.set_xlabel("task diversity P")
    b.set_ylabel("contrast ratio")
    return save(fig, folder, "diversity_test_error_and_contrast")


def fig4a(res: X.ContrastGrid, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    grid = np.asarray(res.grid)
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="magma")
    ax.set_xticks(range(len(res.P)), [str(p) for p in res.P], rotation=60, fontsize=7)
    ax.set_yticks(range(len(res.N)), [str(n) for n in res.N], fontsize=7)
    ax.set_xlabel("P (number of training tasks)")
    ax.set_ylabel("N (examples per prompt)")
    ax.set_title("contrast ratio of the Boltzmann mean")
    plt.colorbar(im, ax=ax)
    return save(fig, folder, "fig4a_contrast_ratio")


def fig4b(res: X.Fig4bResult, folder: Path) -> Path:
    Ns, rows = list(res.rows), list(res.rows.values())
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(Ns, [r.exact for r in rows], "o-", label="Boltzmann mean (exact)")
    for key, marker, label in (("amp", "x", "AMP"), ("amp_paper", "+", "AMP, paper's update")):
        pts = [(n, getattr(r, key)) for n, r in zip(Ns, rows) if getattr(r, key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker, ms=9, label=f"{label} ({len(pts)}/{len(Ns)} N converged)")
        else:  # an empty series still says what happened
            ax.plot([], [], marker, ms=9, label=f"{label}: did not converge at any N")
    ax.plot(Ns, [r.gd for r in rows], "s--", mfc="none", label="gradient-trained model")
    ax.set_yscale("log")
    ax.set_xlabel("N (examples per prompt)")
    ax.set_ylabel("test MSE on unseen tasks")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the axes: never on the data
    return save(fig, folder, "fig4b_test_error_vs_N")


def figS1(res: X.DoubleDescent, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(res.alpha, res.test_error, yerr=res.std, fmt="o-", capsize=2)
    ax.axvline(res.threshold_alpha, ls=":", c="red", label="P = D(D+1)")
    ax.set_yscale("log")
    ax.set_xlabel("alpha = P / D^2")
    ax.set_ylabel("test MSE (no regularisation)")
    ax.legend()
    return save(fig, folder, "figS1_double_descent")


def figS7(res: X.ZeroModes, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    styles = [("o", "-", 9), ("s", "--", 7), ("^", ":", 5), ("D", "-.", 4), ("v", "-", 3)]
    for (D, row), (marker, line, size) in zip(res.rows.items(), styles * len(res.rows)):
        # the curves of different D coincide when rescaled by D(D+1) (the paper's point): shrinking open markers and
        # distinct line styles keep each one visible on top of the others
        ax.plot(np.asarray(row.P) / row.K, row.fraction, marker=marker, ls=line, ms=size, mfc="none", label=f"D={D}")
    ax.axvline(1.0, ls=":", c="gray")
    ax.set_xlabel("P / D(D+1)")
    ax.set_ylabel("fraction of zero modes")
    ax.legend(title="curves coincide" if len(res.rows) > 1 else None)
    return save(fig, folder, "figS7_zero_modes")


def figS4(res: X.CorrelatedInputs, folder: Path) -> Path:
    fig, axes = plt.subplots(1, len(res.rows), figsize=(4.5 * len(res.rows), 3.6), squeeze=False)
    for ax, (axis, rows) in zip(axes[0], res.rows.items()):
        c = [r.c for r in rows]
        ax.plot(c, [r.exact for r in rows], "o-", label="Boltzmann mean")
        ax.plot(c, [r.gd for r in rows], "s--", mfc="none", label="gradient-trained")
        amp = [(r.c, r.amp) for r in rows if r.amp is not None]
        ax.plot(*(zip(*amp) if amp else ([], [])), "x", ms=9,
                label=f"AMP ({len(amp)}/{len(rows)} c converged)" if amp else "AMP: did not converge at any c")
        ax.set_title(f"correlated {axis}")
        ax.set_xlabel("correlation c")
        ax.set_ylabel("test MSE")
        ax.legend(fontsize=8)
    return save(fig, folder, "figS4_correlated_inputs")


def task_diversity_figure(res: TaskDiversity, folder: Path) -> Path:
    rows = res.rows
    Ms = [r.M for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, style in (("model", "o-"), ("ridge", "--"), ("dmmse", ":")):
        a.semilogx(Ms, [r.error[key] for r in rows], style, label=key)
    a.set_xlabel("task pool size M")
    a.set_ylabel("error / d on fresh Gaussian tasks")
    a.legend()
    for key in ("ridge", "dmmse"):
        b.loglog(Ms, [r.spd[key] for r in rows], "o-", label=f"SPD(model, {key})")
    b.set_xlabel("task pool size M")
    b.legend()
    return save(fig, folder, "task_diversity_transformer")


def plot_all(results: dict[str, Any], cfg: Any, folder: Path) -> list[Path]:
    extra = [task_diversity_figure(results["task_diversity"], folder)] if "task_diversity" in results else []
    return extra + [
        fig2_maps(results["fig2"], folder),
        diversity(results["diversity"], folder),
        fig4a(results["fig4a"], folder),
        fig4b(results["fig4b"], folder),
        figS1(results["figS1"], folder),
        figS7(results["figS7"], folder),
        figS4(results["figS4"], folder),
    ]
