"""Activation patching and attribution patching between a clean and a corrupted prompt, on any HeadModel.

Activation patching (Meng et al. 2022; the field's standard "which sites carry the answer" test) runs one prompt
with the activation of one site taken from the other prompt's run, and reads a metric at the last position:

- ``denoising``: the corrupted run, one site restored to its clean activation (does this site suffice?);
- ``noising``: the clean run, one site given its corrupted activation (is this site necessary?).

Sites: ``heads`` (a head's z, the input of the output projection, at one position), ``resid`` (the residual
stream entering a layer, at one position; layer L is the final residual), ``attn_out`` and ``mlp_out`` (what a
layer's attention or MLP adds, at one position), and ``q``, ``k``, ``v`` (one head's query, key or value at one
position, as its projection makes it: patching it patches that head's input for that role alone, the Q/K/V
composition question; under grouped-query attention keys and values are per key/value head).
:func:`path_patch` patches one path: a sender head's output as a receiver head's query, key or value reads it. Metrics at the last position: ``logit_diff`` (answer minus wrong answer),
``logprob`` (the answer's log-probability) and ``rank`` (how many tokens score above the answer; 0 is first).

Attribution patching (Nanda 2023; Syed et al. 2023) approximates every site's effect at once from one forward and
one backward pass: (donor activation - run activation) . d metric / d activation. :func:`agreement` says where the
linear approximation holds, on the sites both computed.

Several prompt pairs are patched one by one and averaged; ``stderr`` is the standard error of the mean over pairs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from iclab.errors import IclabError
from iclab.heads.base import HeadModel
from iclab.progress import track
from iclab.results import Head, Result

Site = Literal["heads", "resid", "attn_out", "mlp_out", "q", "k", "v"]
Metric = Literal["logit_diff", "logprob", "rank"]
Direction = Literal["denoising", "noising"]
SITES: tuple[str, ...] = ("heads", "resid", "attn_out", "mlp_out", "q", "k", "v")
HEAD_SITES = ("heads", "q", "k", "v")  # sites with one activation per head: [T, H, E]
METRICS: tuple[str, ...] = ("logit_diff", "logprob", "rank")
DIRECTIONS: tuple[str, ...] = ("denoising", "noising")
PATCH_BATCH = 32  # patched runs per forward pass


@dataclass(frozen=True)
class PromptPair:
    """Token ids of a clean and a corrupted prompt of the same length, the answer token and, for ``logit_diff``, the
    wrong answer the corruption points to."""

    clean: list[int]
    corrupt: list[int]
    answer: int
    wrong: int | None = None

    def __post_init__(self) -> None:
        if len(self.clean) != len(self.corrupt):
            raise IclabError(f"the clean prompt has {len(self.clean)} tokens and the corrupted one {len(self.corrupt)}; "
                             "patching pairs positions one to one, so both must have the same length")


@dataclass(frozen=True)
class Patching(Result):
    """One patching run. ``effect`` [L, H, T] (per-head sites; H_kv for ``k`` and ``v``) or [L', T] (``resid``: L' =
    L + 1 with the final residual; ``attn_out``, ``mlp_out``: L); without the T axis when every position was patched
    at once (``positions`` "all"): the change of the metric when that site is patched, mean over pairs, with its
    ``stderr``; ``normalised``: the change over the clean-minus-corrupted difference (1: the site alone moves the
    metric all the way, in either direction). ``tokens``: the first pair's clean prompt, one string per position."""

    SCHEMA: ClassVar[int] = 1

    site: str
    direction: str
    metric: str
    method: str  # "exact" or "attribution"
    n_pairs: int
    tokens: list[str]
    clean_metric: float
    corrupted_metric: float
    effect: np.ndarray
    stderr: np.ndarray
    normalised: np.ndarray

    @property
    def each_position(self) -> bool:
        """False when every position of a site was patched at once (no T axis)."""
        return self.effect.ndim == (3 if self.site in HEAD_SITES else 2)


def metric_value(logits: torch.Tensor, answer: int, wrong: int | None, metric: str) -> torch.Tensor:
    """The metric of each row of last-position ``logits`` [B, V] -> [B]."""
    if metric == "logit_diff":
        if wrong is None:
            raise IclabError("metric logit_diff needs a wrong answer (--wrong): the token the corruption points to")
        return logits[:, answer] - logits[:, wrong]
    if metric == "logprob":
        return torch.log_softmax(logits.float(), dim=-1)[:, answer]
    if metric == "rank":
        return (logits > logits[:, answer : answer + 1]).sum(-1).float()
    raise IclabError(f"metric {metric!r} is not one of {', '.join(METRICS)}")


def _check(site: str, direction: str) -> None:
    if site not in SITES:
        raise IclabError(f"site {site!r} is not one of {', '.join(SITES)}")
    if direction not in DIRECTIONS:
        raise IclabError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")


def _n_layers(model: HeadModel, site: str) -> int:
    return model.n_layers + 1 if site == "resid" else model.n_layers


def _n_heads(model: HeadModel, site: str) -> int:
    return model.n_kv_heads if site in ("k", "v") else model.n_heads


def _hooks(site: str, hooks: dict) -> dict:
    """``hooked``'s keyword for a site's hooks."""
    return {"z" if site == "heads" else site: hooks}


def activations(model: HeadModel, ids: torch.Tensor, site: str) -> list[torch.Tensor]:
    """One run's activations at every layer of ``site`` for ids [T]: [T, H, E] per layer (per-head sites), or [T, D]."""
    store: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def grab(x: torch.Tensor) -> torch.Tensor:
            store[layer] = x[0].detach().float()
            return x

        return grab

    hooks = {layer: keep(layer) for layer in range(_n_layers(model, site))}
    with torch.no_grad(), model.hooked(**_hooks(site, hooks)):
        model.logits_grad(ids.unsqueeze(0), last=True)
    return [store[layer] for layer in range(len(hooks))]


def _units(model: HeadModel, site: str, T: int | None) -> list[tuple[int, int, int]]:
    """Every site to patch as (layer, head, position); head -1 for the residual sites; position -1 (``T`` None) for
    every position at once."""
    heads = range(_n_heads(model, site)) if site in HEAD_SITES else [-1]
    return [(layer, h, t) for layer in range(_n_layers(model, site)) for h in heads for t in (range(T) if T else [-1])]


def residual_streams(model: HeadModel, ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream entering each layer of one run of ids [T], and the final one: [1, T, D] each, L + 1 of them."""
    with contextlib.ExitStack() as stack, torch.no_grad():
        kept = [stack.enter_context(model.recording_resid(layer)) for layer in range(model.n_layers + 1)]
        model.logits_grad(ids.unsqueeze(0), last=True)
    return [k[0] for k in kept]


def _copies(stream: list[torch.Tensor], layer: int, n: int) -> torch.Tensor:
    """The run's residual stream entering ``layer`` for a batch of ``n`` patched runs of it: [n, T, D]."""
    return stream[layer].expand(n, -1, -1).contiguous()


def _patched_metrics(model: HeadModel, run_ids: torch.Tensor, donor: list[torch.Tensor], site: str, pair: PromptPair,
                     metric: str, batch: int, each_position: bool = True) -> torch.Tensor:
    """The metric of the ``run_ids`` [T] run with each site in turn set to its ``donor`` activation: [units]. Every
    batch of patched runs starts at its first patched layer from the unpatched run's residual stream there (nothing
    before that layer differs), so a batch costs only the layers from there on."""
    units = _units(model, site, len(run_ids) if each_position else None)
    stream = residual_streams(model, run_ids)
    out = torch.empty(len(units))
    for start in track(range(0, len(units), batch), total=-(-len(units) // batch), what="patched batches"):
        chunk = units[start : start + batch]
        by_layer: dict[int, list[tuple[int, int, int]]] = {}
        for row, (layer, h, t) in enumerate(chunk):
            by_layer.setdefault(layer, []).append((row, h, t))

        def patch(layer: int):
            rows, hs, ts = (torch.tensor(v) for v in zip(*by_layer[layer]))

            def put(x: torch.Tensor) -> torch.Tensor:
                x = x.clone()
                if not each_position:  # the whole sequence of the site: [n, T, (E | D)]
                    if site in HEAD_SITES:
                        x[rows, :, hs] = donor[layer][:, hs].transpose(0, 1).to(x)
                    else:
                        x[rows] = donor[layer].to(x)
                elif site in HEAD_SITES:
                    x[rows, ts, hs] = donor[layer][ts, hs].to(x)
                else:
                    x[rows, ts] = donor[layer][ts].to(x)
                return x

            return put

        hooks = {layer: patch(layer) for layer in by_layer}
        first = min(by_layer)
        with torch.no_grad(), model.resumed_at(first, _copies(stream, first, len(chunk))), \
                model.hooked(**_hooks(site, hooks)):
            logits = model.logits_grad(run_ids.unsqueeze(0).expand(len(chunk), -1), last=True)[:, -1]
        out[start : start + len(chunk)] = metric_value(logits.float(), pair.answer, pair.wrong, metric).cpu()
    return out


def _attribution(model: HeadModel, run_ids: torch.Tensor, donor: list[torch.Tensor], site: str, pair: PromptPair,
                 metric: str) -> torch.Tensor:
    """(donor - run activation) . d metric / d activation for every site, from one forward and one backward pass:
    [units] in the order of :func:`_units`."""
    deltas: dict[int, torch.Tensor] = {}
    acts: dict[int, torch.Tensor] = {}

    def leaf(layer: int):
        def add(x: torch.Tensor) -> torch.Tensor:
            acts[layer] = x[0].detach().float()
            deltas[layer] = torch.zeros_like(x, requires_grad=True)
            return x + deltas[layer]

        return add

    hooks = {layer: leaf(layer) for layer in range(_n_layers(model, site))}
    with torch.enable_grad(), model.hooked(**_hooks(site, hooks)):
        logits = model.logits_grad(run_ids.unsqueeze(0), last=True)[:, -1]
        value = metric_value(logits.float(), pair.answer, pair.wrong, metric).sum()
        grads = torch.autograd.grad(value, [deltas[layer] for layer in range(len(hooks))], allow_unused=True)
    per_layer = []
    for layer, g in enumerate(grads):
        g = torch.zeros_like(acts[layer]) if g is None else g[0].float()
        diff = donor[layer] - acts[layer]
        per_layer.append((diff * g).sum(-1))  # [T, H] (heads) or [T]
    if site in HEAD_SITES:
        return torch.stack([p.T for p in per_layer]).reshape(-1)  # [L, H, T] flattened as _units orders them
    return torch.stack(per_layer).reshape(-1)  # [L', T]


def _check_pairs(pairs: list[PromptPair]) -> int:
    """The common length of every pair's prompts (pairs are averaged position by position)."""
    if not pairs:
        raise IclabError("no prompt pairs to patch")
    T = len(pairs[0].clean)
    if any(len(p.clean) != T for p in pairs):
        raise IclabError(f"every prompt pair must have the same length to be averaged position by position; lengths: "
                         f"{sorted({len(p.clean) for p in pairs})}")
    return T


def _pair_runs(model: HeadModel, pair: PromptPair, metric: str, direction: str) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(run ids [T], donor ids [T], clean metric, corrupted metric): denoising runs the corrupted prompt with clean
    activations, noising the reverse."""
    clean, corrupt = (torch.tensor(x, device=model.device) for x in (pair.clean, pair.corrupt))
    with torch.no_grad():
        both = model.logits_grad(torch.stack([clean, corrupt]), last=True)[:, -1]
    m_clean, m_corrupt = (float(v) for v in metric_value(both.float(), pair.answer, pair.wrong, metric))
    run, donor = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
    return run, donor, m_clean, m_corrupt


def _summary(changes: list[torch.Tensor], clean_m: list[float], corrupt_m: list[float], shape: tuple[int, ...],
             direction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean change [shape], its standard error over pairs, and the change over the clean-minus-corrupted gap."""
    stacked = torch.stack(changes).double()  # [pairs, units]
    mean = stacked.mean(0).reshape(shape).numpy()
    n = len(changes)
    stderr = (stacked.std(0, unbiased=True) / np.sqrt(n)).reshape(shape).numpy() if n > 1 else np.zeros(shape)
    gap = float(np.mean(clean_m) - np.mean(corrupt_m))
    sign = 1.0 if direction == "denoising" else -1.0
    normalised = sign * mean / gap if abs(gap) > 1e-9 else np.full(shape, np.nan)
    return mean, stderr, normalised


def patch(model: HeadModel, pairs: list[PromptPair], site: Site = "heads", metric: Metric = "logit_diff",
          direction: Direction = "denoising", method: str = "exact", batch: int = PATCH_BATCH,
          positions: str = "each") -> Patching:
    """Patch every site of ``site`` for each pair and average: ``method`` "exact" (one patched run per site, batched
    ``batch`` at a time) or "attribution" (one forward and one backward pass per pair). ``positions`` "each" patches
    one position at a time; "all" patches a site at every position at once (effect [L, H] or [L']: a head's or a
    layer's whole contribution, T times fewer runs; attribution sums its per-position terms, the same linear
    approximation)."""
    _check(site, direction)
    if positions not in ("each", "all"):
        raise IclabError(f"positions {positions!r} is not 'each' or 'all'")
    if method not in ("exact", "attribution"):
        raise IclabError(f"method {method!r} is not 'exact' or 'attribution'")
    if method == "attribution" and metric == "rank":
        raise IclabError("attribution patching follows the metric's gradient, and a rank has none; use logit_diff or logprob")
    T = _check_pairs(pairs)
    changes, clean_m, corrupt_m = [], [], []
    for pair in pairs:
        run, donor_ids, m_clean, m_corrupt = _pair_runs(model, pair, metric, direction)
        donor = activations(model, donor_ids, site)
        if method == "exact":
            baseline = m_corrupt if direction == "denoising" else m_clean
            change = _patched_metrics(model, run, donor, site, pair, metric, batch, positions == "each") - baseline
        else:
            change = _attribution(model, run, donor, site, pair, metric)
            if positions == "all":
                change = change.view(-1, T).sum(-1)
        changes.append(change)
        clean_m.append(m_clean)
        corrupt_m.append(m_corrupt)
    per_site = (model.n_layers, _n_heads(model, site)) if site in HEAD_SITES else (_n_layers(model, site),)
    shape = per_site + ((T,) if positions == "each" else ())
    mean, stderr, normalised = _summary(changes, clean_m, corrupt_m, shape, direction)
    return Patching(site, direction, metric, method, len(pairs), model.token_strings(pairs[0].clean), float(np.mean(clean_m)),
                    float(np.mean(corrupt_m)), mean, stderr, normalised)


@dataclass(frozen=True)
class SetPatching(Result):
    """A set of heads patched together, each at every position: the metric's mean change over pairs, its standard
    error, and the change over the clean-minus-corrupted gap (1: the set alone restores everything)."""

    SCHEMA: ClassVar[int] = 1

    heads: list[Head]
    effect: float
    stderr: float
    normalised: float


def patch_heads(model: HeadModel, pairs: list[PromptPair], heads: list[Head], metric: Metric = "logprob",
                direction: Direction = "denoising") -> SetPatching:
    """Patch ``heads`` together (z at every position from the donor run), one forward pass per pair: does the set carry
    the answer between them? Compared with random sets of as many heads, the patching counterpart of an ablation."""
    _check("heads", direction)
    _check_pairs(pairs)
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)
    changes, clean_m, corrupt_m = [], [], []
    for pair in pairs:
        run, donor_ids, m_clean, m_corrupt = _pair_runs(model, pair, metric, direction)
        donor = activations(model, donor_ids, "heads")

        def put(layer: int):
            def swap(x: torch.Tensor) -> torch.Tensor:
                x = x.clone()
                x[:, :, by_layer[layer]] = donor[layer][:, by_layer[layer]].to(x)
                return x

            return swap

        with torch.no_grad(), model.hooked(z={layer: put(layer) for layer in by_layer}):
            value = float(metric_value(model.logits_grad(run.unsqueeze(0), last=True)[:, -1].float(), pair.answer, pair.wrong,
                                       metric)[0])
        changes.append(torch.tensor([value - (m_corrupt if direction == "denoising" else m_clean)]))
        clean_m.append(m_clean)
        corrupt_m.append(m_corrupt)
    mean, stderr, normalised = _summary(changes, clean_m, corrupt_m, (1,), direction)
    return SetPatching(list(heads), float(mean[0]), float(stderr[0]), float(normalised[0]))


@dataclass(frozen=True)
class PathPatching(Result):
    """Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) into one receiver head's ``into`` input ("q", "k" or
    "v"): ``effect`` [L, H], the change of the metric when sender head (l, h)'s output, at every position, is taken
    from the donor run only as the receiver reads it directly: every other head and MLP before the receiver's layer
    held at the run's own values, the receiver's input recomputed, then the run goes on with that input alone
    patched. NaN for senders at or after the receiver's layer. Under grouped-query attention a key or value is its
    key/value head's, shared by the receiver's group."""

    SCHEMA: ClassVar[int] = 1

    receiver: tuple[int, int]
    into: str
    direction: str
    metric: str
    n_pairs: int
    clean_metric: float
    corrupted_metric: float
    effect: np.ndarray
    stderr: np.ndarray
    normalised: np.ndarray


class _Captured(Exception):
    """Raised by a hook that has what its pass was run for: the layers after it are not needed."""


def _path_metrics(model: HeadModel, run_ids: torch.Tensor, base: dict[str, list[torch.Tensor]], donor_z: list[torch.Tensor],
                  receiver: tuple[int, int], into: str, pair: PromptPair, metric: str, batch: int) -> torch.Tensor:
    """The metric of the run with each sender's path into the receiver patched: [receiver layer * H]. The first pass
    of a batch runs from its first sender's layer (the run's own stream before it) to the receiver's input and stops
    there; the second runs from the receiver's layer on."""
    lr, hr = receiver
    slot = hr if into == "q" else model.kv_head(hr)
    senders = [(layer, h) for layer in range(lr) for h in range(model.n_heads)]
    stream = residual_streams(model, run_ids)
    out = torch.empty(len(senders))
    for start in track(range(0, len(senders), batch), total=-(-len(senders) // batch), what="sender batches"):
        chunk = senders[start : start + batch]
        ids = run_ids.unsqueeze(0).expand(len(chunk), -1)

        def frozen_z(layer: int):
            def put(x: torch.Tensor) -> torch.Tensor:
                x = base["heads"][layer].to(x).unsqueeze(0).expand(len(chunk), -1, -1, -1).clone()
                for row, (sl, sh) in enumerate(chunk):
                    if sl == layer:
                        x[row, :, sh] = donor_z[layer][:, sh].to(x)
                return x

            return put

        def frozen(tensors: list[torch.Tensor], layer: int):
            return lambda x: tensors[layer].to(x).unsqueeze(0).expand_as(x)

        captured: dict[str, torch.Tensor] = {}

        def grab(x: torch.Tensor) -> torch.Tensor:
            captured["x"] = x[:, :, slot].detach().clone()
            raise _Captured

        first = chunk[0][0]  # senders are in layer order
        mlps = {layer: frozen(base["mlp_out"], layer) for layer in range(lr)} if "mlp_out" in base else {}
        with contextlib.suppress(_Captured), torch.no_grad(), model.resumed_at(first, _copies(stream, first, len(chunk))), \
                model.hooked(z={layer: frozen_z(layer) for layer in range(lr)}, mlp_out=mlps, **{into: {lr: grab}}):
            model.logits_grad(ids, last=True)

        def receive(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[:, :, slot] = captured["x"].to(x)
            return x

        with torch.no_grad(), model.resumed_at(lr, _copies(stream, lr, len(chunk))), model.hooked(**{into: {lr: receive}}):
            logits = model.logits_grad(ids, last=True)[:, -1]
        out[start : start + len(chunk)] = metric_value(logits.float(), pair.answer, pair.wrong, metric).cpu()
    return out


def path_patch(model: HeadModel, pairs: list[PromptPair], receiver: tuple[int, int], into: str = "k",
               metric: Metric = "logit_diff", direction: Direction = "denoising", batch: int = PATCH_BATCH) -> PathPatching:
    """Path-patch every head of the layers before ``receiver`` (layer, head) into its ``into`` input, for each pair,
    and average (two forward passes per sender, ``batch`` senders at a time)."""
    _check("heads", direction)
    if into not in ("q", "k", "v"):
        raise IclabError(f"a path ends at a head's query, key or value: into must be q, k or v, not {into!r}")
    lr, hr = receiver
    if not (1 <= lr < model.n_layers and 0 <= hr < model.n_heads):
        raise IclabError(f"receiver {lr}.{hr} is not a head after the first layer: layers 1-{model.n_layers - 1}, "
                         f"heads 0-{model.n_heads - 1}")
    _check_pairs(pairs)
    changes, clean_m, corrupt_m = [], [], []
    for pair in pairs:
        run, donor_ids, m_clean, m_corrupt = _pair_runs(model, pair, metric, direction)
        base = {"heads": activations(model, run, "heads")}
        if model.has_mlp:
            base["mlp_out"] = activations(model, run, "mlp_out")
        donor_z = activations(model, donor_ids, "heads")
        baseline = m_corrupt if direction == "denoising" else m_clean
        paths = _path_metrics(model, run, base, donor_z, (lr, hr), into, pair, metric, batch) - baseline
        change = torch.full((model.n_layers * model.n_heads,), float("nan"))
        change[: len(paths)] = paths
        changes.append(change)
        clean_m.append(m_clean)
        corrupt_m.append(m_corrupt)
    mean, stderr, normalised = _summary(changes, clean_m, corrupt_m, (model.n_layers, model.n_heads), direction)
    return PathPatching((int(lr), int(hr)), into, direction, metric, len(pairs), float(np.mean(clean_m)), float(np.mean(corrupt_m)),
                        mean, stderr, normalised)


@dataclass(frozen=True)
class Agreement(Result):
    """How well attribution patching approximates exact patching on the same sites: Pearson correlation of the
    effects, and how many of exact patching's ``k`` largest sites (by |effect|) attribution also puts in its top k."""

    SCHEMA: ClassVar[int] = 1

    correlation: float
    k: int
    top_k_shared: int


def agreement(exact: Patching, approx: Patching, k: int = 10) -> Agreement:
    a, b = exact.effect.reshape(-1), approx.effect.reshape(-1)
    if a.shape != b.shape:
        raise IclabError("the two patchings cover different sites")
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    k = min(k, len(a))
    top = set(np.argsort(-np.abs(a))[:k]) & set(np.argsort(-np.abs(b))[:k])
    return Agreement(corr, k, len(top))
