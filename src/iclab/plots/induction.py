"""Figures of the induction study (from the results of :mod:`iclab.studies.induction`)."""

from __future__ import annotations

import html

from pathlib import Path
from typing import Any

import numpy as np

from iclab.analysis.circuits import Mechanism
from iclab.analysis.induction.runs import Attribution, AttentionExample, Trajectory
from iclab.io import atomic_write_text
from iclab.plots import plt, save
from iclab.plots.views import attention_view, save_view
from iclab.results import Head


def _tokens(traj: Trajectory) -> np.ndarray:
    return np.maximum(np.array(traj.tokens, dtype=float), 1.0)  # step 0 drawn at 1 token on the log axis


def icl_vs_tokens(res: dict[str, Any], folder: Path) -> Path:
    models = list(res["trajectories"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        traj = res["trajectories"][m]
        t = _tokens(traj)
        ax.plot(t, traj.icl_score("mixture"), label="held-out mixture")
        ax.plot(t, traj.icl_score("natural"), label="held-out stdlib text", alpha=0.8)
        w = res["phase_change"][m].window
        if w is not None:
            ax.axvspan(w.start_tokens, w.end_tokens, color="orange", alpha=0.25, label="phase change")
        ax.set_xscale("log")
        ax.set_title(f"{m} (lower: more in-context learning)" if ax is axes[0][0] else m, fontsize=9)
        ax.set_xlabel("training tokens")
    axes[0][0].set_ylabel("ICL score (nats)")
    axes[0][0].legend(fontsize=7)
    return save(fig, folder, "icl_score_vs_tokens")


def loss_curves(res: dict[str, Any], folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m, traj in res["trajectories"].items():
        c = traj.train_curve
        tokens = np.array(c.step, dtype=float) * traj.tokens_per_step
        (line,) = ax.plot(tokens, c.loss, lw=0.6, alpha=0.5)
        ax.plot(_tokens(traj), traj.loss("mixture"), lw=1.5, color=line.get_color(), label=f"{m} (held-out)")
        bump = res["phase_change"][m].bump_tokens
        if bump is not None:
            ax.axvspan(bump[0], bump[1], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats)")
    ax.set_title("Training loss (thin) and held-out loss at snapshots (shaded: bump, the non-convex stretch)", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, folder, "training_loss_bump")


def head_scores_over_training(res: dict[str, Any], folder: Path) -> Path:
    models = list(res["trajectories"])
    fig, axes = plt.subplots(2, len(models), figsize=(3.2 * len(models), 5.6), sharex="col", squeeze=False)
    for col, m in enumerate(models):
        traj = res["trajectories"][m]
        t = _tokens(traj)
        for row, key in enumerate(("prefix_matching", "copying")):
            scores = traj.head_scores(key)  # [S, L, H]
            ax = axes[row][col]
            for layer in range(scores.shape[1]):
                for h in range(scores.shape[2]):
                    ax.plot(t, scores[:, layer, h], lw=1, color=f"C{layer}", alpha=0.8, label=f"layer {layer}" if h == 0 else None)
            ax.set_xscale("log")
            if col == 0:
                ax.set_ylabel(key.replace("_", "-") + " score")
            if row == 0:
                ax.set_title(m, fontsize=10)
            else:
                ax.set_xlabel("training tokens")
        axes[0][col].legend(fontsize=6)
    return save(fig, folder, "head_scores_over_training")


def scatter(res: dict[str, Any], folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for i, (m, traj) in enumerate(res["trajectories"].items()):
        pm, cp = traj.final("prefix_matching"), traj.final("copying")
        ax.scatter(cp.ravel(), pm.ravel(), color=f"C{i}", label=m, s=22)
    ax.set_xlabel("copying score")
    ax.set_ylabel("prefix-matching score")
    ax.set_xlim(-1.05, 1.05)
    ax.set_title("Final heads: induction heads sit top right", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, folder, "prefix_matching_vs_copying")


def pca_trajectory(res: dict[str, Any], folder: Path) -> Path:
    models = list(res["trajectories"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models):
        pca = res["phase_change"][m].pca
        xy = np.array(pca.coords)
        t = np.log10(_tokens(res["trajectories"][m]))
        ax.plot(xy[:, 0], xy[:, 1], color="grey", lw=0.6)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=t, cmap="viridis", s=10)
        ax.set_title(f"{m} ({pca.explained[0]:.0%}, {pca.explained[1]:.0%})", fontsize=9)
        ax.set_xlabel("PC 1")
    axes[0][0].set_ylabel("PC 2")
    fig.colorbar(sc, ax=axes[0][-1], label="log10 tokens")
    return save(fig, folder, "per_token_loss_pca")


def ablation_bars(res: dict[str, Any], folder: Path) -> Path:
    models = list(res["ablations"])
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.4), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        abl = res["ablations"][m]
        induction = {h.head for h in res["heads"][m]}
        width, heads = 0.27, []
        for k, kind in enumerate(("zero", "mean", "pattern_preserving")):
            change = np.array(abl.per_head[kind]) - abl.clean  # [L, H]
            heads = [Head(layer, h) for layer in range(change.shape[0]) for h in range(change.shape[1])]
            ax.bar(np.arange(len(heads)) + (k - 1) * width, change.ravel(), width, label=kind.replace("_", "-"))
        for i, head in enumerate(heads):
            if head in induction:
                ax.axvspan(i - 0.45, i + 0.45, color="orange", alpha=0.2)
        labels = [str(h) for h in heads]
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_title(m, fontsize=10)
    axes[0][0].set_ylabel("change in ICL score when ablated (nats)")
    axes[0][0].legend(fontsize=6)
    return save(fig, folder, "ablation_icl_change")


def attention_example(res: dict[str, Any], folder: Path) -> Path:
    ex: AttentionExample = res["example"]
    pattern = np.array(ex.pattern)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title(f"{ex.model} head {ex.head} on repeated random tokens", fontsize=9)
    plt.colorbar(im, ax=ax)
    return save(fig, folder, "top_induction_head_attention")


def k_composition(res: dict[str, Any], folder: Path) -> Path | None:
    """K-composition of every earlier-layer head into every later-layer head, per multi-layer model."""
    mech: dict[str, Mechanism] = res.get("mechanism", {})
    if not mech:
        return None
    fig, axes = plt.subplots(1, len(mech), figsize=(4.2 * len(mech), 3.8), squeeze=False)
    for ax, (m, v) in zip(axes[0], mech.items()):
        k = np.array(v.k_composition)  # [L, H, L, H]
        L, H = k.shape[:2]
        grid = k.reshape(L * H, L * H)[: (L - 1) * H, H:]  # rows: heads of layers 0..L-2; columns: heads of layers 1..L-1
        im = ax.imshow(grid, cmap="viridis", vmin=0)
        ax.set_yticks(range((L - 1) * H), [str(Head(i // H, i % H)) for i in range((L - 1) * H)], fontsize=6)
        ax.set_xticks(range((L - 1) * H), [str(Head(1 + i // H, i % H)) for i in range((L - 1) * H)], fontsize=6, rotation=90)
        ax.set_ylabel("earlier head (writes)")
        ax.set_xlabel("later head (its keys read)")
        ax.set_title(f"{m}: K-composition (chance {v.chance:.2f})", fontsize=9)
        plt.colorbar(im, ax=ax)
    return save(fig, folder, "k_composition")


def token_loss_attribution(res: dict[str, Any], folder: Path) -> Path | None:
    """The held-out text with each token coloured by its loss change across the phase change (an HTML fragment the
    report embeds): green where the loss fell, red where it rose; hover for the numbers."""
    top: Attribution | None = res.get("attribution")
    if not top:
        return None
    a = top.natural
    delta = np.array(a.delta)
    proj = np.array(a.projection)
    scale = float(np.abs(delta).max()) or 1.0
    rows, k = [], 0
    for seq in a.tokens:
        spans = [f'<span class="tok">{html.escape(_byte(seq[0]))}</span>']
        for token in seq[1:]:
            d, p, pred = delta[k], proj[k], a.predictable[k]
            strength = min(abs(d) / scale, 1.0)
            colour = f"rgba(0,150,60,{strength:.2f})" if d < 0 else f"rgba(210,40,40,{strength:.2f})"
            mark = "text-decoration:underline;" if pred else ""
            spans.append(f'<span class="tok" style="background:{colour};{mark}" title="loss change {d:+.2f} nats, along the '
                         f'phase-change direction {p:+.3f}{"; predictable by induction" if pred else ""}">{html.escape(_byte(token))}</span>')
            k += 1
        rows.append(f'<pre class="attribution">{"".join(spans)}</pre>')
    head = (f'<p>{html.escape(top.model)}: per-token loss change from snapshot {top.before_step} to {top.after_step} '
            '(around the phase-change window) on held-out stdlib text. Green: the loss fell; red: it rose; underlined: the '
            'token\'s bigram occurred earlier (an induction head can predict it).</p>')
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "token_loss_attribution.html"
    atomic_write_text(path, '<div class="attribution-figure"><style>pre.attribution{white-space:pre-wrap;font-size:12px;'
                            'line-height:1.6}</style>' + head + "".join(rows) + "</div>")
    return path


def _byte(token: int) -> str:
    """A byte token as readable text (newlines kept, other control bytes as \\xNN)."""
    if token in (9, 10) or 32 <= token < 127:
        return chr(token)
    return f"\\x{token:02x}"


def attention_live(res: dict[str, Any], folder: Path) -> Path | None:
    """The report's interactive view of every head of the example's model on a repeated random sequence."""
    if "attention" not in res:
        return None
    m, seen = res["attention"]
    view = attention_view(seen.tokens, seen.patterns, f"{m}: every head on random tokens repeated (hover a token, click a "
                          "head)", {"prefix matching": seen.prefix_matching, "previous token": seen.previous_token},
                          {"loss (nats)": seen.loss})
    return save_view(view, folder, "attention_live")


def llc_curves(res: dict[str, Any], cfg: Any, folder: Path) -> Path | None:
    from iclab.plots.llc import study_llc_figure

    curves = {k[4:]: v for k, v in res.items() if k.startswith("llc_") and k != "llc_heads"}
    if not curves:
        return None
    windows = {m: (None if res["phase_change"][m].window is None else
                   (res["phase_change"][m].window.start_tokens, res["phase_change"][m].window.end_tokens)) for m in curves}
    induction = {str(h.head) for h in res["heads"].get(cfg.llc.head_model, [])}
    return study_llc_figure(curves, windows, res.get("llc_heads"), induction, folder)


def plot_all(res: dict[str, Any], cfg: Any, folder: Path) -> list[Path]:
    extra = [p for p in (k_composition(res, folder), token_loss_attribution(res, folder), attention_live(res, folder),
                         llc_curves(res, cfg, folder)) if p is not None]
    return extra + [
        icl_vs_tokens(res, folder),
        loss_curves(res, folder),
        head_scores_over_training(res, folder),
        scatter(res, folder),
        pca_trajectory(res, folder),
        ablation_bars(res, folder),
        attention_example(res, folder),
    ]
