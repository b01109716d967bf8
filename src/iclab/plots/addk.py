"""Figures of the addk study (from the results of :mod:`iclab.studies.addk`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iclab.analysis.addk import PERIODIC
from iclab.analysis.addk.pipeline import CleanScan, Localisation
from iclab.plots import plt, save
from iclab.claims import plural
from iclab.plots.patching import patching_heatmap
from iclab.plots.views import patching_view, save_view


def mask_sorted(res: dict[str, Any], folder: Path) -> Path:
    loc: Localisation = res["localisation"]
    mask = np.array(loc.mask)
    vals = np.sort(mask.ravel())[::-1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(vals) + 1), vals, marker=".", lw=1)
    n = len(loc.selected)
    ax.axvline(n + 0.5, color="red", ls="--", label=f"largest gap: {plural(n, 'selected head')}")
    ax.set_xlabel("head rank")
    ax.set_ylabel("mask coefficient")
    ax.set_title(f"Sparse head mask (FV injected at layer {loc.layer})", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, folder, "mask_coefficients")


def accuracies(res: dict[str, Any], folder: Path) -> Path:
    acc = res["localisation"].accuracy
    random_sets = float(np.mean(acc.few_shot_random_ablated)) if acc.few_shot_random_ablated else None
    bars = {  # None: that head set is empty (drawn as "none", never as a zero accuracy)
        "clean ICL\n(5-shot)": res["clean_accuracy"].train_tasks,
        "zero-shot": acc.zero_shot,
        "zero-shot +\nselected FV": acc.selected_fv,
        "zero-shot +\nsignificant FV": acc.significant_fv,
        "zero-shot +\nmain FV": acc.main_fv,
        "5-shot, main\nheads ablated": acc.few_shot_main_ablated,
        "5-shot, random\nsets ablated": random_sets,
    }
    fig, ax = plt.subplots(figsize=(8, 3.8))
    heights = [0.0 if v is None else v for v in bars.values()]
    ax.bar(range(len(bars)), heights, color=["C0", "C7", "C1", "C2", "C3", "C4", "C7"])
    for i, v in enumerate(bars.values()):
        if v is None:
            ax.text(i, 0.02, "none", ha="center", fontsize=7, color="grey")
    ax.set_xticks(range(len(bars)), list(bars), fontsize=7)
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1)
    return save(fig, folder, "accuracy_by_head_set")


def pca_variance(res: dict[str, Any], folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for head, s in res["subspaces"].heads.items():
        ev = np.cumsum(s.explained)
        ax.plot(np.arange(1, len(ev) + 1), ev, marker=".", label=f"head {head} ({s.pcs_to_95} PCs to 95%)")
    ax.axhline(0.95, color="grey", ls=":")
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative variance of task means")
    ax.legend(fontsize=7)
    return save(fig, folder, "pca_variance")


def task_means_scatter(res: dict[str, Any], folder: Path) -> Path:
    heads = list(res["subspaces"].heads)
    k = np.array(res["k"])
    fig, axes = plt.subplots(len(heads), 2, figsize=(8, 3.6 * len(heads)), squeeze=False)
    for row, head in zip(axes, heads):
        xy = np.array(res["subspaces"].heads[head].coords)
        for ax, colour, label in ((row[0], k, "k"), (row[1], k % 10, "unit digit of k")):
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="viridis" if label == "k" else "tab10", s=30)
            for i, kk in enumerate(k):
                ax.annotate(str(kk), xy[i, :2], fontsize=6)
            ax.set_title(f"head {head}: task means in PC1-PC2, coloured by {label}", fontsize=8)
            plt.colorbar(sc, ax=ax)
    return save(fig, folder, "task_means_pcs")


def periodic_curves(res: dict[str, Any], folder: Path) -> Path:
    heads = list(res["subspaces"].heads)
    k = np.array(res["k"], dtype=float)
    fig, axes = plt.subplots(len(heads), 3, figsize=(10, 3 * len(heads)), squeeze=False)
    for row, head in zip(axes, heads):
        s = res["subspaces"].heads[head]
        coords = np.array(s.coords)
        for i, ax in enumerate(row):
            if i >= coords.shape[1]:
                ax.axis("off")
                continue
            y = coords[:, i] - coords[:, i].mean()
            name, fit = s.best_fits()[f"PC{i + 1}"]
            feature = PERIODIC[name]
            f = feature.wave(k, fit.theta)
            f = f - f.mean()
            a = f @ y / max(f @ f, 1e-12)
            ax.plot(k, y, "o", ms=3, label="task means")
            kk = np.linspace(k.min(), k.max(), 300)
            ff = feature.wave(kk, fit.theta) - feature.wave(k, fit.theta).mean()
            ax.plot(kk, a * ff, lw=1, label=f"{name}, R^2 {fit.r2:.2f}")
            ax.set_title(f"head {head} PC{i + 1}", fontsize=8)
            ax.set_xlabel("k")
            ax.legend(fontsize=6)
    return save(fig, folder, "periodic_fits")


def by_position(res: dict[str, Any], folder: Path) -> Path:
    heads = list(res["subspaces"].heads)
    fig, axes = plt.subplots(len(heads), 1, figsize=(8, 2.8 * len(heads)), squeeze=False)
    for ax, head in zip(axes[:, 0], heads):
        s = res["subspaces"].heads[head]
        att, sig = np.array(s.position_attention), np.array(s.position_signal)
        x = np.arange(len(att))
        ax.bar(x - 0.2, att / max(att.sum(), 1e-12), 0.4, label="attention share")
        ax.bar(x + 0.2, sig / max(sig.sum(), 1e-12), 0.4, label="extracted-signal share")
        ax.set_title(f"head {head}: final token's attention and extracted signal by position "
                     f"(label tokens: {s.signal_label_share:.0%} of the signal)", fontsize=8)
        ax.set_xlabel("token position")
        ax.legend(fontsize=7)
    return save(fig, folder, "attention_signal_by_position")


def self_correction(res: dict[str, Any], folder: Path) -> Path:
    sc = res["self_correction"]
    sub = res["subspaces"].heads
    heads = list(res["subspaces"].heads)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(["clean", "first demo wrong", "last demo wrong"], [sc.clean, sc.first_wrong, sc.last_wrong], color=["C0", "C1", "C3"])
    axes[0].set_ylabel("exact-match accuracy")
    axes[0].set_ylim(0, 1)
    for head in heads:
        norms = sub[head].signal_norm_by_demo
        axes[1].plot(np.arange(1, len(norms) + 1), norms, marker="o",
                     label=f"head {head}, r(successive) = {sub[head].successive_signal_correlation:+.2f}")
    axes[1].set_xlabel("demonstration")
    axes[1].set_ylabel("extracted signal norm")
    axes[1].legend(fontsize=7)
    return save(fig, folder, "self_correction")


def task_vector_curve(res: dict[str, Any], folder: Path) -> Path:
    """Zero-shot accuracy with the task vector patched in at each layer's input, training and held-out tasks."""
    tv = res["task_vectors"]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(tv.layers, tv.train, marker="o", label="training k")
    ax.plot(tv.layers, tv.held_out, marker="s", ls="--", label="held-out k")
    ax.axhline(tv.zero_shot, color="grey", ls=":", label=f"zero-shot, unpatched ({tv.zero_shot:.2f})")
    ax.axhline(tv.few_shot, color="k", ls=":", lw=0.8, label=f"few-shot ({tv.few_shot:.2f})")
    ax.set_xticks(tv.layers)
    ax.set_xlabel("layer whose input is patched (final token)")
    ax.set_ylabel("zero-shot exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("task vectors by layer (Hendel et al.)", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, folder, "task_vectors_by_layer")


def clean_scan_figure(scan: CleanScan, folder: Path) -> Path:
    """Clean few-shot accuracy of a pretrained model per prompt format (lines) against the number of shots."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r.format for r in scan.rows.values()):
        rows = sorted((r for r in scan.rows.values() if r.format == name), key=lambda r: r.shots)
        ax.plot([r.shots for r in rows], [r.accuracy for r in rows], marker="o", label=name)
    ax.set_xlabel("demonstrations (shots)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("clean add-k accuracy by prompt format", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, folder, "clean_accuracy_by_format")


def plot_all(res: dict[str, Any], cfg: Any, folder: Path) -> list[Path]:
    """Every figure of the results at hand: the localisation's and subspaces' (when the model was localised) and the
    accuracy scan over prompt formats (pretrained models)."""
    figs = []
    if res.get("task_vectors") is not None:
        figs.append(task_vector_curve(res, folder))
    if "localisation" in res:
        figs += [mask_sorted(res, folder), accuracies(res, folder)]
        if res["subspaces"].heads:
            figs += [pca_variance(res, folder), task_means_scatter(res, folder), periodic_curves(res, folder), by_position(res, folder)]
        figs.append(self_correction(res, folder))
        if res.get("demo_patching") is not None and res["demo_patching"].patching is not None:
            dp = res["demo_patching"].patching
            figs += [patching_heatmap(dp, folder, "patching_demonstrations"),
                     save_view(patching_view(dp, "residual-stream patching of add-k prompts against the same inputs labelled "
                                             "by another k (click a layer)"), folder, "patching_demonstrations_live")]
    if res.get("clean_scan"):
        figs.append(clean_scan_figure(res["clean_scan"], folder))
    return figs
