"""Next-token prediction on sequences with in-context structure (Olsson et al. 2022).

Four families, mixed per sequence by the config's shares:
  ``spans``:   random tokens with ``n_spans`` random spans copied later in the
               sequence; span lengths and positions random per sequence (a fixed
               period would let a model copy by position instead of by content);
  ``repeats``: random tokens from a random start on repeated with a random period
               until the context ends: most tokens are predictable by induction, and
               the period (hence the offset back to the source) changes per sequence;
  ``markov``:  a Markov chain over ``markov_states`` tokens with a fresh random
               transition matrix per sequence (rows ~ Dirichlet(1)): in-context bigrams;
  ``natural``: byte windows of the Python standard library's own source files,
               found through the running interpreter, split into train / eval by file.
Tokens are bytes (vocabulary 256), so the families share one embedding.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from iclab.config import require
from iclab.errors import IclabError
from iclab.tasks.base import Batch, Split, stream

VOCAB = 256
FAMILIES = ("spans", "markov", "natural", "repeats")  # Batch.extras["family"] holds indices into this


@dataclass(frozen=True)
class InductionConfig:
    name: Literal["induction"] = "induction"
    n_ctx: int = 64
    natural_share: float = 0.0
    markov_share: float = 0.0
    repeat_share: float = 0.0
    synthetic_vocab: int = 64
    span_min: int = 4
    span_max: int = 16
    n_spans: int = 2
    markov_states: int = 8
    eval_fraction: float = 0.1
    data_seed: int = 1

    def __post_init__(self) -> None:
        require(self.n_ctx >= 8, "n_ctx", f"must be at least 8, got {self.n_ctx}")
        shares = (self.natural_share, self.markov_share, self.repeat_share)
        require(all(0 <= x <= 1 for x in shares), "natural_share", "natural_share, markov_share and repeat_share must lie in [0, 1]")
        require(sum(shares) <= 1, "repeat_share", "natural_share + markov_share + repeat_share must be <= 1 (the rest is spans)")
        require(2 <= self.synthetic_vocab <= VOCAB, "synthetic_vocab", f"must lie in [2, {VOCAB}], got {self.synthetic_vocab}")
        require(1 <= self.span_min <= self.span_max, "span_min", "need 1 <= span_min <= span_max")
        require(2 * self.span_max * self.n_spans <= self.n_ctx, "span_max", f"2 * span_max * n_spans must fit in n_ctx={self.n_ctx}")
        require(2 <= self.markov_states <= VOCAB, "markov_states", f"must lie in [2, {VOCAB}]")
        require(0 < self.eval_fraction < 1, "eval_fraction", "must lie in (0, 1)")

    def model_io(self) -> dict:
        return {"input": "tokens", "d_vocab": VOCAB, "n_ctx": self.n_ctx}


def span_sequences(cfg: InductionConfig, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens with copied spans: tokens [B, T] and a mask [B, T] of the copied positions after the first.

    Each span's copy starts at a uniformly drawn position and is cut at the end of the context (so late tokens,
    where the ICL score is read, are copies as often as middle ones) and its source lies anywhere before it (no overlap with other spans): the distance from a copy
    back to its source is spread over [span length, copy start], so no fixed or narrow offset exists for a head to
    copy by position; only content (induction) finds the source.
    """
    T = cfg.n_ctx
    tokens = torch.randint(cfg.synthetic_vocab, (batch, T), generator=g)
    rows = tokens.tolist()  # the placements edit Python lists: a tensor op per check cost more than the draws
    repeated = [[False] * T for _ in range(batch)]

    def draw(lo: int, hi: int) -> int:  # uniform integer in [lo, hi]
        return lo + int(torch.randint(hi - lo + 1, (1,), generator=g))

    for b in range(batch):  # small loops: B x n_spans placements of at most span_max tokens
        used = [False] * T
        row = rows[b]
        for _ in range(cfg.n_spans):
            for _attempt in range(20):
                L = draw(cfg.span_min, cfg.span_max)
                dst = draw(L, T - 2)  # copy start; a copy running past the end is cut there
                src = draw(0, dst - L)
                n = min(L, T - dst)
                if not any(used[src : src + L]) and not any(used[dst : dst + n]):
                    row[dst : dst + n] = row[src : src + n]
                    used[src : src + L] = [True] * len(used[src : src + L])
                    used[dst : dst + n] = [True] * n
                    repeated[b][dst + 1 : dst + n] = [True] * (n - 1)
                    break
    return torch.tensor(rows, dtype=tokens.dtype), torch.tensor(repeated)


def repeat_sequences(cfg: InductionConfig, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens repeated with a random period: tokens [B, T] and a mask [B, T] of the repeated positions after
    the first of each repeat.

    Per sequence, a start s ~ U[0, T/4] and a period P ~ U[span_min, (T - s)/2]; from s + P on, token t equals token
    t - P. The period varies over [span_min, ~3T/8] between sequences, so no fixed offset finds the source.
    """
    T = cfg.n_ctx
    tokens = torch.randint(cfg.synthetic_vocab, (batch, T), generator=g)
    start = torch.randint(min(T // 4, T - 2 * cfg.span_min) + 1, (batch, 1), generator=g)
    longest = (T - start) // 2  # [B, 1] two full periods fit after the start
    period = cfg.span_min + (torch.rand(batch, 1, generator=g) * (longest - cfg.span_min + 1)).long().clamp(max=longest - cfg.span_min)
    t = torch.arange(T).unsqueeze(0)  # [1, T]
    source = torch.where(t >= start + period, start + (t - start) % period, t)  # [B, T]
    return tokens.gather(1, source), t > start + period


def markov_sequences(cfg: InductionConfig, batch: int, g: torch.Generator) -> torch.Tensor:
    """Markov chains with a fresh Dirichlet(1) transition matrix per sequence: [B, T]."""
    S = cfg.markov_states
    P = -torch.log(torch.rand(batch, S, S, generator=g).clamp(min=1e-12))  # Exp(1) -> rows ~ Dirichlet(1)
    P = P / P.sum(-1, keepdim=True)
    alphabet = torch.randperm(cfg.synthetic_vocab, generator=g)[:S]  # which tokens stand for the states
    state = torch.randint(S, (batch,), generator=g)
    states = [state]
    for _ in range(cfg.n_ctx - 1):
        state = torch.multinomial(P[torch.arange(batch), state], 1, generator=g).squeeze(-1)
        states.append(state)
    return alphabet[torch.stack(states, dim=1)]


@lru_cache(maxsize=4)
def stdlib_corpus(split: Split, eval_fraction: float) -> torch.Tensor:
    """Bytes of the standard library's .py files (sorted; a file goes to eval if its name hashes below the fraction)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    if not files:
        raise IclabError(f"no Python source files found under {root}; the natural corpus needs the standard library's sources")
    chunks = []
    for p in files:
        h = int.from_bytes(hashlib.blake2b(str(p.relative_to(root)).encode(), digest_size=4).digest(), "little") / 2**32
        if (h < eval_fraction) == (split == "eval"):
            chunks.append(p.read_bytes())
    data = b"\n".join(chunks)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def natural_sequences(cfg: InductionConfig, batch: int, split: Split, g: torch.Generator) -> torch.Tensor:
    corpus = stdlib_corpus(split, cfg.eval_fraction)
    starts = torch.randint(len(corpus) - cfg.n_ctx, (batch,), generator=g)
    return corpus[starts.unsqueeze(1) + torch.arange(cfg.n_ctx)]


class InductionTask:
    """Sampler and next-token loss for :class:`InductionConfig` sequences."""

    def __init__(self, config: InductionConfig):
        self.config = config

    def batch(self, step: int, batch_size: int, split: Split, device: torch.device | str = "cpu") -> Batch:
        cfg = self.config
        g = stream(cfg.data_seed, "sequences", split, step)
        n_nat = int(round(batch_size * cfg.natural_share))
        n_mark = min(int(round(batch_size * cfg.markov_share)), batch_size - n_nat)  # rounding never overfills the batch
        n_rep = min(int(round(batch_size * cfg.repeat_share)), batch_size - n_nat - n_mark)
        n_span = batch_size - n_nat - n_mark - n_rep
        uncopied = lambda seqs: (seqs, torch.zeros_like(seqs, dtype=torch.bool))  # noqa: E731
        samplers = [  # in FAMILIES' order; each gives tokens [n, T] and its copied positions [n, T]
            (n_span, lambda n: span_sequences(cfg, n, g)),
            (n_mark, lambda n: uncopied(markov_sequences(cfg, n, g))),
            (n_nat, lambda n: uncopied(natural_sequences(cfg, n, split, g))),
            (n_rep, lambda n: repeat_sequences(cfg, n, g)),
        ]
        parts = [(i, *sample(n)) for i, (n, sample) in enumerate(samplers) if n]
        tokens = torch.cat([p[1] for p in parts]).to(device)
        repeated = torch.cat([p[2] for p in parts]).to(device)
        family = torch.cat([torch.full((len(p[1]),), p[0]) for p in parts]).to(device)
        return Batch(inputs=tokens, targets=tokens, extras={"repeated": repeated, "family": family})

    @staticmethod
    def token_losses(logits: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token loss [B, T-1]: -log p(token t+1 | tokens <= t), from logits [B, T, V] of tokens [B, T]; with
        ``positions`` [P] (indices t into the T-1 losses), from logits [B, P, V] at those positions only: [B, P].
        Over the class dimension of [B, V, T-1]: the same loss over contiguous rows [B (T-1), V] is 3x faster but
        rounds differently, and that moved three of the induction study's quick verdicts in the main job
        (docs/scaling.md, iclab 0.14), so it is kept as trained."""
        if positions is None:
            return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        return F.cross_entropy(logits.transpose(1, 2), tokens[:, positions.to(tokens.device) + 1], reduction="none")

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.token_losses(outputs, batch.targets).mean()

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Loss, loss on the copied tokens of repeated spans, and the ICL score (late minus early token loss)."""
        losses = self.token_losses(outputs, batch.targets)
        out = {"loss": float(losses.mean()), "icl_score": icl_score(losses, *icl_positions(losses.shape[1] + 1))}
        rep = batch.extras["repeated"][:, 1:]
        if bool(rep.any()):
            out["repeated_token_loss"] = float(losses[rep].mean())
        return out


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """Olsson et al.'s tokens 500 and 50 (of 512), rescaled to a context of ``n_ctx`` tokens, as indices into the
    [T-1] per-token losses (loss t predicts token t+1). The one definition every ICL score uses."""
    return min(n_ctx - 2, round(n_ctx * 500 / 512)), round(n_ctx * 50 / 512)


def icl_score(token_loss: torch.Tensor, late: int, early: int) -> float:
    """Loss at a late token minus loss at an early token, averaged over sequences (negative: context helps).

    token_loss [B, T] per-token loss (nats); Olsson et al. use tokens 500 and 50 of 512.
    """
    return float(token_loss[:, late].mean() - token_loss[:, early].mean())
