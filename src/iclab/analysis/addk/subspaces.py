"""What the add-k heads carry (Hu et al. 2025, sections 4-5 and appendix F): the task means' PCA and periodic
features, the aggregation / extraction identity with its per-demonstration signals, and the projection causal test.

Vocabulary: z_k[l, h] is head (l, h)'s z at the final token averaged over
prompts of task k; its *result* r_k[l, h] = z_k[l, h] @ W_O[l, h] lives in the
residual stream [D]. A function vector for task k under head mask M [L, H] is
FV_k(M) = sum_(l,h) M[l, h] r_k[l, h]. Shapes: K tasks, L layers, H heads,
E d_head, D d_model, N prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclab.analysis.addk.prompts import Prompt, groups
from iclab.analysis.stats import bootstrap_mean, pca
from iclab.heads.base import HeadModel
from iclab.results import Head

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
    r2: dict[str, float]  # per target: R^2 of its least-squares reconstruction from the top PCs jointly (the authors')
    r2_centred: dict[str, float]  # the same with each target centred over the tasks (iclab's; see mod_vector_fit)
    theta: dict[str, float]  # phase of each target (0 where not searched; sin for mod10s)
    mod_vectors: np.ndarray  # [D, 6] the targets' directions in activation space (PC basis @ weights)


def mod_vector_fit(X: np.ndarray, k: np.ndarray, n_pcs: int = 6, step: float = 0.01) -> ModFit:
    """The authors' joint periodic fit of one head's task means X [K, D] (rows in order of k [K]): project on the top
    ``n_pcs`` principal directions, choose each searched phase against all those coordinates at once, then regress
    every target on all of them jointly (least squares). A cos / sin pair spread over rotated PCs is found, which a
    fit of one PC against one cosine misses (:func:`periodic_fit`, kept as iclab's per-direction view).

    ``r2`` is the authors' R^2: their targets keep their mean over the tasks while the coordinates are centred, so a
    feature whose mean over k = 1..K is not 0 (mod50 and mod25 at most phases) cannot reach 1 even when it is exactly
    in the head (a planted mod50 scored -0.35). ``r2_centred`` centres the targets too (a fit with an intercept):
    iclab's verdicts use it, and report both."""
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
    Tc = T - T.mean(0)  # centred targets: the same regression with an intercept
    res_c = ((Tc - coords @ np.linalg.lstsq(coords, Tc, rcond=None)[0]) ** 2).sum(0)
    r2_c = 1 - res_c / np.where(ss_tot == 0, 1.0, ss_tot)
    return ModFit({n: float(v) for n, v in zip(PERIODIC, r2)}, {n: float(v) for n, v in zip(PERIODIC, r2_c)}, thetas, basis @ W)


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
