"""Few-shot add-k, head by head (Hu et al. 2025), on any :class:`~iclab.heads.HeadModel`.

Vocabulary: z_k[l, h] is head (l, h)'s z at the final token averaged over
prompts of task k; its *result* r_k[l, h] = z_k[l, h] @ W_O[l, h] lives in the
residual stream [D]. A function vector for task k under head mask M [L, H] is
FV_k(M) = sum_(l,h) M[l, h] r_k[l, h]. Shapes: K tasks, L layers, H heads,
E d_head, D d_model, N prompts.

Prompts are text in the arrow template, encoded by the model's own tokenizer;
prompts of equal token length are batched together (no padding anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from iclab.analysis.stats import bootstrap_mean, pca
from iclab.heads.base import HeadModel, Intervention, greedy_generate
from iclab.results import Head
from iclab.tasks.addk import PROMPT_FORMATS, AddKConfig, PromptFormat, prompt_text, sample

ARROW = PROMPT_FORMATS["arrow"]


@dataclass
class Prompt:
    k: int
    xs: list[int]  # demonstrations' inputs then the query's
    ys: list[int]
    ids: list[int]  # the prompt, ending with the query's arrow
    answer: list[int]  # the answer's tokens as they follow the prompt
    labels: list[list[int]]  # token positions of each demonstration's label y_i


def encode_prompt(model: HeadModel, k: int, xs: list[int], ys: list[int], fmt: PromptFormat = ARROW) -> Prompt:
    """Tokens of the prompt, of its answer, and of each demonstration's label (by encoding prefixes).

    The answer's tokens are those the prompt's text + the answer encodes to after the prompt's own tokens (a
    number may be several tokens); where the tokenizer merges across that boundary, the answer is encoded alone.
    """
    text = prompt_text(xs, ys, fmt)
    ids = model.encode(text)
    full = model.encode(text + str(ys[-1]))
    if full[: len(ids)] != ids:
        full = ids + model.encode(str(ys[-1]), bos=False)
    labels = []
    for i in range(len(xs) - 1):
        done = "".join(fmt.demo(x, y) for x, y in zip(xs[:i], ys[:i]))
        before = len(model.encode(done + fmt.query(xs[i])))
        through = len(model.encode(done + fmt.query(xs[i]) + str(ys[i])))
        labels.append(list(range(before, through)))
    return Prompt(k, xs, ys, ids, full[len(ids):], labels)


def make_prompts(model: HeadModel, cfg: AddKConfig, ks: list[int], per_task: int, shots: int, g: torch.Generator,
                 fmt: PromptFormat = ARROW) -> list[Prompt]:
    out = []
    for k in ks:
        xs, ys = sample(cfg, torch.full((per_task,), k), shots, g)
        out += [encode_prompt(model, k, x, y, fmt) for x, y in zip(xs.tolist(), ys.tolist())]
    return out


def wrong_label_prompts(model: HeadModel, prompts: list[Prompt], which: int, offset: int, hi: int,
                        fmt: PromptFormat = ARROW) -> list[Prompt]:
    """The same prompts with demonstration ``which``'s label off by ``offset`` (minus ``offset`` where plus would pass
    ``hi``, the largest number the tokenizer knows); each keeps its right answer."""
    out = []
    for p in prompts:
        ys = list(p.ys)
        ys[which] += offset if ys[which] + offset <= hi else -offset
        q = encode_prompt(model, p.k, p.xs, ys, fmt)
        q.answer = p.answer  # the right answer is still x_q + k
        out.append(q)
    return out


def groups(prompts: list[Prompt]) -> dict[tuple[int, int], list[int]]:
    """Indices of prompts with the same (prompt length, answer length): they batch without padding."""
    out: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(prompts):
        out.setdefault((len(p.ids), len(p.answer)), []).append(i)
    return out


# ----------------------------------------------------------------------------- task means and accuracy


@torch.no_grad()
def task_mean_z(model: HeadModel, prompts: list[Prompt], ks: list[int], batch: int = 64) -> torch.Tensor:
    """[K, L, H, E]: every head's z at the final prompt token, averaged over each task's prompts."""
    sums = torch.zeros(len(ks), model.n_layers, model.n_heads, model.d_head)
    counts = torch.zeros(len(ks))
    index = {k: i for i, k in enumerate(ks)}
    for (_, _), idx in groups(prompts).items():
        for s in range(0, len(idx), batch):
            chunk = [prompts[i] for i in idx[s : s + batch]]
            ids = torch.tensor([p.ids for p in chunk])
            with model.capture_z(positions=-1) as cache:
                model.logits(ids)
            z = cache.z[:, :, 0].cpu()  # [L, B, H, E]
            for j, p in enumerate(chunk):
                sums[index[p.k]] += z[:, j]
                counts[index[p.k]] += 1
    return sums / counts.clamp(min=1).view(-1, 1, 1, 1)


@torch.no_grad()
def correct(model: HeadModel, prompts: list[Prompt], intervention: Callable[[list[Prompt], int], Intervention | None] | None = None,
            batch: int = 64) -> np.ndarray:
    """[N] bool: greedy answers equal the answer tokens exactly. ``intervention(chunk, prompt_len)`` gives the
    intervention for a batch (e.g. a per-task function vector)."""
    out = np.zeros(len(prompts), dtype=bool)
    for (T, A), idx in groups(prompts).items():
        for s in range(0, len(idx), batch):
            chunk = [prompts[i] for i in idx[s : s + batch]]
            ids = torch.tensor([p.ids for p in chunk])
            iv = intervention(chunk, T) if intervention else None
            gen = greedy_generate(model, ids, A, iv).cpu()
            want = torch.tensor([p.answer for p in chunk])
            out[idx[s : s + batch]] = (gen == want).all(dim=1).numpy()
    return out


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
    for _ in range(epochs):
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
    for lh in selected:
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


# ----------------------------------------------------------------------------- subspaces


@dataclass
class HeadPCA:
    components: np.ndarray  # [r, D] principal directions
    coords: np.ndarray  # [K, r] centred task means in those directions
    explained: np.ndarray  # [r] variance ratios
    n_95: int  # components needed for 95% of the variance


def head_pca(X: np.ndarray) -> HeadPCA:
    """PCA of one head's task-mean results X [K, D] (rows in order of k)."""
    p = pca(X)
    return HeadPCA(p.components, p.coords, p.explained, p.n_for(0.95))


@dataclass(frozen=True)
class PeriodicFeature:
    """One of Hu et al.'s six periodic features of the task k: cos(2 pi k / ``period`` + theta), the sine where ``sine``;
    the phase theta is fitted where ``searched``, else 0."""

    period: int
    searched: bool
    sine: bool = False

    def wave(self, k: np.ndarray, theta: np.ndarray | float = 0.0) -> np.ndarray:
        """The feature at tasks k [K] (theta [P, 1] gives [P, K])."""
        return np.cos(2 * np.pi * np.asarray(k, dtype=np.float64) / self.period + theta - (np.pi / 2 if self.sine else 0.0))


# The one table of the periodic features, in the authors' order and with their names (utils/mod_vectors): magnitude
# (periods 50, 25) and the unit digit (periods 2, 5, 10 as cosine and sine).
PERIODIC = {"mod50": PeriodicFeature(50, True), "mod2": PeriodicFeature(2, False), "mod5": PeriodicFeature(5, True),
            "mod10c": PeriodicFeature(10, False), "mod10s": PeriodicFeature(10, False, sine=True), "mod25": PeriodicFeature(25, True)}
UNIT_TARGETS, MAGNITUDE_TARGETS = ("mod2", "mod5", "mod10c", "mod10s"), ("mod50", "mod25")


@dataclass(frozen=True)
class FeatureFit:
    """One coordinate's least-squares fit against one periodic feature: ``r2`` and the phase ``theta``."""

    r2: float
    theta: float


def periodic_fit(k: np.ndarray, y: np.ndarray, step: float = 0.01) -> dict[str, FeatureFit]:
    """Least-squares fit of a centred coordinate y [K] against each periodic feature of k [K]
    (a cos(2 pi k / T + theta), theta by grid search with ``step`` rad where searched). R^2 and phase per feature."""
    y = y - y.mean()
    ss = float(np.sum(y**2))
    out = {}
    for name, feature in PERIODIC.items():
        thetas = np.arange(0, 2 * np.pi, step) if feature.searched else np.array([0.0])
        feats = feature.wave(k[None, :], thetas[:, None])  # [P, K]
        feats = feats - feats.mean(1, keepdims=True)
        norms = np.sum(feats**2, axis=1)
        coef = feats @ y / np.maximum(norms, 1e-12)
        resid = np.sum((y[None, :] - coef[:, None] * feats) ** 2, axis=1)
        best = int(np.argmin(resid))
        out[name] = FeatureFit(float(1 - resid[best] / ss) if ss > 0 else 0.0, float(thetas[best]))
    return out


# ----------------------------------------------------------------------------- aggregation / extraction


@dataclass
class Extraction:
    identity_error: float  # max |U^T h - sum_t alpha_t U^T O V z_t| over prompts, relative to |U^T h|
    attention_label_share: float  # attention at the final token on demonstrations' label tokens
    signal_label_share: float  # share of the extracted-signal norm sum_t |alpha_t U^T O v_t| from label tokens
    signals: np.ndarray  # [N, n_demos, r] per-demonstration signals s_i = U^T O v at each label (summed over its tokens)
    position_attention: np.ndarray  # [T] mean attention by position
    position_signal: np.ndarray  # [T] mean extracted-signal norm by position
    signals_full: np.ndarray  # [N, n_demos, D] the alpha-free signals O v at each label, in the residual stream
    label_attention: np.ndarray  # [N, n_demos] the final token's attention on each demonstration's label
    peaking_ratio: float  # mean attention per label token / mean attention per other position (the authors' ratio)
    output: np.ndarray  # [N, D] the head's output at the final token, z O


@torch.no_grad()
def extraction(model: HeadModel, layer: int, head: int, U: np.ndarray, prompts: list[Prompt]) -> Extraction:
    """Check U^T h = sum_t alpha_t U^T O V z_t on real forward passes of head (layer, head) at the final token
    and read the signal extracted from each demonstration at its label tokens. U [r, D] (rows: directions).
    A label of several tokens contributes the sum of its tokens' signals and of its tokens' attention."""
    W_O = model.W_O(layer)[head].float().cpu()  # [E, D]
    Ut = torch.tensor(U, dtype=torch.float32)  # [r, D]
    errs, att_share, sig_share, signals, pos_att, pos_sig = [], [], [], [], [], []
    full, label_alpha, per_label, per_other, outputs = [], [], [], [], []
    for (T, _), idx in groups(prompts).items():
        chunk = [prompts[i] for i in idx]
        ids = torch.tensor([p.ids for p in chunk])
        alpha = model.patterns(ids)[layer, :, head, -1].cpu()  # [B, S]
        v = model.values(ids)[layer, :, :, head].cpu()  # [B, S, E]
        with model.capture_z(positions=-1) as cache:
            model.logits(ids)
        z = cache.z[layer, :, 0, head].cpu()  # [B, E]
        out = v @ W_O  # [B, S, D]: O v_t
        proj = out @ Ut.T  # [B, S, r]: U^T O v_t
        lhs = z @ W_O @ Ut.T  # [B, r]
        rhs = torch.einsum("bs,bsr->br", alpha, proj)
        errs.append(float(((lhs - rhs).norm(dim=-1) / lhs.norm(dim=-1).clamp(min=1e-12)).max()))
        contrib = (alpha.unsqueeze(-1) * proj).norm(dim=-1)  # [B, S]
        for j, p in enumerate(chunk):
            lab = [t for pos in p.labels for t in pos]
            att_share.append(float(alpha[j, lab].sum()))
            sig_share.append(float(contrib[j, lab].sum() / contrib[j].sum().clamp(min=1e-12)))
            signals.append(np.stack([proj[j, pos].sum(0).numpy() for pos in p.labels]))
            full.append(np.stack([out[j, pos].sum(0).numpy() for pos in p.labels]))
            label_alpha.append(np.array([float(alpha[j, pos].sum()) for pos in p.labels]))
            other = np.ones(alpha.shape[1], dtype=bool)
            other[lab] = False
            per_label.append(float(alpha[j, lab].sum()) / len(p.labels))
            per_other.append(float(alpha[j, torch.from_numpy(other)].mean()))
        outputs.append((z @ W_O).numpy())
        if not pos_att or len(pos_att[0]) == T:
            pos_att.append(alpha.mean(0).numpy())
            pos_sig.append(contrib.mean(0).numpy())
    back = np.argsort(np.concatenate(list(groups(prompts).values())))  # gathered group by group: back to prompt order
    return Extraction(max(errs), float(np.mean(att_share)), float(np.mean(sig_share)), np.stack(signals)[back],
                      np.mean(pos_att, axis=0), np.mean(pos_sig, axis=0), np.stack(full)[back], np.stack(label_alpha)[back],
                      float(np.mean(per_label) / max(np.mean(per_other), 1e-12)), np.concatenate(outputs)[back])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis (0 where either side is zero)."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


@dataclass(frozen=True)
class MeanCI:
    """A mean over prompts with its 95% bootstrap interval ``ci`` and the number ``n`` of finite values."""

    mean: float
    ci: tuple[float, float]
    n: int


def _mean_ci(values: np.ndarray, g: torch.Generator) -> MeanCI:
    """Mean over prompts and its 95% bootstrap interval (non-finite values dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return MeanCI(float("nan"), (float("nan"), float("nan")), 0)
    mean, low, high = bootstrap_mean(v, g)
    return MeanCI(float(mean), (float(low), float(high)), int(v.size))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True)
class SignalRouting:
    """:func:`signal_routing`'s readings, each a :class:`MeanCI` over prompts."""

    peaking_ratio: float
    signal_cosine: MeanCI
    ondemo_cosine: MeanCI
    routing: MeanCI
    routing_null: MeanCI
    weighting_gain: MeanCI
    weighting_gain_null: MeanCI


def signal_routing(ex: Extraction, task_means: np.ndarray, subspace: np.ndarray, seed: int = 0, shuffles: int = 30) -> SignalRouting:
    """Hu et al.'s section-5 readings of one head's per-demonstration signals (their ``utils/signals.py``).

    task_means [N, D]: the head's task-mean result h_k for each prompt's task; subspace [r, D]: the head's top
    principal directions of {h_k}. Per prompt: ``signal_cosine``, the alpha-free cosine of each demonstration's
    signal O v_(y_i) with h_k inside the subspace (mean over demonstrations); ``ondemo_cosine``, the same in the
    full residual stream; ``routing``, Pearson(alpha_i, cos(s_i, h_k)) over the demonstrations (does attention
    prefer the better-aligned labels?) with its null from permuting alpha among them; ``weighting_gain``,
    cos(sum_i alpha~_i s_i, h_k) - cos(mean_i s_i, h_k), alpha~ renormalised over the labels, with the same null.
    Means over prompts with 95% bootstrap intervals; ``peaking_ratio`` as measured in :func:`extraction`.
    """
    g, perm = torch.Generator().manual_seed(seed), np.random.default_rng(seed)  # bootstrap / permutation streams
    s, a = ex.signals_full, ex.label_attention  # [N, n, D], [N, n]
    hk = task_means[:, None, :]
    sub_cos = _cosines(s @ subspace.T, (task_means @ subspace.T)[:, None, :]).mean(axis=1)
    cos_i = _cosines(s, hk)  # [N, n]
    w = a / np.maximum(a.sum(axis=1, keepdims=True), 1e-12)
    uniform = _cosines(s.mean(axis=1), task_means)
    weighted = _cosines((w[:, :, None] * s).sum(axis=1), task_means)
    routing, routing_null, gain_null = [], [], []
    for j in range(len(s)):
        routing.append(_pearson(a[j], cos_i[j]))
        perms = [perm.permutation(a.shape[1]) for _ in range(shuffles)]
        routing_null.append(np.nanmean([_pearson(a[j][p], cos_i[j]) for p in perms]))
        gain_null.append(np.mean([_cosines((w[j][p][:, None] * s[j]).sum(0), task_means[j]) - uniform[j] for p in perms]))
    return SignalRouting(float(ex.peaking_ratio), _mean_ci(sub_cos, g), _mean_ci(cos_i.mean(axis=1), g), _mean_ci(np.array(routing), g),
                         _mean_ci(np.array(routing_null), g), _mean_ci(weighted - uniform, g), _mean_ci(np.array(gain_null), g))


@dataclass(frozen=True)
class WrongDemonstration:
    """:func:`wrong_demonstration`'s readings, clean vs with the demonstration wrong."""

    signal_cosine_clean: float
    signal_cosine_wrong: float
    attention_share_clean: float
    attention_share_wrong: float
    output_cosine_clean: float
    output_cosine_wrong: float


def wrong_demonstration(clean: Extraction, wrong: Extraction, task_means: np.ndarray, which: int = 0) -> WrongDemonstration:
    """How one head handles a wrong demonstration (its label changed), read through the extraction identity on the
    same prompts clean and with demonstration ``which`` wrong: that demonstration's signal alignment cos(s, h_k)
    and its share of the label attention, clean vs wrong, and the alignment of the head's whole output at the
    final token with h_k, clean vs wrong. Later demonstrations suppress the wrong signal when its attention
    share falls and the head's output stays aligned."""
    share = lambda ex: ex.label_attention[:, which] / np.maximum(ex.label_attention.sum(axis=1), 1e-12)  # noqa: E731
    return WrongDemonstration(
        float(_cosines(clean.signals_full[:, which], task_means).mean()), float(_cosines(wrong.signals_full[:, which], task_means).mean()),
        float(share(clean).mean()), float(share(wrong).mean()),
        float(_cosines(clean.output, task_means).mean()), float(_cosines(wrong.output, task_means).mean()))


def successive_correlation(signals: np.ndarray, ks: np.ndarray) -> float:
    """Correlation between successive demonstrations' signal deviations (from their task's mean signal).

    signals [N, n_demos, r], ks [N]. Negative: an error carried by one demonstration is offset by the next.
    """
    dev = signals.copy()
    for k in np.unique(ks):
        sel = ks == k
        dev[sel] -= signals[sel].mean(axis=(0, 1), keepdims=True)
    a, b = dev[:, :-1].reshape(-1), dev[:, 1:].reshape(-1)
    return float(np.corrcoef(a, b)[0, 1])


# Hu et al.'s six periodic targets (their step2/periodic.py, fit_mod_vectors): name -> (period, phase searched).
# Columns 1-4 (periods 2, 5, 10) span the unit-digit subspace; 0 and 5 (periods 50, 25) the magnitude subspace.
@dataclass
class ModFit:
    r2: dict[str, float]  # per target: R^2 of its least-squares reconstruction from the top PCs jointly
    theta: dict[str, float]  # phase of each target (0 where not searched; sin for mod10s)
    mod_vectors: np.ndarray  # [D, 6] the targets' directions in activation space (PC basis @ weights)


def mod_vector_fit(X: np.ndarray, k: np.ndarray, n_pcs: int = 6, step: float = 0.01) -> ModFit:
    """The authors' joint periodic fit of one head's task means X [K, D] (rows in order of k [K]): project on the top
    ``n_pcs`` principal directions, choose each searched phase against all those coordinates at once, then regress
    every target on all of them jointly (least squares). A cos / sin pair spread over rotated PCs is found, which a
    fit of one PC against one cosine misses (:func:`periodic_fit`, kept as iclab's per-direction view)."""
    p = pca(X)
    basis = p.components[:n_pcs].T  # [D, r]
    coords = np.asarray(X, dtype=np.float64) @ basis
    coords = coords - coords.mean(0)
    k = np.asarray(k, dtype=np.float64)
    targets, thetas = [], {}
    for name, feature in PERIODIC.items():
        if not feature.searched:
            t = feature.wave(k)
            thetas[name] = 0.0
        else:
            best, best_theta = np.inf, 0.0
            for theta in np.arange(0, 2 * np.pi, step):
                f = feature.wave(k, theta)
                f = f - f.mean()
                resid = f - coords @ np.linalg.lstsq(coords, f, rcond=None)[0]
                r = float(resid @ resid / max(f @ f, 1e-300))
                if r < best:
                    best, best_theta = r, theta
            t = feature.wave(k, best_theta)
            thetas[name] = float(best_theta)
        targets.append(t)
    T = np.stack(targets, axis=1)  # [K, 6]
    W = np.linalg.lstsq(coords, T, rcond=None)[0]  # [r, 6]
    ss_res = ((T - coords @ W) ** 2).sum(0)
    ss_tot = ((T - T.mean(0)) ** 2).sum(0)
    r2 = 1 - ss_res / np.where(ss_tot == 0, 1.0, ss_tot)
    return ModFit({n: float(v) for n, v in zip(PERIODIC, r2)}, thetas, basis @ W)


# ----------------------------------------------------------------------------- the projection causal test

# Hu et al.'s arms (their ``run_projection_causal.py``): column subsets of the mod-vector matrix.
PROJECTION_SUBSPACES = {"parity": ("mod2",), "unit": UNIT_TARGETS, "magnitude": MAGNITUDE_TARGETS}


def projection_basis(mod_vectors: np.ndarray, subspace: str, variant: str) -> np.ndarray:
    """Orthonormal basis [D, r] of one arm. mod_vectors [D, 6] in PERIODIC order. ``onto``: the span of the
    subspace's columns; ``out``: the rest of the six-dimensional span (its complement inside the span)."""
    M = np.asarray(mod_vectors, dtype=np.float64)
    cols = [list(PERIODIC).index(name) for name in PROJECTION_SUBSPACES[subspace]]
    onto, _ = np.linalg.qr(M[:, cols])
    if variant == "onto":
        return onto
    if variant != "out":
        raise ValueError(f"variant must be 'onto' or 'out', got {variant!r}")
    span, _ = np.linalg.qr(M)
    rest = span - onto @ (onto.T @ span)  # the span with the subspace removed
    U, sv, _ = np.linalg.svd(rest, full_matrices=False)
    return U[:, : int(np.sum(sv > 1e-8 * max(sv.max(), 1e-300)))]


def projected_fv(results: torch.Tensor, head: Head, others: list[Head], basis: np.ndarray,
                 c: float) -> torch.Tensor:
    """[K, D]: FV_k = c ((r_k - mu) B B^T + mu) + sum over the other selected heads of their mean mu', with r_k the
    head's task-mean result, mu its mean over tasks (the authors' projection arm); basis None: no projection."""
    r = results[:, head[0], head[1]].double()  # [K, D]
    mu = r.mean(0)
    centred = r - mu
    if basis is not None:
        B = torch.from_numpy(basis)
        centred = centred @ B @ B.T
    rest = sum((results[:, lh[0], lh[1]].double().mean(0) for lh in others), torch.zeros_like(mu))
    return (c * (centred + mu) + rest).float()
