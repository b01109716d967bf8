"""Hu et al. (2025)'s add-k pipeline on any HeadModel, step by step: the head-set search (mask, selected /
significant / main heads, necessity), the selected heads' subspaces with the aggregation / extraction identity, and
the projection causal test. Each step is a function of the model, its task means, prompts and settings; the building
blocks are in :mod:`iclab.analysis.addk`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iclab.analysis import addk as A
from iclab.analysis.addk import Prompt
from iclab.config import require, require_positive
from iclab.heads import HeadModel
from iclab.tasks.base import part_generator


@dataclass(frozen=True)
class HeadSetSearch:
    """The head-set search's settings: the mask's sparsity ``lam``, Adam ``lr``, ``epochs`` and ``batch``; the recovery
    scan's coefficients 0..``c_max``; Benjamini-Hochberg ``q``; the main heads' share ``main_fraction`` of the best
    head's gain; ``random_sets`` random head sets of the main set's size for the necessity check."""

    lam: float = 0.05
    lr: float = 0.01
    epochs: int = 50
    batch: int = 128
    c_max: int = 20
    q: float = 0.05
    main_fraction: float = 0.25
    random_sets: int = 3

    def __post_init__(self) -> None:
        require_positive(self, "lam", "lr", "epochs", "batch")
        require(0 < self.q < 1, "q", f"must lie in (0, 1), got {self.q}")
        require(0 < self.main_fraction <= 1, "main_fraction", f"must lie in (0, 1], got {self.main_fraction}")


def localise(model: HeadModel, z_mean: torch.Tensor, zero: list[Prompt], few: list[Prompt], layer: int, search: HeadSetSearch,
             seed: int) -> dict[str, Any]:
    """Hu et al.'s head-set search. ``z_mean`` [K, L, H, E]: task means for k = 1..K; ``zero``: zero-shot prompts (80%
    fit the mask, 20% test it); ``few``: few-shot prompts for the necessity check; ``layer``: where function vectors
    are injected. Returns the mask, the selected / significant / main heads and every accuracy."""
    ks_all = list(range(1, z_mean.shape[0] + 1))
    L, H = model.n_layers, model.n_heads
    results = A.task_results(model, z_mean)  # [K, L, H, D]
    order = list(range(len(zero)))
    random.Random(seed).shuffle(order)
    n_fit = int(0.8 * len(zero))
    fit, test = [zero[i] for i in order[:n_fit]], [zero[i] for i in order[n_fit:]]
    mf = A.optimise_mask(model, results, ks_all, fit, layer, part_generator(seed, "mask"),
                         search.lam, search.lr, search.epochs, search.batch)
    selected = A.largest_gap_set(mf.mask)

    def fv_correct(heads: list[tuple[int, int]], use_mask: bool = False) -> np.ndarray:
        m = mf.mask * A.heads_mask(heads, L, H) if use_mask else A.heads_mask(heads, L, H)
        return A.correct(model, test, A.fv_intervention(results, m, layer, ks_all))

    with_selected = fv_correct(selected, use_mask=True)
    # significant heads: Hu et al.'s single-head sufficiency (recovery scan, paired McNemar, Bonferroni over c, BH)
    c_grid = list(range(0, search.c_max + 1))
    scan = A.recovery_scan(model, results, selected, ks_all, test, layer, c_grid)
    sig = A.paired_significance(scan["outcomes"], c_grid, search.q)
    significant = [h for h in selected if sig[f"{h[0]}:{h[1]}"]["significant"]]
    # main heads: their unified rule on the recovery curves, then necessity by ablating only those heads in few-shot prompts
    clean_few = float(A.correct(model, few).mean())
    rule = A.unified_main_heads(scan["curves"], clean_few, beta=search.main_fraction)
    main = [tuple(h) for h in rule["main"]]

    def ablated_accuracy(heads: list[tuple[int, int]]) -> float:
        return float(A.correct(model, few, A.ablate_only(z_mean, heads, L, H)).mean())

    pool = [(layer_, h) for layer_ in range(L) for h in range(H) if (layer_, h) not in main]
    rng = random.Random(seed)
    random_sets = [rng.sample(pool, len(main)) for _ in range(search.random_sets)] if main and len(pool) >= len(main) else []
    no_mask = A.correct(model, test).mean()
    return {
        "layer": layer,
        "mask": mf.mask.tolist(),
        "mask_losses": mf.losses,
        "selected": [list(h) for h in selected],
        "significant": [list(h) for h in significant],
        "significance": sig,
        "recovery_curves": scan["curves"],
        "main": [list(h) for h in main],
        "main_rule": {k: rule[k] for k in ("gains", "best_gain", "applies")},
        "accuracy": {
            "zero_shot": float(no_mask),
            "selected_fv": float(with_selected.mean()),
            "significant_fv": float(fv_correct(significant).mean()) if significant else None,
            "main_fv": float(fv_correct(main).mean()) if main else None,
            "few_shot_clean": clean_few,
            "few_shot_main_ablated": ablated_accuracy(main) if main else None,
            "few_shot_random_ablated": [ablated_accuracy(r) for r in random_sets],
        },
    }


def subspaces(model: HeadModel, z_mean: torch.Tensor, heads: list[list[int]], few: list[Prompt], first_wrong: list[Prompt],
              seed: int) -> dict[str, Any]:
    """Per head (``heads``: [layer, head] pairs): PCA and periodic fits of its task means (``z_mean`` [K, L, H, E], k =
    1..K), the authors' joint mod-vector fit, and the aggregation / extraction identity on the few-shot prompts ``few``
    (label shares, per-demonstration signals, their routing) and on the same prompts with the first label wrong."""
    results = A.task_results(model, z_mean).numpy()  # [K, L, H, D]
    k = np.arange(1, z_mean.shape[0] + 1)
    ks = np.array([p.k for p in few])
    out: dict[str, Any] = {}
    for layer, h in heads:
        pca = A.head_pca(results[:, layer, h])
        r = max(2, pca.n_95)
        fits = {f"PC{i + 1}": A.periodic_fit(k, pca.coords[:, i]) for i in range(min(6, pca.coords.shape[1]))}
        joint = A.mod_vector_fit(results[:, layer, h], k)
        ex = A.extraction(model, layer, h, pca.components[:r], few)
        means = results[ks - 1, layer, h]  # [N, D]: h_k of each prompt's task
        wrong = A.extraction(model, layer, h, pca.components[:r], first_wrong)
        out[f"{layer}.{h}"] = {
            "explained": pca.explained.tolist(),
            "pcs_to_95": pca.n_95,
            "coords": pca.coords[:, :3].tolist(),
            "periodic": fits,
            "mod_fit": {"r2": joint.r2, "theta": joint.theta},
            "identity_relative_error": ex.identity_error,
            "attention_label_share": ex.attention_label_share,
            "signal_label_share": ex.signal_label_share,
            "position_attention": ex.position_attention.tolist(),
            "position_signal": ex.position_signal.tolist(),
            "successive_signal_correlation": A.successive_correlation(ex.signals, ks),
            "signal_norm_by_demo": np.linalg.norm(ex.signals, axis=-1).mean(0).tolist(),
            "signal_routing": A.signal_routing(ex, means, pca.components[:6], seed=seed),
            "wrong_first_demo": A.wrong_demonstration(ex, wrong, means, 0),
        }
    return out


def projection(model: HeadModel, z_mean: torch.Tensor, loc: dict[str, Any], heads: list[list[int]], zero: list[Prompt],
               layer: int) -> dict[str, Any]:
    """Hu et al.'s projection causal test: each head's task-mean result at its best recovery coefficient c*, kept
    whole, projected onto its parity / unit-digit / magnitude mod vectors, or onto the rest of its six-dimensional
    periodic span, injected after ``layer`` into the zero-shot prompts ``zero`` with every other selected head
    at its mean (``loc``: the localisation's result); accuracy of each arm."""
    results = A.task_results(model, z_mean)  # [K, L, H, D]
    ks_all = list(range(1, z_mean.shape[0] + 1))
    index = {k: i for i, k in enumerate(ks_all)}
    selected = [tuple(h) for h in loc["selected"]]
    k = np.arange(1, z_mean.shape[0] + 1)
    out: dict[str, Any] = {}
    for lh in heads:
        head = tuple(lh)
        c = float(loc.get("significance", {}).get(f"{head[0]}:{head[1]}", {}).get("c_star", 1))
        fit = A.mod_vector_fit(results[:, head[0], head[1]].numpy(), k)
        others = [h for h in selected if h != head]
        arms = {"whole": None}
        arms.update({f"{variant}_{sub}": A.projection_basis(fit.mod_vectors, sub, variant)
                     for variant in ("onto", "out") for sub in A.PROJECTION_SUBSPACES})
        row: dict[str, float] = {}
        for name, basis in arms.items():
            fv = A.projected_fv(results, head, others, basis, c)

            def make(chunk, T, fv=fv):
                return A.fv_injection(layer, fv[[index[p.k] for p in chunk]], T)

            row[name] = float(A.correct(model, zero, make).mean())
        out[f"{head[0]}.{head[1]}"] = {"c_star": c, "accuracy": row}
    return out
