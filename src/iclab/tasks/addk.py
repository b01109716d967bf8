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
from typing import Callable, Literal

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

    width = 1  # tokens per number

    def number(self, n: torch.Tensor | int) -> torch.Tensor | int:
        """Token id(s) of integer(s) n."""
        return n - self.lo + 3

    def number_ids(self, n: torch.Tensor) -> torch.Tensor:
        """Token ids [B, width] of integers n [B]."""
        return self.number(n).unsqueeze(-1)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = [self.bos_id] if bos else []
        for tok, n in _tokens(text, self.lo, self.hi):
            ids.append(self.arrow_id if tok == "->" else self.sep_id if tok == "#" else int(self.number(n)))
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.specials[i] if i < 3 else str(i - 3 + self.lo) for i in ids)


class DigitTokenizer:
    """BOS, "->", "#", "+", "-" and the digits 0-9: every number is written in ``width`` digits, zero-padded (7 ->
    "007"), after a sign token when the range has negative numbers, so every number is the same number of tokens
    and prompts keep one layout (no padding); base-10 structure is in the tokens themselves."""

    specials = ("<bos>", "->", "#", "+", "-")

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        self.bos_id, self.arrow_id, self.sep_id, self.plus_id, self.minus_id = 0, 1, 2, 3, 4
        self.digits = len(str(max(abs(lo), abs(hi))))
        self.signed = lo < 0
        self.width = self.digits + int(self.signed)
        self.vocab_size = len(self.specials) + 10

    def number_ids(self, n: torch.Tensor) -> torch.Tensor:
        """Token ids [B, width] of integers n [B]."""
        n = torch.as_tensor(n)
        a = n.abs()
        cols = [len(self.specials) + (a // 10 ** p) % 10 for p in range(self.digits - 1, -1, -1)]
        if self.signed:
            cols.insert(0, torch.where(n < 0, self.minus_id, self.plus_id))
        return torch.stack(cols, dim=-1)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = [self.bos_id] if bos else []
        for tok, n in _tokens(text, self.lo, self.hi):
            if tok == "->":
                ids.append(self.arrow_id)
            elif tok == "#":
                ids.append(self.sep_id)
            else:
                ids += self.number_ids(torch.tensor([n]))[0].tolist()
        return ids

    def decode(self, ids: list[int]) -> str:
        out, number = [], ""
        for i in ids:
            if i >= len(self.specials):
                number += str(i - len(self.specials))
                continue
            if number:
                out.append(number.lstrip("0") or "0")
                number = ""
            out.append("" if i == self.plus_id else self.specials[i])
        if number:
            out.append(number.lstrip("0") or "0")
        return "".join(out)


def _tokens(text: str, lo: int, hi: int):
    """("->" | "#" | "n", int or None) for each token of arrow-template text; a clear error for anything else."""
    pos = 0
    for m in TOKEN.finditer(text):
        if text[pos : m.start()].strip():
            raise IclabError(f"cannot tokenize {text[pos:m.start()]!r}: the number tokenizer reads integers, '->' and '#'")
        pos = m.end()
        tok = m.group()
        if tok in ("->", "#"):
            yield tok, None
            continue
        n = int(tok)
        if not lo <= n <= hi:
            raise IclabError(f"number {n} is outside the tokenizer's range [{lo}, {hi}]")
        yield "n", n
    if text[pos:].strip():
        raise IclabError(f"cannot tokenize {text[pos:]!r}")


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
    # Training mix (defaults: every prompt 5-shot, clean, at the same positions). ``min_shots``: each batch's number
    # of shots is drawn from [min_shots, shots]; ``max_offset``: each batch starts after 0..max_offset extra "#"
    # tokens, so no demonstration sits at a fixed position; ``label_noise``: the chance that a demonstration's label
    # is another task's answer (x + k', k' != k), with no loss on it, so one demonstration cannot be trusted alone.
    min_shots: int | None = None
    max_offset: int = 0
    label_noise: float = 0.0
    digits: bool = False  # numbers as fixed-width digit tokens (DigitTokenizer) instead of one token per number
    # other operations mixed into training (each prompt's operation drawn uniformly from ``op`` and these, with a k of
    # the training tasks), so the demonstrations must say which task it is, not only which k; evaluation is ``op`` only
    mix_ops: tuple[Op, ...] = ()
    # Yang et al. (2025)'s task-vector prompting loss: each prompt's residual stream entering layer ``tvp_layer`` at
    # its query's arrow replaces that of a zero-shot prompt of the same task with a new x (BOS, x', arrow), whose
    # answer is then also trained, weighted ``tvp_weight``; a model trained so holds its task vector at that layer
    tvp_layer: int | None = None
    tvp_weight: float = 1.0

    def __post_init__(self) -> None:
        require(self.op in ("add", "sub", "mul"), "op", f"must be add, sub or mul, got {self.op!r}")
        require(self.k_max >= 2, "k_max", f"must be at least 2, got {self.k_max}")
        require(1 <= self.x_min <= self.x_max, "x_min", "need 1 <= x_min <= x_max")
        require(all(1 <= k <= self.k_max for k in self.held_out), "held_out", f"every held-out k must lie in [1, {self.k_max}]")
        require(len(set(self.held_out)) < self.k_max, "held_out", "must leave at least one training task")
        require(self.shots >= 1, "shots", f"must be at least 1, got {self.shots}")
        require(self.min_shots is None or 0 <= self.min_shots <= self.shots, "min_shots",
                f"must lie in [0, shots={self.shots}], or null for always {self.shots}")
        require(self.max_offset >= 0, "max_offset", f"must be at least 0, got {self.max_offset}")
        require(0 <= self.label_noise < 1, "label_noise", f"must lie in [0, 1), got {self.label_noise}")
        require(self.tvp_layer is None or self.tvp_layer >= 0, "tvp_layer", f"must be a layer (>= 0) or null, got {self.tvp_layer}")
        require(self.tvp_weight > 0, "tvp_weight", f"must be > 0, got {self.tvp_weight}")
        require(all(o in ("add", "sub", "mul") and o != self.op for o in self.mix_ops) and len(set(self.mix_ops)) == len(self.mix_ops),
                "mix_ops", f"must be distinct operations among add, sub, mul other than op={self.op!r}, got {list(self.mix_ops)}")

    @property
    def train_tasks(self) -> list[int]:
        return [k for k in range(1, self.k_max + 1) if k not in self.held_out]

    def apply(self, x: torch.Tensor | int, k: torch.Tensor | int, op: Op | None = None) -> torch.Tensor | int:
        """op_k(x) for the task's operation (or ``op``)."""
        op = op or self.op
        return x + k if op == "add" else x - k if op == "sub" else x * k

    def number_range(self) -> tuple[int, int]:
        """The smallest and largest number any prompt of the training mix writes."""
        values = [self.apply(x, k, op) for op in (self.op, *self.mix_ops) for x in (self.x_min, self.x_max) for k in (1, self.k_max)]
        values += [self.x_min, self.x_max]
        return min(values), max(values)

    def tokenizer(self) -> NumberTokenizer | DigitTokenizer:
        return (DigitTokenizer if self.digits else NumberTokenizer)(*self.number_range())

    def seq_len(self, shots: int | None = None) -> int:
        """Tokens of a training prompt (BOS, each shot x -> y #, the query x -> y)."""
        w = self.tokenizer().width
        return 1 + (2 * w + 2) * (self.shots if shots is None else shots) + 2 * w + 1

    def model_io(self) -> dict:
        return {"input": "tokens", "d_vocab": self.tokenizer().vocab_size, "n_ctx": self.seq_len() + self.max_offset}


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


def prompt_ids(tok: NumberTokenizer | DigitTokenizer, xs: torch.Tensor, ys: torch.Tensor, with_answer: bool = True) -> torch.Tensor:
    """Token ids [B, T] of the arrow template for xs, ys [B, n + 1], built without text (each number ``tok.width``
    tokens; T = 1 + (2 w + 2) n + 2 w + 1, or w fewer without the answer)."""
    B, n1 = xs.shape
    cols = [torch.full((B, 1), tok.bos_id)]
    for i in range(n1):
        cols += [tok.number_ids(xs[:, i]), torch.full((B, 1), tok.arrow_id)]
        if i < n1 - 1 or with_answer:
            cols.append(tok.number_ids(ys[:, i]))
        if i < n1 - 1:
            cols.append(torch.full((B, 1), tok.sep_id))
    return torch.cat(cols, dim=1)


def label_positions(width: int, shots: int) -> torch.Tensor:
    """Positions [shots + 1, width] of each shot's y tokens (the query's answer last) in :func:`prompt_ids`'s layout."""
    starts = 1 + (2 * width + 2) * torch.arange(shots + 1) + width + 1
    return starts.unsqueeze(1) + torch.arange(width)


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
        shots = cfg.shots if cfg.min_shots is None else int(torch.randint(cfg.min_shots, cfg.shots + 1, (), generator=g))
        xs, ys = sample(cfg, ks, shots, g)
        k_shown = ks.unsqueeze(1).expand(-1, shots + 1)  # the k each label is written with
        trusted = torch.ones(batch_size, shots + 1, dtype=torch.bool)
        if cfg.label_noise > 0:
            wrong = torch.rand(batch_size, shots + 1, generator=g) < cfg.label_noise
            wrong[:, -1] = False  # the query's answer is always right
            other = torch.randint(1, cfg.k_max, (batch_size, shots + 1), generator=g)
            other = other + (other >= ks.unsqueeze(1)).long()  # k' != k, uniform over the other tasks
            k_shown = torch.where(wrong, other, k_shown)
            trusted = ~wrong
        shown = cfg.apply(xs, k_shown)
        ops = (cfg.op, *cfg.mix_ops)
        which = torch.zeros(batch_size, 1, dtype=torch.long)
        if cfg.mix_ops:  # drawn after the rest, so a mix without other operations keeps the stream it always had
            which = torch.randint(len(ops), (batch_size, 1), generator=g)  # each prompt's operation
            for i, op in enumerate(ops[1:], start=1):
                shown = torch.where(which == i, cfg.apply(xs, k_shown, op), shown)
        extras = {}
        if cfg.tvp_layer is not None:  # the TVP loss's zero-shot query: a new x, the prompt's task
            x_new = torch.randint(cfg.x_min, cfg.x_max + 1, (batch_size, 1), generator=g)
            y_new = cfg.apply(x_new, ks.unsqueeze(1))
            for i, op in enumerate(ops[1:], start=1):
                y_new = torch.where(which == i, cfg.apply(x_new, ks.unsqueeze(1), op), y_new)
            extras["tvp_zero"] = prompt_ids(self.tok, x_new, y_new).to(device)  # BOS, x', arrow, y'
        ids = prompt_ids(self.tok, xs, shown)
        label = torch.zeros_like(ids, dtype=torch.bool)
        at = label_positions(self.tok.width, shots)  # [shots + 1, w]
        label[:, at] = trusted.unsqueeze(-1).expand(-1, -1, self.tok.width)  # every shot's y, unless made wrong
        offset = int(torch.randint(0, cfg.max_offset + 1, (), generator=g)) if cfg.max_offset else 0
        if offset:
            pad = torch.full((batch_size, offset), self.tok.sep_id)
            ids = torch.cat([ids[:, :1], pad, ids[:, 1:]], dim=1)
            label = torch.cat([label[:, :1], torch.zeros(batch_size, offset, dtype=torch.bool), label[:, 1:]], dim=1)
        return Batch(inputs=ids.to(device), targets=ids.to(device), extras={"label": label.to(device), "k": ks.to(device), **extras})

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        label = batch.extras["label"][:, 1:]
        return F.cross_entropy(outputs[:, :-1][label], batch.targets[:, 1:][label])

    def model_loss(self, model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> torch.Tensor:
        """The training loss, given the model: the few-shot loss, plus with ``tvp_layer`` the TVP loss (Yang et al.
        2025): the prompt's residual entering that layer at the query's arrow, put in place of that of a zero-shot
        query of the same task with another x (drawn with the batch), must give that query's answer. Gradients flow
        through both passes, so the few-shot pass learns to put the task there and the zero-shot pass to read it; a
        new x keeps the vector from carrying the prompt's own query and answer instead of the task."""
        layer = self.config.tvp_layer
        if layer is None:
            return self.loss(forward(batch.inputs), batch)
        if layer >= len(model.blocks):
            raise IclabError(f"task.tvp_layer={layer} is outside the model's layers [0, {len(model.blocks) - 1}]")
        w, ids = self.tok.width, batch.inputs
        arrow = ids.shape[1] - w - 1  # the query's arrow: its answer's w tokens close every training prompt
        hook = model.blocks[layer].hook_resid_pre
        kept: list[torch.Tensor] = []
        handle = hook.register_forward_hook(lambda mod, inp, out: kept.append(out[:, arrow]))
        try:
            few = self.loss(forward(ids), batch)
        finally:
            handle.remove()
        zero = batch.extras["tvp_zero"]  # BOS, x', arrow, y'

        def put(mod, inp, out):
            out = out.clone()
            out[:, w + 1] = kept[0]
            return out

        handle = hook.register_forward_hook(put)
        try:
            logits = forward(zero)
        finally:
            handle.remove()
        tvp = F.cross_entropy(logits[:, -w - 1 : -1].reshape(-1, logits.shape[-1]), zero[:, -w:].reshape(-1))
        return few + self.config.tvp_weight * tvp

    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        w = self.tok.width
        pred = outputs[:, -w - 1 : -1].argmax(-1)  # [B, w]: the query's answer, every token right
        right = (pred == batch.targets[:, -w:]).all(dim=-1)
        return {"loss": float(self.loss(outputs, batch)), "query_accuracy": float(right.float().mean())}
