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
from iclab.tasks.number_functions import FUNCTIONS, TASK_OPS, draw_parameters, value_range, values

Op = Literal["add", "sub", "mul"]
# (arrow, separator) pairs: the first is the study's arrow format, the others vary training prompts' punctuation
# (``task.separators``); a tokenizer knows the first ``separators`` of them
SEPARATORS = (("->", "#"), ("=", ","), (":", ";"), ("=>", "|"))
TOKEN = re.compile("|".join(re.escape(t) for t in sorted({t for pair in SEPARATORS for t in pair}, key=len, reverse=True)) + r"|-?\d+")


class _Separators:
    """The arrow and separator tokens of a tokenizer: pair 0 ("->", "#") at ids 1, 2; pair j > 0 at the end of the
    vocabulary (``first_extra`` + 2 (j - 1), + 1), so a tokenizer with more pairs keeps every other id."""

    def _init_separators(self, separators: int, first_extra: int) -> None:
        if not 1 <= separators <= len(SEPARATORS):
            raise IclabError(f"separators must lie in [1, {len(SEPARATORS)}], got {separators}")
        self.separators, self.first_extra = separators, first_extra
        self.pair_ids = [(1, 2)] + [(first_extra + 2 * j, first_extra + 2 * j + 1) for j in range(separators - 1)]
        self.separator_ids = {t: i for pair, ids in zip(SEPARATORS, self.pair_ids) for t, i in zip(pair, ids)}
        self.separator_text = {i: t for t, i in self.separator_ids.items()}
        self.vocab_size = first_extra + 2 * (separators - 1)

    def _separator_id(self, text: str) -> int:
        if text not in self.separator_ids:
            raise IclabError(f"cannot tokenize {text!r}: this tokenizer reads integers and {', '.join(map(repr, self.separator_ids))}")
        return self.separator_ids[text]


class NumberTokenizer(_Separators):
    """BOS, "->", "#" and one token per integer in [lo, hi] (then the other separator pairs). ``encode`` parses
    arrow-template text."""

    specials = ("<bos>", "->", "#")

    def __init__(self, lo: int, hi: int, separators: int = 1):
        self.lo, self.hi = lo, hi
        self.bos_id, self.arrow_id, self.sep_id = 0, 1, 2
        self._init_separators(separators, 3 + hi - lo + 1)

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
            ids.append(int(self.number(n)) if tok is None else self._separator_id(tok))
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.specials[0] if i == 0 else self.separator_text[i] if i in self.separator_text else str(i - 3 + self.lo)
                       for i in ids)


class DigitTokenizer(_Separators):
    """BOS, "->", "#", "+", "-" and the digits 0-9 (then the other separator pairs): every number is written in
    ``width`` digits, zero-padded (7 -> "007"), after a sign token when the range has negative numbers, so every number
    is the same number of tokens and prompts keep one layout (no padding); base-10 structure is in the tokens
    themselves."""

    specials = ("<bos>", "->", "#", "+", "-")

    def __init__(self, lo: int, hi: int, separators: int = 1):
        self.lo, self.hi = lo, hi
        self.bos_id, self.arrow_id, self.sep_id, self.plus_id, self.minus_id = 0, 1, 2, 3, 4
        self.digits = len(str(max(abs(lo), abs(hi))))
        self.signed = lo < 0
        self.width = self.digits + int(self.signed)
        self._init_separators(separators, len(self.specials) + 10)

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
            ids += self.number_ids(torch.tensor([n]))[0].tolist() if tok is None else [self._separator_id(tok)]
        return ids

    def decode(self, ids: list[int]) -> str:
        out, number = [], ""
        for i in ids:
            if len(self.specials) <= i < self.first_extra:
                number += str(i - len(self.specials))
                continue
            if number:
                out.append(number.lstrip("0") or "0")
                number = ""
            out.append("" if i == self.plus_id else self.separator_text.get(i) or self.specials[i])
        if number:
            out.append(number.lstrip("0") or "0")
        return "".join(out)


def _tokens(text: str, lo: int, hi: int):
    """(separator text, None) or (None, n) for each token of arrow-template text; a clear error for anything else."""
    pos = 0
    for m in TOKEN.finditer(text):
        if text[pos : m.start()].strip():
            raise IclabError(f"cannot tokenize {text[pos:m.start()]!r}: the number tokenizers read integers and separators")
        pos = m.end()
        tok = m.group()
        if not tok.lstrip("-").isdigit():
            yield tok, None
            continue
        n = int(tok)
        if not lo <= n <= hi:
            raise IclabError(f"number {n} is outside the tokenizer's range [{lo}, {hi}]")
        yield None, n
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
    # other functions mixed into training (each prompt's drawn from ``op`` and these), so the demonstrations must say
    # which task it is, not only which k; evaluation is ``op`` only. add, sub, mul take a k of the training tasks; the
    # other functions of :mod:`iclab.tasks.number_functions` (mod, div, max, min, dist, gt, copy, reverse, digitsum)
    # their own parameter ranges. ``op_share``: the share of prompts written with ``op`` (None: every function alike)
    mix_ops: tuple[str, ...] = ()
    op_share: float | None = None
    separators: int = 1  # training prompts' punctuation drawn per prompt from the first this many of SEPARATORS
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
        require(all(o in FUNCTIONS and o != self.op for o in self.mix_ops) and len(set(self.mix_ops)) == len(self.mix_ops),
                "mix_ops", f"must be distinct functions among {', '.join(FUNCTIONS)} other than op={self.op!r}, got {list(self.mix_ops)}")
        require(self.op_share is None or (0 < self.op_share < 1 and bool(self.mix_ops)), "op_share",
                f"must lie in (0, 1) with mix_ops given, or null for every function alike, got {self.op_share}")
        require(1 <= self.separators <= len(SEPARATORS), "separators", f"must lie in [1, {len(SEPARATORS)}], got {self.separators}")

    @property
    def train_tasks(self) -> list[int]:
        return [k for k in range(1, self.k_max + 1) if k not in self.held_out]

    def apply(self, x: torch.Tensor | int, k: torch.Tensor | int, op: Op | None = None) -> torch.Tensor | int:
        """op_k(x) for the task's operation (or ``op``)."""
        return FUNCTIONS[op or self.op].fn(x, k)

    def number_range(self) -> tuple[int, int]:
        """The smallest and largest number any prompt of the training mix writes."""
        ranges = [value_range(op, self.x_min, self.x_max, self.k_max) for op in (self.op, *self.mix_ops)] + [(self.x_min, self.x_max)]
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)

    def tokenizer(self) -> NumberTokenizer | DigitTokenizer:
        return (DigitTokenizer if self.digits else NumberTokenizer)(*self.number_range(), separators=self.separators)

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
        params = {}  # the other functions' (parameter, wrong labels' parameter), each [B, 1]
        if cfg.mix_ops:  # drawn after the rest, so a mix without other operations keeps the stream it always had
            which = self._functions(batch_size, g)
            for i, op in enumerate(ops[1:], start=1):
                if op in TASK_OPS:
                    value = cfg.apply(xs, k_shown, op)
                else:
                    params[op] = draw_parameters(op, cfg.x_min, cfg.x_max, cfg.k_max, batch_size, g)
                    value = values(op, xs, *params[op], ~trusted)
                shown = torch.where(which == i, value, shown)
        extras = {"function": which.squeeze(1).to(device)}  # each prompt's function: an index into (op, *mix_ops)
        if cfg.tvp_layer is not None:  # the TVP loss's zero-shot query: a new x, the prompt's task
            x_new = torch.randint(cfg.x_min, cfg.x_max + 1, (batch_size, 1), generator=g)
            y_new = cfg.apply(x_new, ks.unsqueeze(1))
            for i, op in enumerate(ops[1:], start=1):
                y_op = cfg.apply(x_new, ks.unsqueeze(1), op) if op in TASK_OPS else FUNCTIONS[op].fn(x_new, params[op][0])
                y_new = torch.where(which == i, y_op, y_new)
            extras["tvp_zero"] = prompt_ids(self.tok, x_new, y_new).to(device)  # BOS, x', arrow, y'
        ids = prompt_ids(self.tok, xs, shown)
        if cfg.separators > 1:  # each prompt's punctuation, one pair of SEPARATORS
            pair = torch.randint(cfg.separators, (batch_size, 1), generator=g)
            arrow, sep = (torch.tensor(col)[pair] for col in zip(*self.tok.pair_ids))  # [B, 1] each
            ids = torch.where(ids == self.tok.arrow_id, arrow, torch.where(ids == self.tok.sep_id, sep, ids))
        label = torch.zeros_like(ids, dtype=torch.bool)
        at = label_positions(self.tok.width, shots)  # [shots + 1, w]
        label[:, at] = trusted.unsqueeze(-1).expand(-1, -1, self.tok.width)  # every shot's y, unless made wrong
        offset = int(torch.randint(0, cfg.max_offset + 1, (), generator=g)) if cfg.max_offset else 0
        if offset:
            pad = torch.full((batch_size, offset), self.tok.sep_id)
            ids = torch.cat([ids[:, :1], pad, ids[:, 1:]], dim=1)
            label = torch.cat([label[:, :1], torch.zeros(batch_size, offset, dtype=torch.bool), label[:, 1:]], dim=1)
        return Batch(inputs=ids.to(device), targets=ids.to(device), extras={"label": label.to(device), "k": ks.to(device), **extras})

    def _functions(self, batch_size: int, g: torch.Generator) -> torch.Tensor:
        """Each prompt's function [B, 1], an index into (op, *mix_ops): uniform, or ``op`` at ``op_share``."""
        n = 1 + len(self.config.mix_ops)
        if self.config.op_share is None:
            return torch.randint(n, (batch_size, 1), generator=g)
        is_op = torch.rand(batch_size, 1, generator=g) < self.config.op_share
        return torch.where(is_op, 0, torch.randint(1, n, (batch_size, 1), generator=g))

    @property
    def loss_needs_model(self) -> bool:
        """Whether the loss needs the model itself (the TVP loss hooks a layer), not only its outputs."""
        return self.config.tvp_layer is not None

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
