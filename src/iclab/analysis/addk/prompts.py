"""Add-k prompts on any :class:`~iclab.heads.HeadModel` (Hu et al. 2025): encoding, batching by length, task means of
every head's z, and greedy exact-match accuracy under an intervention.

Prompts are text in one of the task's formats, encoded by the model's own tokenizer; prompts of equal token length
are batched together (no padding anywhere).

Vocabulary: z_k[l, h] is head (l, h)'s z at the final token averaged over
prompts of task k; its *result* r_k[l, h] = z_k[l, h] @ W_O[l, h] lives in the
residual stream [D]. A function vector for task k under head mask M [L, H] is
FV_k(M) = sum_(l,h) M[l, h] r_k[l, h]. Shapes: K tasks, L layers, H heads,
E d_head, D d_model, N prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from iclab.heads.base import HeadModel, Intervention, greedy_generate
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


def other_task_pairs(model: HeadModel, prompts: list[Prompt], ks: list[int], hi: int, fmt: PromptFormat = ARROW) -> list:
    """Patching pairs (:class:`~iclab.analysis.patching.PromptPair`) of each prompt against the same inputs with every
    demonstration labelled by another training task (the next k in ``ks``): answer x_q + k, wrong x_q + k' (their
    first tokens). Prompts whose other labels pass ``hi``, change the token count or share the answer's first token
    are left out."""
    from iclab.analysis.patching import PromptPair

    pairs = []
    for p in prompts:
        other = ks[(ks.index(p.k) + 1) % len(ks)] if p.k in ks else ks[0]
        ys = [x + other for x in p.xs]
        if max(ys) > hi or other == p.k:
            continue
        q = encode_prompt(model, other, p.xs, ys, fmt)
        if len(q.ids) == len(p.ids) and q.answer[0] != p.answer[0]:
            pairs.append(PromptPair(p.ids, q.ids, p.answer[0], q.answer[0]))
    return pairs
