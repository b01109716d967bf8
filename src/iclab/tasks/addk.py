"""Few-shot "add k" (Hu et al. 2025): prompts "x1->y1#x2->y2#...#xq->" with y = op_k(x).

Tasks: ``add`` y = x + k (k = 1..30), ``sub`` y = x - k (k = 1..30, the
paper's k in -30..0), ``mul`` y = x * k. Inputs x = 1..100. The default split
holds out k = 2, 16, 20, 21, 27 (25 training tasks).

Prompts exist twice: as text (for any tokenizer, e.g. a Hugging Face model's)
and as token ids for iclab's own models, whose :class:`NumberTokenizer` has one
token per integer. One token per number is the choice here: a 5-shot prompt is
24 tokens of fixed layout (BOS, then x, "->", y, "#" per shot), so batches need
no padding and every demonstration's label sits at a known position; the
price is that the model learns 25 x 100 addition facts as a lookup rather
than digit arithmetic, and periods 2/5/10 of base-10 digits have no reason to
appear in its representations (the study reports what it finds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from iclab.config import require
from iclab.errors import IclabError
from iclab.tasks.base import Batch, Split, stream

Op = Literal["add", "sub", "mul"]
TOKEN = re.compile(r"->|-?\d+|#")


class NumberTokenizer:
    """BOS, "->", "#" and one token per integer in [lo, hi]. ``encode`` parses arrow-template text."""

    specials = ("<bos>", "->", "#")

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        self.bos_id, self.arrow_id, self.sep_id = 0, 1, 2
        self.vocab_size = 3 + hi - lo + 1

    def number(self, n: torch.Tensor | int) -> torch.Tensor | int:
        """Token id(s) of integer(s) n."""
        return n - self.lo + 3

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = [self.bos_id] if bos else []
        pos = 0
        for m in TOKEN.finditer(text):
            if text[pos : m.start()].strip():
                raise IclabError(f"cannot tokenize {text[pos:m.start()]!r}: the number tokenizer reads integers, '->' and '#'")
            pos = m.end()
            tok = m.group()
            if tok == "->":
                ids.append(self.arrow_id)
            elif tok == "#":
                ids.append(self.sep_id)
            else:
                n = int(tok)
                if not self.lo <= n <= self.hi:
                    raise IclabError(f"number {n} is outside the tokenizer's range [{self.lo}, {self.hi}]")
                ids.append(int(self.number(n)))
        if text[pos:].strip():
            raise IclabError(f"cannot tokenize {text[pos:]!r}")
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.specials[i] if i < 3 else str(i - 3 + self.lo) for i in ids)


@dataclass(frozen=True)
class AddKConfig:
    name: Literal["addk"] = "addk"
    op: Op = "add"
    k_max: int = 30
    x_min: int = 1
    x_max: int = 100
    held_out: tuple[int, ...] = (2, 16, 20, 21, 27)
    shots: int = 5
    data_seed: int = 1

    def __post_init__(self) -> None:
        require(self.op in ("add", "sub", "mul"), "op", f"must be add, sub or mul, got {self.op!r}")
        require(self.k_max >= 2, "k_max", f"must be at least 2, got {self.k_max}")
        require(1 <= self.x_min <= self.x_max, "x_min", "need 1 <= x_min <= x_max")
        require(all(1 <= k <= self.k_max for k in self.held_out), "held_out", f"every held-out k must lie in [1, {self.k_max}]")
        require(len(set(self.held_out)) < self.k_max, "held_out", "must leave at least one training task")
        require(self.shots >= 1, "shots", f"must be at least 1, got {self.shots}")

    @property
    def train_tasks(self) -> list[int]:
        return [k for k in range(1, self.k_max + 1) if k not in self.held_out]

    def apply(self, x: torch.Tensor | int, k: torch.Tensor | int) -> torch.Tensor | int:
        return x + k if self.op == "add" else x - k if self.op == "sub" else x * k

    def number_range(self) -> tuple[int, int]:
        values = [self.apply(x, k) for x in (self.x_min, self.x_max) for k in (1, self.k_max)] + [self.x_min, self.x_max]
        return min(values), max(values)

    def tokenizer(self) -> NumberTokenizer:
        return NumberTokenizer(*self.number_range())

    def seq_len(self, shots: int | None = None) -> int:
        return 1 + 4 * (self.shots if shots is None else shots) + 3

    def model_io(self) -> dict:
        return {"input": "tokens", "d_vocab": self.tokenizer().vocab_size, "n_ctx": self.seq_len()}


def sample(cfg: AddKConfig, ks: torch.Tensor, shots: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs xs [B, shots + 1] (the last one is the query) and outputs ys [B, shots + 1] for tasks ks [B]."""
    xs = torch.randint(cfg.x_min, cfg.x_max + 1, (len(ks), shots + 1), generator=g)
    return xs, cfg.apply(xs, ks.unsqueeze(1))


@dataclass(frozen=True)
class PromptFormat:
    """How a demonstration and the query are written (Todd et al. 2023's prefix / separator model):
    demonstration ``in_pre + x + in_sep + out_pre + y + out_sep``, query ``in_pre + x + in_sep + out_pre``."""

    in_pre: str
    out_pre: str
    in_sep: str
    out_sep: str

    def demo(self, x: int, y: int) -> str:
        return f"{self.in_pre}{x}{self.in_sep}{self.out_pre}{y}{self.out_sep}"

    def query(self, x: int) -> str:
        return f"{self.in_pre}{x}{self.in_sep}{self.out_pre}"


# The formats of Hu et al.'s code (``subspaces/utils/prompt_formats.py``): the paper's arrow format and five
# of Todd et al.'s prefix / separator pairs. iclab's own add-k models know only "arrow".
PROMPT_FORMATS: dict[str, PromptFormat] = {
    "arrow": PromptFormat("", "->", "", "#"),
    "qa": PromptFormat("Question:", "Answer:", "\n", "\n\n"),
    "io": PromptFormat("Input:", "Output:", "\n", "\n"),
    "ab": PromptFormat("A:", "B:", " ", "\n"),
    "textlabel": PromptFormat("text:", "label:", " ", "\n\n"),
    "fx": PromptFormat("x:", "f(x):", " ", "|"),
}


def prompt_text(xs: list[int], ys: list[int], fmt: PromptFormat = PROMPT_FORMATS["arrow"]) -> str:
    """Demonstrations then the query, e.g. 'x1->y1#...#xq->' in the arrow format (the query's answer left out)."""
    return "".join(fmt.demo(x, y) for x, y in zip(xs[:-1], ys[:-1])) + fmt.query(xs[-1])


def prompt_ids(tok: NumberTokenizer, xs: torch.Tensor, ys: torch.Tensor, with_answer: bool = True) -> torch.Tensor:
    """Token ids [B, 1 + 4 n + 2 (+1)] of the arrow template for xs, ys [B, n + 1], built without text."""
    B, n1 = xs.shape
    cols = [torch.full((B,), tok.bos_id)]
    for i in range(n1):
        cols += [tok.number(xs[:, i]), torch.full((B,), tok.arrow_id)]
        if i < n1 - 1 or with_answer:
            cols.append(tok.number(ys[:, i]))
        if i < n1 - 1:
            cols.append(torch.full((B,), tok.sep_id))
    return torch.stack(cols, dim=1)


class AddKTask:
    """Training on few-shot prompts of the training tasks, with the loss on every label token."""

    def __init__(self, config: AddKConfig):
        self.config = config
        self.tok = config.tokenizer()

    def batch(self, step: int, batch_size: int, split: Split, device: torch.device | str = "cpu") -> Batch:
        cfg = self.config
        g = stream(cfg.data_seed, "prompts", split, step)
        tasks = torch.tensor(cfg.train_tasks)
        ks = tasks[torch.randint(len(tasks), (batch_size,), generator=g)]
        xs, ys = sample(cfg, ks, cfg.shots, g)
        ids = prompt_ids(self.tok, xs, ys).to(device)
        label = torch.zeros_like(ids, dtype=torch.bool)
        label[:, 3::4] = True  # the y of every shot, the query's included
        return Batch(inputs=ids, targets=ids, extras={"label": label, "k": ks.to(device)})

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        label = batch.extras["label"][:, 1:]
        return F.cross_entropy(outputs[:, :-1][label], batch.targets[:, 1:][label])

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        pred = outputs[:, -2].argmax(-1)
        return {"loss": float(self.loss(outputs, batch)), "query_accuracy": float((pred == batch.targets[:, -1]).float().mean())}
