"""Prompt pairs for patching, as a user gives them: one pair as texts, or a JSON-lines file of pairs.

A pair's texts become :class:`~iclab.analysis.patching.PromptPair` token ids through :func:`encode_pairs`; the answer
and the wrong answer must each be one token of the model (a leading space often makes one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from iclab.analysis.patching import PromptPair
from iclab.errors import IclabError
from iclab.heads.base import HeadModel


@dataclass(frozen=True)
class PairText:
    """One pair as text; ``where`` names its source in errors ("--" for options, "pairs.jsonl line 3: " for a file)."""

    where: str
    clean: str
    corrupt: str
    answer: str
    wrong: str | None = None


def read_pairs(path: Path) -> list[PairText]:
    """The pairs of a JSON-lines file, one ``{"clean", "corrupt", "answer", "wrong"?}`` object a line (blank lines
    skipped); a one-line error naming the line that is not such an object, or a file with none."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise IclabError(f"--pairs {str(path)!r}: {getattr(err, 'strerror', None) or err}") from None
    pairs = []
    for n, line in enumerate(lines, 1):
        where = f"{path.name} line {n}: "
        try:
            row = json.loads(line)
            pairs.append(PairText(where, row["clean"], row["corrupt"], row["answer"], row.get("wrong")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise IclabError(f"{where}expected a JSON object with clean, corrupt, answer (and wrong), got {line[:80]!r}") from None
    if not pairs:
        raise IclabError(f"--pairs {str(path)!r} holds no pair")
    return pairs


def pair_texts(pairs_file: Path | None, clean: str | None, corrupt: str | None, answer: str | None,
               wrong: str | None) -> list[PairText]:
    """The pairs from ``pairs_file`` or else the one pair given as texts (the ``iclab patch`` options)."""
    single = (clean, corrupt, answer)
    if pairs_file is not None:
        if any(v is not None for v in (*single, wrong)):
            raise IclabError("give either --pairs or --clean/--corrupt/--answer/--wrong, not both")
        return read_pairs(pairs_file)
    missing = [name for name, v in zip(("--clean", "--corrupt", "--answer"), single) if v is None]
    if missing:
        raise IclabError(f"missing {', '.join(missing)}: give a prompt pair (--clean, --corrupt, --answer) or --pairs FILE")
    return [PairText("--", clean, corrupt, answer, wrong)]


def encode_pairs(model: HeadModel, texts: list[PairText]) -> list[PromptPair]:
    """Token ids of each pair for ``model``; the answers must be one token each."""
    return [PromptPair(model.encode(t.clean), model.encode(t.corrupt), model.token_id(t.answer, f"{t.where}answer"),
                       model.token_id(t.wrong, f"{t.where}wrong") if t.wrong is not None else None) for t in texts]
