"""The local learning coefficient (LLC; Lau et al. 2023, arXiv 2308.12108) by SGLD around given weights w*.

The estimator of Lau et al., as the ``devinterp`` package computes it:

    LLC = n beta * (E_w[L_m(w)] - L_n(w*)),

the expectation over draws of SGLD chains that sample the localised, tempered posterior
exp(-n beta L_n(w) - gamma / 2 |w - w*|^2), each step

    w <- w - eps / 2 * (n beta * grad L_m(w) + gamma * (w - w*)) + sqrt(eps) * N(0, 1),

with L_m a minibatch's mean loss (its expectation L_n, the mean loss over the n fixed samples). ``nbeta`` defaults to
m / log m for minibatch size m (devinterp's default, Lau et al.'s beta* = 1 / log n at the minibatch's n). L_n(w*) is
the loss at w* over every sample; each draw's loss is the minibatch loss of the step that draws it.

Restrictions (Wang et al. 2024, "refined LLC"): ``masks`` limits the sampled weights (one head, one layer, the
embedding), a loss function limited to chosen positions or tokens limits the data. The answer for a regular model
is d/2 (d the sampled weights); for a singular one, less.

Diagnostics (:class:`ChainCheck`): each chain's loss trace; a chain that diverged (a non-finite loss, or an estimate
above d, twice the regular maximum d/2) or drifted after burn-in (the last quarter of its draws away from the first
by more than ``drift`` standard deviations of its draws), a negative estimate (w* not at a local minimum) and chains
that disagree (Gelman-Rubin R-hat of the draws' losses above ``max_rhat``) each give a warning in the result.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from iclab.config import require, require_positive
from iclab.errors import IclabError
from iclab.progress import track
from iclab.results import Result

Masks = dict[str, "torch.Tensor | None"]  # parameter name -> 0/1 mask of its shape (None: all of it)
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, indices of a minibatch [m]) -> scalar mean loss


@dataclass(frozen=True)
class SGLDSettings:
    """The sampler's settings (Lau et al.'s names): ``step_size`` epsilon, ``localization`` gamma, ``nbeta`` n beta (None:
    batch_size / log(batch_size)), chains, ``burnin`` steps dropped, ``draws`` kept (one per step), minibatch size, and
    ``workers``: processes running chains at once."""

    step_size: float = 1e-4
    localization: float = 100.0
    nbeta: float | None = None
    chains: int = 4
    burnin: int = 100
    draws: int = 200
    batch_size: int = 64
    seed: int = 0
    workers: int = 1  # processes running chains at once (1: in this process)

    def __post_init__(self) -> None:
        require_positive(self, "step_size", "chains", "draws", "batch_size", "workers")
        require(self.burnin >= 0, "burnin", f"must be at least 0, got {self.burnin}")
        require(self.localization >= 0, "localization", f"must be at least 0, got {self.localization}")
        require(self.nbeta is None or self.nbeta > 0, "nbeta", f"must be positive, got {self.nbeta}")
        require(self.batch_size >= 2 or self.nbeta is not None, "batch_size", "must be at least 2 when nbeta is derived from it")

    @property
    def inverse_temperature(self) -> float:
        return self.nbeta if self.nbeta is not None else self.batch_size / math.log(self.batch_size)


@dataclass(frozen=True)
class ChainCheck:
    """Limits of the chain diagnostics (the checks the LLC literature uses)."""

    drift: float = 1.0  # last-quarter minus first-quarter mean draw loss, in standard deviations of the draws
    max_rhat: float = 1.1  # Gelman-Rubin R-hat of the draws' losses across chains


@dataclass(frozen=True)
class LLCEstimate(Result):
    """An LLC estimate: ``llc`` the mean over chains, ``stderr`` their standard deviation over sqrt(chains),
    ``per_chain``; ``init_loss`` L_n(w*); ``loss_trace`` [chains, burnin + draws] every step's minibatch loss;
    ``n_weights`` the number of sampled weights d (d/2: a regular model's LLC); ``warnings``: what the diagnostics
    found (empty: every chain settled and they agree); ``rhat`` of the draws' losses."""

    SCHEMA: ClassVar[int] = 1

    llc: float
    stderr: float
    per_chain: list[float]
    init_loss: float
    nbeta: float
    n_weights: int
    loss_trace: np.ndarray
    rhat: float
    warnings: list[str] = field(default_factory=list)


def _rhat(draws: np.ndarray) -> float:
    """Gelman-Rubin potential scale reduction of draws [chains, n] (1: the chains agree)."""
    c, n = draws.shape
    if c < 2 or n < 2:
        return float("nan")
    within = draws.var(axis=1, ddof=1).mean()
    between = n * draws.mean(axis=1).var(ddof=1)
    if within <= 0:
        return float("nan") if between <= 0 else float("inf")
    return float(math.sqrt(((n - 1) / n * within + between / n) / within))


def diagnose(trace: np.ndarray, per_chain: list[float], burnin: int, n_weights: int, check: ChainCheck) -> tuple[float, list[str]]:
    """R-hat and the warnings for a loss trace [chains, burnin + draws] and the chains' estimates."""
    draws = trace[:, burnin:]
    notes = []
    for c, (row, est) in enumerate(zip(draws, per_chain)):
        if not np.isfinite(row).all() or not math.isfinite(est) or est > n_weights:
            notes.append(f"chain {c} diverged (estimate {est:.3g}, above d = {n_weights} or not finite): lower step_size "
                         "or raise localization")
            continue
        q = max(1, len(row) // 4)
        spread = row.std()
        if spread > 0 and abs(row[-q:].mean() - row[:q].mean()) > check.drift * spread:
            notes.append(f"chain {c} did not settle: its last draws' mean loss is {row[-q:].mean() - row[:q].mean():+.3g} "
                         f"from its first (more than {check.drift} standard deviations); raise burnin or step_size")
        if est < 0:
            notes.append(f"chain {c} estimate is negative ({est:.3g}): the weights are not at a local minimum of this loss, "
                         "or the step size is too large")
    rhat = _rhat(draws) if np.isfinite(draws).all() else float("nan")
    if math.isfinite(rhat) and rhat > check.max_rhat:
        notes.append(f"the chains disagree (R-hat {rhat:.2f} > {check.max_rhat}): run them longer")
    return rhat, notes


def named_masks(model: nn.Module, masks: Masks | None) -> list[tuple[nn.Parameter, torch.Tensor | None]]:
    """(parameter, mask) for each sampled weight tensor; every parameter (no masks) when ``masks`` is None."""
    params = dict(model.named_parameters())
    if masks is None:
        return [(p, None) for p in params.values()]
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise IclabError(f"no parameter named {', '.join(unknown)} in this model; its parameters: {', '.join(params)}")
    out = []
    for name, mask in masks.items():
        if mask is not None and mask.shape != params[name].shape:
            raise IclabError(f"the mask of {name} has shape {tuple(mask.shape)}, the parameter {tuple(params[name].shape)}")
        out.append((params[name], None if mask is None else mask.to(params[name])))
    return out


class _Chains:
    """The SGLD chains of one estimate, run in this process or, with ``settings.workers`` > 1, in that many forked
    processes of one thread each (small models parallelise poorly across threads: two single-thread chains at once
    do about 1.7x the steps of one two-thread chain on 2 cores). Each chain's generator is seeded by its index, so a
    seeded estimate repeats bit for bit at the same ``workers``."""

    def __init__(self, model, loss, n, s, nbeta, sampled, saved):
        self.model, self.loss, self.n, self.s, self.nbeta, self.sampled, self.saved = model, loss, n, s, nbeta, sampled, saved

    def chain(self, index: int) -> tuple[int, np.ndarray]:
        s, model, sampled = self.s, self.model, self.sampled
        params = [p for p, _ in sampled]
        g = torch.Generator().manual_seed(s.seed * 1_000_003 + index)
        with torch.no_grad():
            for p, w in zip(model.parameters(), self.saved):
                p.copy_(w)
        start = [p.detach().clone() for p in params]
        masked = [(i, mask) for i, (_, mask) in enumerate(sampled) if mask is not None]
        row = np.zeros(s.burnin + s.draws)
        for step in range(s.burnin + s.draws):
            idx = torch.randint(self.n, (s.batch_size,), generator=g)
            value = self.loss(model, idx)
            grads = torch.autograd.grad(value, params)
            row[step] = float(value.detach())
            with torch.no_grad():  # every tensor at once (one call per operation, not per parameter)
                drift = torch._foreach_mul(grads, self.nbeta)
                pull = torch._foreach_sub(params, start)
                torch._foreach_mul_(pull, s.localization)
                torch._foreach_add_(drift, pull)
                noise = [torch.randn(p.shape, generator=g).to(p) for p in params]
                for i, mask in masked:
                    drift[i].mul_(mask)
                    noise[i].mul_(mask)
                torch._foreach_add_(params, drift, alpha=-s.step_size / 2)
                torch._foreach_add_(params, noise, alpha=math.sqrt(s.step_size))
        return index, row

    def run_all(self):
        workers = min(self.s.workers, self.s.chains)
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            yield from (self.chain(c) for c in range(self.s.chains))
            return
        global _JOB
        _JOB = self  # the forked workers inherit it: a loss closure needs no pickling
        threads = max(1, torch.get_num_threads() // workers)
        try:
            with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
                yield from pool.imap_unordered(_run_chain, range(self.s.chains))
        finally:
            _JOB = None


_JOB: _Chains | None = None


def _run_chain(index: int) -> tuple[int, np.ndarray]:
    return _JOB.chain(index)


def estimate_llc(model: nn.Module, loss: LossFn, n: int, settings: SGLDSettings = SGLDSettings(),
                 masks: Masks | None = None, check: ChainCheck = ChainCheck()) -> LLCEstimate:
    """The LLC of ``model``'s current weights w* for ``loss`` over n samples (``loss(model, indices)`` is the mean loss
    of the samples ``indices``). The model is left as it was; a seeded run is reproducible bit for bit."""
    s = settings
    if n < s.batch_size:
        raise IclabError(f"the data holds {n} samples, fewer than batch_size = {s.batch_size}")
    nbeta = s.inverse_temperature
    sampled = named_masks(model, masks)
    saved = [p.detach().clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    n_weights = int(sum(p.numel() if m is None else int(m.sum()) for p, m in sampled))
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        chunk = max(s.batch_size, 256)
        with torch.no_grad():  # L_n(w*): the mean loss over every sample, a chunk at a time
            init_loss = sum(float(loss(model, idx)) * len(idx) for idx in torch.arange(n).split(chunk)) / n
        params = [p for p, _ in sampled]
        for p in params:
            p.requires_grad_(True)
        job = _Chains(model, loss, n, s, nbeta, sampled, saved)
        trace = np.zeros((s.chains, s.burnin + s.draws))
        for chain, row in track(job.run_all(), total=s.chains, what="SGLD chains"):
            trace[chain] = row
        per_chain = [float(nbeta * (trace[c, s.burnin:].mean() - init_loss)) for c in range(s.chains)]
    finally:
        with torch.no_grad():
            for p, w, flag in zip(model.parameters(), saved, flags):
                p.copy_(w)
                p.requires_grad_(flag)
        model.train(training)
    rhat, notes = diagnose(trace, per_chain, s.burnin, n_weights, check)
    finite = [v for v in per_chain if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else float("nan")
    stderr = float(np.std(finite, ddof=1) / math.sqrt(len(finite))) if len(finite) > 1 else float("nan")
    return LLCEstimate(mean, stderr, per_chain, init_loss, nbeta, n_weights, trace, rhat, notes)


FEW_CHAINS = 4  # below this many chains, a claim's text says that their standard error is itself rough


def chains_note(chains: int) -> str:
    """What a claim says of a standard error taken over ``chains`` chains (empty for :data:`FEW_CHAINS` or more)."""
    if chains >= FEW_CHAINS:
        return ""
    return (f"; from {chains} chains the standard error is itself rough: chains that happen to agree give a small one "
            "(a chain warning says where they do not); more chains: --set llc.sampler.chains=4")


@dataclass(frozen=True)
class StageBoundary:
    """A critical point of an LLC curve (Hoogland et al. 2024's stage boundaries): at snapshot ``index`` (``tokens``
    seen) the LLC's slope changes sign, a peak ("max") or a trough ("min")."""

    index: int
    tokens: float
    kind: str


def stage_boundaries(tokens: list[float], llc: list[float], stderr: list[float], sigma: float = 2.0) -> list[StageBoundary]:
    """Critical points of an LLC curve [S] measured at ``tokens`` [S]: interior snapshots where the LLC rises into them
    and falls after (or the reverse), each step larger than ``sigma`` combined standard errors, so that the chains'
    noise alone does not make one."""
    out = []
    for i in range(1, len(llc) - 1):
        before, after = llc[i] - llc[i - 1], llc[i + 1] - llc[i]
        big = (abs(before) > sigma * math.hypot(stderr[i], stderr[i - 1])
               and abs(after) > sigma * math.hypot(stderr[i], stderr[i + 1]))
        if big and before * after < 0:
            out.append(StageBoundary(i, float(tokens[i]), "max" if before > 0 else "min"))
    return out
