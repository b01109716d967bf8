"""Hu et al. (2025)'s add-k pipeline on any HeadModel, step by step: the head-set search (mask, selected /
significant / main heads, necessity), the selected heads' subspaces with the aggregation / extraction identity, and
the projection causal test. Each step is a function of the model, its task means, prompts and settings; the building
blocks are in :mod:`iclab.analysis.addk`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from iclab.analysis import addk as A
from iclab.analysis.addk import FeatureFit, HeadTest, MainHeadRule, Prompt, SignalRouting, WrongDemonstration
from iclab.analysis.patching import Patching, patch
from iclab.config import require, require_positive
from iclab.heads import HeadModel
from iclab.results import Head, Result
from iclab.tasks.base import part_generator


@dataclass(frozen=True)
class HeadSetSearch:
    """The head-set search's settings: the mask's sparsity ``lam``, Adam ``lr``, ``epochs`` and ``batch``, fitted on
    ``fit_share`` of the zero-shot prompts (the rest test it); the recovery scan's coefficients 0..``c_max``;
    Benjamini-Hochberg ``q``; the main heads' share ``main_fraction`` of the best head's gain, the rule applying when
    few-shot accuracy reaches ``main_clean_min`` (Hu et al.'s ``clean_min``; the study's own gate on whether to
    localise at all is its ``min_clean_accuracy``); ``random_sets`` random head sets of the main set's size for the
    necessity check."""

    lam: float = 0.05
    lr: float = 0.01
    epochs: int = 50
    batch: int = 128
    fit_share: float = 0.8
    c_max: int = 20
    q: float = 0.05
    main_fraction: float = 0.25
    main_clean_min: float = 0.25
    random_sets: int = 3

    def __post_init__(self) -> None:
        require_positive(self, "lam", "lr", "epochs", "batch")
        require(0 < self.fit_share < 1, "fit_share", f"must lie in (0, 1), got {self.fit_share}")
        require(0 < self.q < 1, "q", f"must lie in (0, 1), got {self.q}")
        require(0 < self.main_fraction <= 1, "main_fraction", f"must lie in (0, 1], got {self.main_fraction}")
        require(0 <= self.main_clean_min <= 1, "main_clean_min", f"must lie in [0, 1], got {self.main_clean_min}")


@dataclass(frozen=True)
class HeadSetAccuracy:
    """Exact-match accuracies of the head sets: zero-shot without and with each set's function vector (None: the set
    is empty), few-shot clean, with the main heads mean-ablated, and with each random set of that size ablated."""

    zero_shot: float
    selected_fv: float
    significant_fv: float | None
    main_fv: float | None
    few_shot_clean: float
    few_shot_main_ablated: float | None
    few_shot_random_ablated: list[float]


@dataclass(frozen=True)
class Localisation(Result):
    """Hu et al.'s head-set search on one model: the mask [L][H] and its training losses, the selected (largest gap),
    significant (single-head sufficiency) and main heads (the unified rule), each scanned head's test and recovery
    curve {c: accuracy}, and the accuracies; ``layer``: where function vectors are injected."""

    SCHEMA: ClassVar[int] = 1

    layer: int
    mask: list[list[float]]
    mask_losses: list[float]
    selected: list[Head]
    significant: list[Head]
    significance: dict[Head, HeadTest]
    recovery_curves: dict[Head, dict[int, float]]
    main: list[Head]
    main_rule: MainHeadRule
    accuracy: HeadSetAccuracy

    @property
    def n_heads(self) -> int:
        return len(self.mask) * len(self.mask[0])


def localise(model: HeadModel, z_mean: torch.Tensor, zero: list[Prompt], few: list[Prompt], layer: int, search: HeadSetSearch,
             seed: int) -> Localisation:
    """Hu et al.'s head-set search. ``z_mean`` [K, L, H, E]: task means for k = 1..K; ``zero``: zero-shot prompts
    (``search.fit_share`` fit the mask, the rest test it); ``few``: few-shot prompts for the necessity check;
    ``layer``: where function vectors are injected."""
    ks_all = list(range(1, z_mean.shape[0] + 1))
    L, H = model.n_layers, model.n_heads
    results = A.task_results(model, z_mean)  # [K, L, H, D]
    order = list(range(len(zero)))
    random.Random(seed).shuffle(order)
    n_fit = int(search.fit_share * len(zero))
    fit, test = [zero[i] for i in order[:n_fit]], [zero[i] for i in order[n_fit:]]
    mf = A.optimise_mask(model, results, ks_all, fit, layer, part_generator(seed, "mask"),
                         search.lam, search.lr, search.epochs, search.batch)
    selected = A.largest_gap_set(mf.mask)

    def fv_correct(heads: list[Head], use_mask: bool = False) -> np.ndarray:
        m = mf.mask * A.heads_mask(heads, L, H) if use_mask else A.heads_mask(heads, L, H)
        return A.correct(model, test, A.fv_intervention(results, m, layer, ks_all))

    with_selected = fv_correct(selected, use_mask=True)
    # significant heads: Hu et al.'s single-head sufficiency (recovery scan, paired McNemar, Bonferroni over c, BH)
    c_grid = list(range(0, search.c_max + 1))
    scan = A.recovery_scan(model, results, selected, ks_all, test, layer, c_grid)
    sig = A.paired_significance(scan.outcomes, c_grid, search.q)
    significant = [h for h in selected if sig[h].significant]
    # main heads: their unified rule on the recovery curves, then necessity by ablating only those heads in few-shot prompts
    clean_few = float(A.correct(model, few).mean())
    rule = A.unified_main_heads(scan.curves, clean_few, beta=search.main_fraction, clean_min=search.main_clean_min)
    main = rule.main

    def ablated_accuracy(heads: list[Head]) -> float:
        return float(A.correct(model, few, A.ablate_only(z_mean, heads, L, H)).mean())

    pool = [Head(layer_, h) for layer_ in range(L) for h in range(H) if (layer_, h) not in main]
    rng = random.Random(seed)
    random_sets = [rng.sample(pool, len(main)) for _ in range(search.random_sets)] if main and len(pool) >= len(main) else []
    no_mask = A.correct(model, test).mean()
    accuracy = HeadSetAccuracy(
        zero_shot=float(no_mask), selected_fv=float(with_selected.mean()),
        significant_fv=float(fv_correct(significant).mean()) if significant else None,
        main_fv=float(fv_correct(main).mean()) if main else None,
        few_shot_clean=clean_few, few_shot_main_ablated=ablated_accuracy(main) if main else None,
        few_shot_random_ablated=[ablated_accuracy(r) for r in random_sets])
    return Localisation(layer, mf.mask.tolist(), [float(x) for x in mf.losses], selected, significant, sig, scan.curves, main, rule,
                        accuracy)


@dataclass(frozen=True)
class JointFit:
    """The authors' joint periodic fit of one head's task means: R^2 (theirs, and with centred targets) and phase per
    mod target."""

    r2: dict[str, float]
    r2_centred: dict[str, float]
    theta: dict[str, float]


@dataclass(frozen=True)
class HeadSubspace:
    """One head's task-mean subspace and its extraction readings: PCA ``explained`` variance and ``pcs_to_95``, the
    first three PCA ``coords`` [K][3] of its task means, the one-PC-one-feature ``periodic`` fits {PC: {feature: fit}},
    the joint ``mod_fit``, the aggregation / extraction identity's relative error, the label shares of its attention
    and its extracted signal, both by token position, the successive demonstrations' signal correlation and norms,
    the section-5 ``signal_routing`` and the readings with the first demonstration's label wrong."""

    explained: list[float]
    pcs_to_95: int
    coords: list[list[float]]
    periodic: dict[str, dict[str, FeatureFit]]
    mod_fit: JointFit
    identity_relative_error: float
    attention_label_share: float
    signal_label_share: float
    position_attention: list[float]
    position_signal: list[float]
    successive_signal_correlation: float
    signal_norm_by_demo: list[float]
    signal_routing: SignalRouting
    wrong_first_demo: WrongDemonstration

    def best_fits(self) -> dict[str, tuple[str, FeatureFit]]:
        """Per principal component: its best-fitting periodic feature and the fit."""
        return {pc: max(fits.items(), key=lambda kv: kv[1].r2) for pc, fits in self.periodic.items()}


@dataclass(frozen=True)
class Subspaces(Result):
    """:class:`HeadSubspace` of each analysed head."""

    SCHEMA: ClassVar[int] = 2  # 2: the joint fit's R^2 with centred targets

    heads: dict[Head, HeadSubspace]


def subspaces(model: HeadModel, z_mean: torch.Tensor, heads: list[Head], few: list[Prompt], first_wrong: list[Prompt],
              seed: int) -> Subspaces:
    """Per head: PCA and periodic fits of its task means (``z_mean`` [K, L, H, E], k = 1..K), the authors' joint
    mod-vector fit, and the aggregation / extraction identity on the few-shot prompts ``few`` (label shares,
    per-demonstration signals, their routing) and on the same prompts with the first label wrong."""
    results = A.task_results(model, z_mean).numpy()  # [K, L, H, D]
    k = np.arange(1, z_mean.shape[0] + 1)
    ks = np.array([p.k for p in few])
    out: dict[Head, HeadSubspace] = {}
    for head in heads:
        layer, h = head
        pca = A.head_pca(results[:, layer, h])
        r = max(2, pca.n_95)
        joint = A.mod_vector_fit(results[:, layer, h], k)
        ex = A.extraction(model, layer, h, pca.components[:r], few)
        means = results[ks - 1, layer, h]  # [N, D]: h_k of each prompt's task
        wrong = A.extraction(model, layer, h, pca.components[:r], first_wrong)
        out[head] = HeadSubspace(
            explained=pca.explained.tolist(), pcs_to_95=int(pca.n_95), coords=pca.coords[:, :3].tolist(),
            periodic={f"PC{i + 1}": A.periodic_fit(k, pca.coords[:, i]) for i in range(min(6, pca.coords.shape[1]))},
            mod_fit=JointFit(joint.r2, joint.r2_centred, joint.theta), identity_relative_error=float(ex.identity_error),
            attention_label_share=float(ex.attention_label_share), signal_label_share=float(ex.signal_label_share),
            position_attention=ex.position_attention.tolist(), position_signal=ex.position_signal.tolist(),
            successive_signal_correlation=float(A.successive_correlation(ex.signals, ks)),
            signal_norm_by_demo=np.linalg.norm(ex.signals, axis=-1).mean(0).tolist(),
            signal_routing=A.signal_routing(ex, means, pca.components[:6], seed=seed),
            wrong_first_demo=A.wrong_demonstration(ex, wrong, means, 0))
    return Subspaces(out)


@dataclass(frozen=True)
class HeadProjection:
    """One head's projection test: its best recovery coefficient ``c_star`` and the zero-shot accuracy of each arm."""

    c_star: float
    accuracy: dict[str, float]


@dataclass(frozen=True)
class Projection(Result):
    """:class:`HeadProjection` of each analysed head."""

    SCHEMA: ClassVar[int] = 1

    heads: dict[Head, HeadProjection]


def projection(model: HeadModel, z_mean: torch.Tensor, loc: Localisation, heads: list[Head], zero: list[Prompt],
               layer: int) -> Projection:
    """Hu et al.'s projection causal test: each head's task-mean result at its best recovery coefficient c*, kept
    whole, projected onto its parity / unit-digit / magnitude mod vectors, or onto the rest of its six-dimensional
    periodic span, injected after ``layer`` into the zero-shot prompts ``zero`` with every other selected head
    at its mean (``loc``: the localisation); accuracy of each arm. A head outside the significance scan keeps c = 1."""
    results = A.task_results(model, z_mean)  # [K, L, H, D]
    ks_all = list(range(1, z_mean.shape[0] + 1))
    index = {k: i for i, k in enumerate(ks_all)}
    k = np.arange(1, z_mean.shape[0] + 1)
    out: dict[Head, HeadProjection] = {}
    for head in heads:
        c = float(loc.significance[head].c_star) if head in loc.significance else 1.0
        fit = A.mod_vector_fit(results[:, head.layer, head.head].numpy(), k)
        others = [h for h in loc.selected if h != head]
        arms = {"whole": None}
        arms.update({f"{variant}_{sub}": A.projection_basis(fit.mod_vectors, sub, variant)
                     for variant in ("onto", "out") for sub in A.PROJECTION_SUBSPACES})
        row: dict[str, float] = {}
        for name, basis in arms.items():
            fv = A.projected_fv(results, head, others, basis, c)

            def make(chunk, T, fv=fv):
                return A.fv_injection(layer, fv[[index[p.k] for p in chunk]], T)

            row[name] = float(A.correct(model, zero, make).mean())
        out[head] = HeadProjection(c, row)
    return Projection(out)


@dataclass(frozen=True)
class CleanAccuracy(Result):
    """Few-shot exact-match accuracy on the training tasks and on the held-out tasks."""

    SCHEMA: ClassVar[int] = 1

    train_tasks: float
    held_out_tasks: float


@dataclass(frozen=True)
class FormatAccuracy:
    """Clean accuracy of one prompt format at one number of shots, overall and per task k, with the answers' mean
    length in tokens."""

    format: str
    shots: int
    accuracy: float
    per_k: dict[int, float]
    answer_tokens: float


@dataclass(frozen=True)
class CleanScan(Result):
    """:class:`FormatAccuracy` per ``"<format>/<shots>"``."""

    SCHEMA: ClassVar[int] = 1

    rows: dict[str, FormatAccuracy]

    def best(self) -> FormatAccuracy:
        return max(self.rows.values(), key=lambda r: r.accuracy)


def format_accuracy(model: HeadModel, name: str, shots: int, prompts: list[Prompt], ks: list[int]) -> FormatAccuracy:
    """Greedy-decoded exact match of ``prompts`` (one format, ``shots`` demonstrations, tasks ``ks``)."""
    ok = A.correct(model, prompts)
    return FormatAccuracy(name, shots, float(ok.mean()), {k: float(ok[[p.k == k for p in prompts]].mean()) for k in ks},
                          float(np.mean([len(p.answer) for p in prompts])))


@dataclass(frozen=True)
class SelfCorrection(Result):
    """Few-shot accuracy clean, with the first demonstration's label wrong, and with the last one's wrong."""

    SCHEMA: ClassVar[int] = 1

    clean: float
    first_wrong: float
    last_wrong: float


@dataclass(frozen=True)
class DemoPatching(Result):
    """Residual-stream patching of add-k prompts against the same inputs labelled by another k (denoising, logit
    difference between the two tasks' answers): ``patching`` [L + 1, T] over the prompts of one layout, and the
    positions of the demonstrations' labels (``label_positions``) and of their other tokens (``other_positions``:
    inputs, arrows, separators) in it."""

    SCHEMA: ClassVar[int] = 1

    patching: Patching | None  # None: no prompt kept its token count under another task's labels
    label_positions: list[int]
    other_positions: list[int]

    def label_share(self) -> list[float]:
        """Per layer input (not the final residual): the label positions' share of the absolute normalised effect over
        the demonstrations' positions (the query and the final token left out)."""
        eff = np.abs(np.nan_to_num(self.patching.normalised[:-1]))
        labels, inputs = eff[:, self.label_positions].sum(1), eff[:, self.other_positions].sum(1)
        return [float(a / (a + b)) if a + b > 1e-12 else float("nan") for a, b in zip(labels, inputs)]


def demo_patching(model: HeadModel, prompts: list[A.Prompt], ks: list[int], hi: int, fmt) -> DemoPatching:
    """Patch the prompts of the most common layout (token count and label positions: positions must line up to be
    averaged); no patching when no prompt keeps its token count under another task's labels."""
    layouts: dict[tuple, list[tuple[A.Prompt, Any]]] = {}
    for prompt in prompts:
        for pair in A.other_task_pairs(model, [prompt], ks, hi, fmt):
            layouts.setdefault((len(prompt.ids), tuple(map(tuple, prompt.labels))), []).append((prompt, pair))
    if not layouts:  # nothing lines up position by position (every other-task labelling changed the token count)
        return DemoPatching(None, [], [])
    group = max(layouts.values(), key=len)
    first = group[0][0]
    labels = sorted(t for span in first.labels for t in span)
    demo_end = first.labels[-1][-1] + 1
    others = [t for t in range(1 if model.bos_id is not None else 0, demo_end) if t not in labels]
    return DemoPatching(patch(model, [pair for _, pair in group], "resid", "logit_diff"), labels, others)
