"""Which heads carry add-k (Hu et al. 2025, section 3): function vectors, the sparse head mask, single-head
sufficiency (the recovery scan with its paired test), the main heads, and mean ablations.

Vocabulary: z_k[l, h] is head (l, h)'s z at the final token averaged over
prompts of task k; its *result* r_k[l, h] = z_k[l, h] @ W_O[l, h] lives in the
residual stream [D]. A function vector for task k under head mask M [L, H] is
FV_k(M) = sum_(l,h) M[l, h] r_k[l, h]. Shapes: K tasks, L layers, H heads,
E d_head, D d_model, N prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from iclab.analysis.addk.prompts import Prompt, correct, groups
from iclab.heads.base import HeadModel, Intervention
from iclab.results import Head
from iclab.progress import track

# ----------------------------------------------------------------------------- function vectors and the head mask


def task_results(model: HeadModel, z_mean: torch.Tensor) -> torch.Tensor:
    """[K, L, H, D]: task-mean head results r_k = z_k @ W_O."""
    return model.head_results(z_mean.permute(1, 0, 2, 3).to(model.device)).permute(1, 0, 2, 3).cpu()


def function_vectors(results: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[K, D]: FV_k(M) = sum_(l,h) M[l,h] r_k[l,h] for results [K, L, H, D], mask [L, H]."""
    return torch.einsum("klhd,lh->kd", results, mask)


def fv_injection(layer: int, fv: torch.Tensor, T: int) -> Intervention:
    """Hu et al.'s injection: the function vector(s) fv ([D] or [B, D]) added to the residual stream after ``layer``'s
    attention (``blocks.layer.hook_resid_mid`` in their ``train_matrix.py``), at the last prompt token only (their
    ``utils/intervene.py``); generated tokens are not touched."""
    return Intervention(add_layer=layer, add_site="mid", add_vector=fv, start=T - 1, stop=T)


def fv_intervention(results: torch.Tensor, mask: torch.Tensor, layer: int, ks: list[int]) -> Callable[[list[Prompt], int], Intervention]:
    """Inject each prompt's task FV as :func:`fv_injection` does."""
    index = {k: i for i, k in enumerate(ks)}
    fv = function_vectors(results, mask)

    def make(chunk: list[Prompt], T: int) -> Intervention:
        return fv_injection(layer, fv[[index[p.k] for p in chunk]], T)

    return make


@dataclass
class MaskFit:
    mask: torch.Tensor  # [L, H] in [0, 1]
    losses: list[float]  # mean training NLL + lambda |M|_1 per epoch


def optimise_mask(model: HeadModel, results: torch.Tensor, ks: list[int], prompts: list[Prompt], layer: int, g: torch.Generator,
                  lam: float = 0.05, lr: float = 0.01, epochs: int = 50, batch: int = 128) -> MaskFit:
    """Hu et al.'s sparse head mask: minimise NLL(answer | zero-shot prompt + FV_k(M) at ``layer``) + lam |M|_1
    with AdamW (betas 0.9, 0.98, no weight decay), then after every step a proximal L1 shrink and a clip to [0, 1].

    ``prompts`` are zero-shot prompts (BOS, x, arrow) with their answers (teacher forcing); the FV is injected as
    :func:`fv_injection` does. The NLL is summed over the answer's tokens and averaged over the batch, as the
    authors' ``compute_nll`` does (a mean over tokens would rescale lam for multi-token answers).
    """
    device = model.device
    index = {k: i for i, k in enumerate(ks)}
    R = results.to(device)
    M = torch.rand(model.n_layers, model.n_heads, generator=g).to(device).requires_grad_(True)
    opt = torch.optim.AdamW([M], lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    by_shape = groups(prompts)
    losses = []
    for _ in track(range(epochs), what="mask epochs"):
        total, count = 0.0, 0
        for (T, A), idx in by_shape.items():
            order = torch.randperm(len(idx), generator=g).tolist()
            for s in range(0, len(idx), batch):
                chunk = [prompts[idx[i]] for i in order[s : s + batch]]
                ids = torch.tensor([p.ids + p.answer for p in chunk], device=device)
                fv = torch.einsum("blhd,lh->bd", R[[index[p.k] for p in chunk]], M)
                logits = model.logits_grad(ids, fv_injection(layer, fv, T))
                nll = F.cross_entropy(logits[:, T - 1 : T - 1 + A].reshape(-1, logits.shape[-1]), ids[:, T:].reshape(-1),
                                      reduction="sum") / len(chunk)
                loss = nll + lam * M.abs().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    M.copy_((M.sign() * (M.abs() - lam * lr).clamp(min=0)).clamp(0, 1))
                total += float(loss.detach()) * len(chunk)
                count += len(chunk)
        losses.append(total / max(count, 1))
    return MaskFit(M.detach().cpu(), losses)


def largest_gap_set(mask: torch.Tensor) -> list[Head]:
    """Heads above the largest gap between consecutive sorted mask coefficients (the "selected" heads)."""
    flat = mask.flatten()
    order = torch.argsort(flat, descending=True)
    vals = flat[order]
    gaps = vals[:-1] - vals[1:]
    cut = int(torch.argmax(gaps)) + 1
    H = mask.shape[1]
    return [Head(int(i) // H, int(i) % H) for i in order[:cut]]


def benjamini_hochberg(p: list[float], q: float = 0.05) -> list[bool]:
    """Which hypotheses are rejected at false-discovery rate q."""
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p)
    passed = np.array(p)[order] <= q * np.arange(1, m + 1) / m
    k = int(np.max(np.nonzero(passed)[0])) + 1 if passed.any() else 0
    out = np.zeros(m, dtype=bool)
    out[order[:k]] = True
    return out.tolist()


# ----------------------------------------------------------------------------- single-head sufficiency (Hu et al.'s step 1)


@dataclass(frozen=True)
class RecoveryScan:
    """Per scanned head: ``outcomes`` [len(c_grid), N] bool (each zero-shot prompt right or wrong at each c) and the
    accuracy ``curves`` {c: accuracy}."""

    outcomes: dict[Head, np.ndarray]
    curves: dict[Head, dict[int, float]]
    c_grid: list[int]


def recovery_scan(model: HeadModel, results: torch.Tensor, selected: list[Head], ks: list[int],
                  zero_shot: list[Prompt], layer: int, c_grid: list[int]) -> RecoveryScan:
    """Hu et al.'s per-head recovery scan (their ``recovery.py``): for each selected head (l, h) and coefficient c,
    zero-shot prompts get FV_k(c) = c r_k[l, h] + sum_(selected (l', h') != (l, h)) mean_k r_k[l', h'] injected as
    :func:`fv_injection` does (the scaled head keeps its task mean, every other selected head sits at its mean over
    tasks; c = 0 is that head's leave-one-out baseline). results [K, L, H, D] task-mean head results."""
    index = {k: i for i, k in enumerate(ks)}
    mean_r = results.mean(0)  # [L, H, D]
    mean_fv = sum(mean_r[lh] for lh in selected)
    outcomes: dict[Head, np.ndarray] = {}
    curves: dict[Head, dict[int, float]] = {}
    for lh in track(selected, what="heads scanned"):
        rows = []
        for c in c_grid:
            fv = c * results[:, lh[0], lh[1]] + (mean_fv - mean_r[lh])  # [K, D]

            def make(chunk: list[Prompt], T: int, fv=fv) -> Intervention:
                return fv_injection(layer, fv[[index[p.k] for p in chunk]], T)

            rows.append(correct(model, zero_shot, make))
        outcomes[lh] = np.stack(rows)
        curves[lh] = {int(c): float(r.mean()) for c, r in zip(c_grid, rows)}
    return RecoveryScan(outcomes, curves, list(c_grid))


def mcnemar_one_sided(fixed: int, broken: int) -> float:
    """Exact one-sided McNemar: P[Binomial(fixed + broken, 1/2) >= fixed] (1 when there are no discordant pairs)."""
    n = fixed + broken
    return 1.0 if n == 0 else float(stats.binom.sf(fixed - 1, n, 0.5))


@dataclass(frozen=True)
class HeadTest:
    """One head's single-head sufficiency test: Bonferroni-corrected ``p``, its best coefficient ``c_star``, the
    prompts it ``fixed`` and ``broke`` there against c = 0, and whether Benjamini-Hochberg kept it (``significant``)."""

    p: float
    c_star: int
    fixed: int
    broken: int
    significant: bool = False


def paired_significance(outcomes: dict[Head, np.ndarray], c_grid: list[int], q: float = 0.05) -> dict[Head, HeadTest]:
    """Hu et al.'s ``paired_bh`` selector: per head and positive c, the one-sided McNemar test of c against c = 0 on
    the same examples (b fixed vs d broken); Bonferroni over the positive coefficients (p_head = min(1, m min_c p_c));
    Benjamini-Hochberg at FDR ``q`` across heads; a head is significant when rejected and b > d at its best c."""
    zero = c_grid.index(0)
    positive = [i for i, c in enumerate(c_grid) if c > 0]
    per_head: dict[Head, HeadTest] = {}
    for key, rows in outcomes.items():
        y0 = rows[zero]
        tests = []
        for i in positive:
            b, d = int(np.sum(rows[i] & ~y0)), int(np.sum(~rows[i] & y0))
            tests.append((mcnemar_one_sided(b, d), -(b - d), c_grid[i], b, d))
        p_min, neg_gain, c_star, b, d = min(tests)  # smallest p, then larger net gain, then smaller c
        per_head[key] = HeadTest(min(1.0, len(positive) * p_min), int(c_star), b, d)
    keys = list(per_head)
    rejected = benjamini_hochberg([per_head[k].p for k in keys], q)
    return {k: replace(per_head[k], significant=bool(r and per_head[k].fixed > per_head[k].broken)) for k, r in zip(keys, rejected)}


@dataclass(frozen=True)
class MainHeadRule:
    """The unified rule's outcome: the ``main`` heads (by gain), each scanned head's peak recovery ``gains``, the best
    gain and whether the rule ``applies`` (the model does the task and the best gain reaches the floor)."""

    main: list[Head]
    gains: dict[Head, float]
    best_gain: float
    applies: bool


def unified_main_heads(curves: dict[Head, dict[int, float]], clean_accuracy: float, beta: float = 0.25,
                       clean_min: float = 0.25, floor: float = 0.0) -> MainHeadRule:
    """Hu et al.'s ``unified`` v1 main-head rule (their defaults beta 1/4, clean_min 0.25, floor 0): when the model
    does the task (clean few-shot accuracy >= clean_min) and the best head's peak recovery gain (max over c of its
    accuracy minus its c = 0 accuracy) reaches ``floor``, a scanned head is main if its gain is at least ``beta`` of
    the best; ordered by gain. With floor 0 and no head recovering anything, every head with gain >= 0 passes (as
    in the authors' rule); ``best_gain`` says when that happened."""
    gains = {key: max(curve.values()) - curve[0] for key, curve in curves.items()}
    best = max(gains.values(), default=0.0)
    applies = clean_accuracy >= clean_min and best >= floor
    main = sorted((k for k, g in gains.items() if applies and g >= beta * best), key=lambda k: -gains[k])
    return MainHeadRule(main, gains, best, applies)


def ablate_only(z_mean: torch.Tensor, heads: list[Head], L: int, H: int) -> Callable[[list[Prompt], int], Intervention]:
    """Hu et al.'s five-shot necessity check (their ``icl_ablation.py``): only ``heads`` have their output at the
    final prompt token replaced by their mean over tasks (z_mean [K, L, H, E] averaged over K); every other head
    and position runs as usual."""
    replace = heads_mask(heads, L, H).bool()
    values = z_mean.mean(0)

    def make(chunk: list[Prompt], T: int) -> Intervention:
        return Intervention(replace_mask=replace, replace_z=values, start=T - 1, stop=T)

    return make


def heads_mask(heads: list[Head], L: int, H: int) -> torch.Tensor:
    m = torch.zeros(L, H)
    for layer, h in heads:
        m[layer, h] = 1.0
    return m


def mean_ablation(z_mean: torch.Tensor, keep: list[Head], L: int, H: int) -> Callable[[list[Prompt], int], Intervention]:
    """Every head not in ``keep`` has its z at the final prompt token (and generated tokens) replaced by its
    mean over tasks (z_mean [K, L, H, E] averaged over K)."""
    replace = ~heads_mask(keep, L, H).bool()
    values = z_mean.mean(0)

    def make(chunk: list[Prompt], T: int) -> Intervention:
        return Intervention(replace_mask=replace, replace_z=values, start=T - 1)

    return make
