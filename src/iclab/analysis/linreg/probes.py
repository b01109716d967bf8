"""Attention-pooled probes of intermediate quantities (Akyürek et al. 2023, section 5).

A probe reads one layer's hidden states h_t [T, D] of a prompt prefix, pools
them with a learned attention, alpha = softmax_t(u . h_t), v = sum_t alpha_t W_v h_t,
and maps v to the target with a linear map or a 2-layer GeLU MLP. Probes for
all layers are trained at once (parameters carry a leading layer axis) with
full-batch Adam, and scored by R^2 on held-out prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from iclab.results import Result

ProbeKind = Literal["linear", "mlp"]


class PooledProbe(nn.Module):
    """Probes for Lp layers at once: features [Lp, B, T, D] -> predictions [Lp, B, K]."""

    def __init__(self, n_layers: int, d_model: int, d_target: int, kind: ProbeKind, hidden: int, generator: torch.Generator):
        super().__init__()

        def param(*shape: int, scale: float) -> nn.Parameter:
            return nn.Parameter(scale * torch.randn(*shape, generator=generator))

        self.kind = kind
        self.u = param(n_layers, d_model, scale=0.0)
        self.W_v = param(n_layers, d_model, d_model, scale=d_model**-0.5)
        width = hidden if kind == "mlp" else d_target
        self.W_1 = param(n_layers, d_model, width, scale=d_model**-0.5)
        self.b_1 = param(n_layers, 1, width, scale=0.0)
        if kind == "mlp":
            self.W_2 = param(n_layers, hidden, d_target, scale=hidden**-0.5)
            self.b_2 = param(n_layers, 1, d_target, scale=0.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        alpha = torch.einsum("lbtd,ld->lbt", h, self.u).softmax(dim=-1)
        v = torch.einsum("lbt,lbtd,lde->lbe", alpha, h, self.W_v)
        out = v @ self.W_1 + self.b_1
        if self.kind == "mlp":
            out = F.gelu(out) @ self.W_2 + self.b_2
        return out


@dataclass
class ProbeResult:
    r2: list[float]  # held-out R^2 per layer (0 = embeddings, l = after block l)
    sq_err: torch.Tensor  # [Lp, B_test] squared error per held-out prompt, summed over target coordinates
    sst: float  # total sum of squares of the held-out targets (R^2 = 1 - sq_err.sum(-1) / sst)


def total_sum_of_squares(target: torch.Tensor) -> torch.Tensor:
    """SST of targets [B, K] over all coordinates."""
    return (target - target.mean(0, keepdim=True)).pow(2).sum()


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """R^2 over all target coordinates: 1 - SSE / SST, per leading layer. pred, target [Lp, B, K] / [B, K]."""
    return 1 - (pred - target).pow(2).sum(dim=(-2, -1)) / total_sum_of_squares(target)


def score(pred: torch.Tensor, target: torch.Tensor) -> ProbeResult:
    """Held-out scores of predictions ``pred`` [Lp, B, K] of targets ``target`` [B, K]."""
    return ProbeResult(r2=r2_score(pred, target).tolist(), sq_err=(pred - target).pow(2).sum(-1),
                       sst=float(total_sum_of_squares(target)))


def r2_difference(a: ProbeResult, b: ProbeResult, layer_a: int, layer_b: int) -> tuple[float, float]:
    """R^2 of probe ``a`` at ``layer_a`` minus R^2 of probe ``b`` at ``layer_b`` (same held-out prompts), and the
    standard error of that difference over prompts: both R^2 share SST, so the difference is a mean of paired
    per-prompt error differences, sum_b (e_b - e_a) / SST, with standard error sqrt(B) std(e_b - e_a) / SST."""
    diff = (b.sq_err[layer_b] - a.sq_err[layer_a]).double()
    n = diff.numel()
    return float(diff.sum() / a.sst), float(n**0.5 * diff.std() / a.sst)


def train_probes(
    train_h: torch.Tensor,
    train_y: torch.Tensor,
    test_h: torch.Tensor,
    test_y: torch.Tensor,
    kind: ProbeKind,
    generator: torch.Generator,
    hidden: int = 512,
    steps: int = 300,
    lr: float = 3e-3,
) -> ProbeResult:
    """Fit one probe per layer. h [Lp, B, T, D] hidden states, y [B, K] targets (standardised inside)."""
    mean, std = train_y.mean(0), train_y.std(0).clamp(min=1e-8)
    feat_scale = train_h.std().clamp(min=1e-8)
    h_tr, h_te = train_h / feat_scale, test_h / feat_scale
    y_tr = (train_y - mean) / std
    probe = PooledProbe(train_h.shape[0], train_h.shape[-1], train_y.shape[-1], kind, hidden, generator)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        loss = (probe(h_tr) - y_tr).pow(2).mean(dim=(1, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = probe(h_te) * std + mean
    return score(pred, test_y)


def probe_targets(xs: torch.Tensor, ys: torch.Tensor, n: int, lam: float = 0.1) -> dict[str, torch.Tensor]:
    """Targets computed from the first n pairs: X^T y [B, d] (the one-step-GD construction's intermediate),
    w_OLS [B, d] (minimum norm), and the Sherman-Morrison construction's state (X^T X + lam I)^-1, its upper
    triangle [B, d (d + 1) / 2]."""
    from iclab.learners import ols_weights

    X, y = xs[:, :n].to(torch.float64), ys[:, :n].to(torch.float64)
    xty = torch.einsum("bnd,bn->bd", X, y)
    w_ols = ols_weights(xs[:, : n + 1], ys[:, : n + 1])[:, n]
    d = xs.shape[-1]
    inv = torch.linalg.inv(X.transpose(1, 2) @ X + lam * torch.eye(d, dtype=torch.float64))
    upper = torch.triu_indices(d, d)
    return {"XTy": xty.float(), "w_ols": w_ols.float(), "inv_gram": inv[:, upper[0], upper[1]].float()}


@torch.no_grad()
def hidden_states(learner, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """A trained regressor's residual stream (``learner``: a :class:`iclab.learners.ModelLearner`) on prompts ``xs``
    [B, n, d], ``ys`` [B, n]: before block 0 and after every block, [L+1, B, 2n, D]."""
    from iclab.models import run_with_cache

    model = learner.model
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    _, cache = run_with_cache(model, learner.task.encode(xs, ys), names=names)
    return torch.stack([cache[n] for n in names])


@dataclass(frozen=True)
class ProbeFit:
    """Probes of one target at one prefix length: held-out R^2 per layer of each probe kind ("linear", "mlp"), and
    [best MLP R^2 - best linear R^2, its standard error over the held-out prompts] (:func:`r2_difference`)."""

    r2: dict[str, list[float]]
    mlp_minus_linear: tuple[float, float]


@dataclass(frozen=True)
class ProbeTable:
    """:class:`ProbeFit` per target ("XTy", "w_ols", "inv_gram") and prefix length n."""

    fits: dict[str, dict[int, ProbeFit]]

    def r2(self, target: str, kind: str, n: int) -> list[float]:
        return self.fits[target][n].r2[kind]


@dataclass(frozen=True)
class ProbeComparison(Result):
    """Probe tables of the probed model and of the control (trained on one fixed task)."""

    SCHEMA: ClassVar[int] = 1

    model: ProbeTable
    control: ProbeTable


def probe_layers(hidden: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, prefixes: tuple[int, ...], n_train: int,
                 generator: torch.Generator, *, inverse_lambda: float = 0.1, width: int = 128, steps: int = 200) -> ProbeTable:
    """Held-out R^2 per layer of linear and MLP probes for every target of :func:`probe_targets`, at every prefix
    length n of ``prefixes`` (the probe reads the first 2n positions of ``hidden`` [Lp, B, 2N, D]); the first
    ``n_train`` prompts train, the rest test."""
    out: dict[str, dict[int, ProbeFit]] = {}
    for n in prefixes:
        h = hidden[:, :, : 2 * n]
        for target, y in probe_targets(xs, ys, n, inverse_lambda).items():
            fits = {kind: train_probes(h[:, :n_train], y[:n_train], h[:, n_train:], y[n_train:], kind, generator, hidden=width,
                                       steps=steps) for kind in ("linear", "mlp")}
            best = {kind: max(range(len(r.r2)), key=r.r2.__getitem__) for kind, r in fits.items()}
            out.setdefault(target, {})[n] = ProbeFit({kind: r.r2 for kind, r in fits.items()},
                                                     r2_difference(fits["mlp"], fits["linear"], best["mlp"], best["linear"]))
    return ProbeTable(out)
