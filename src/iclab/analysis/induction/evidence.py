"""Induction evidence on any :class:`~iclab.heads.HeadModel`, a real pretrained LM included (Olsson et al. 2022).

What the paper's small-model arguments become on a model with MLPs that iclab
did not train: per-head scores (prefix-matching, copying, previous-token),
in-context learning on natural text (the ICL score and the per-token loss
curve), and causal evidence by ablating the top induction heads against heads
drawn at random from the same layers.

Shapes: ids [B, T]; per-token losses [B, T-1] (loss of predicting token t+1);
heads are :class:`~iclab.results.Head` values; mean z [L, H, E].
Natural text is the Python reference documentation shipped with CPython
(``pydoc_data.topics``, ~465k characters of English), present on every machine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from iclab.analysis.heads import repeated_random_tokens
from iclab.analysis.patching import PromptPair
from iclab.heads import HeadModel, Intervention
from iclab.results import Head
from iclab.tasks.induction import InductionTask, icl_positions, icl_score
from iclab.progress import track


def pydoc_text() -> str:
    """The Python reference documentation's topics, joined in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def natural_text_ids(model: HeadModel, n_seq: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """[n_seq, length] token ids: BOS (when the model has one) + non-overlapping windows of the tokenised pydoc text,
    ``n_seq`` of them drawn without replacement."""
    ids = torch.tensor(model.encode(pydoc_text(), bos=False))
    body = length - (model.bos_id is not None)
    windows = ids[: len(ids) // body * body].view(-1, body)
    if len(windows) < n_seq:
        raise ValueError(f"the pydoc text gives {len(windows)} windows of {body} tokens, fewer than {n_seq}")
    chosen = windows[torch.randperm(len(windows), generator=generator)[:n_seq]]
    if model.bos_id is None:
        return chosen
    return torch.cat([torch.full((n_seq, 1), model.bos_id, dtype=chosen.dtype), chosen], dim=1)


LOGIT_BUDGET = 2**27  # numbers of logits one forward pass may hold (512 MB in float32)


@dataclass
class CleanPrefix:
    """A clean pass's residual stream entering ``layer``, one [b, T, D] per batch of :func:`token_losses` over the same
    ids: passes under interventions that change nothing before ``layer`` start there (:meth:`HeadModel.resumed_at`)
    and give the same losses without rerunning the layers before it."""

    layer: int
    resid: list[torch.Tensor]


@torch.no_grad()
def token_losses(model: HeadModel, ids: torch.Tensor, intervention: Intervention | None = None, batch: int = 8,
                 prefix: CleanPrefix | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1] next-token losses (nats) under ``intervention``, computed ``batch`` sequences at a time: the one
    per-token loss of every analysis (the induction task's own definition, :meth:`InductionTask.token_losses`).
    The batch shrinks so that its logits stay under :data:`LOGIT_BUDGET` numbers (8 x 256 positions of a 262k
    vocabulary would be 2.1 GB, twice over with the log-softmax). With ``prefix`` (from :func:`clean_token_losses` on
    the same ids and batch), each batch starts at the prefix's layer. With ``positions`` [P] (loss indices), [B, P]:
    the losses there only, the other positions never unembedded (a real vocabulary's unembedding and log-softmax are
    most of a pass that reads two positions of 255)."""
    batch = max(1, min(batch, LOGIT_BUDGET // max(1, ids.shape[1] * model.d_vocab)))
    first = None if intervention is None or prefix is None else intervention.first_layer_changed()
    if first is not None and first < prefix.layer:
        raise ValueError(f"the intervention changes layer {first}, before the clean prefix's layer {prefix.layer}")
    out = []
    for k, i in enumerate(range(0, len(ids), batch)):
        x = ids[i : i + batch].to(model.device)
        with model.resumed_at(prefix.layer, prefix.resid[k]) if prefix is not None else contextlib.nullcontext():
            logits = model.logits(x, intervention, positions)  # [b, T, V], or [b, P, V]
            out.append(InductionTask.token_losses(logits, x, positions).cpu())
    return torch.cat(out)


def clean_token_losses(model: HeadModel, ids: torch.Tensor, batch: int, layer: int,
                       positions: torch.Tensor | None = None) -> tuple[torch.Tensor, CleanPrefix]:
    """:func:`token_losses` of ``ids`` (at ``positions``) without intervention, and each batch's residual stream
    entering ``layer``."""
    with model.recording_resid(layer) as kept:
        losses = token_losses(model, ids, None, batch, positions=positions)
    return losses, CleanPrefix(layer, kept)


@torch.no_grad()
def mean_head_z(model: HeadModel, ids: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """[L, H, E]: every head's z averaged over all positions of ``ids`` (the value mean ablation writes in)."""
    total, count = None, 0
    batch = max(1, min(batch, LOGIT_BUDGET // max(1, ids.shape[1] * model.d_vocab)))  # as token_losses does
    for i in range(0, len(ids), batch):
        with model.capture_z() as cache:
            model.logits(ids[i : i + batch].to(model.device), positions=torch.tensor([0]))  # z is all it reads
        z = cache.z  # [L, b, T, H, E]
        part = z.sum(dim=(1, 2))
        total = part if total is None else total + part
        count += z.shape[1] * z.shape[2]
    return (total / count).cpu()


def top_heads(scores: torch.Tensor, k: int) -> list[Head]:
    """The ``k`` heads with the largest scores [L, H], best first."""
    order = torch.argsort(scores.flatten(), descending=True)[:k]
    return [Head(*divmod(int(i), scores.shape[1])) for i in order]


def random_heads_like(heads: list[Head], n_heads: int, generator: torch.Generator, n_layers: int | None = None) -> list[Head]:
    """As many heads as ``heads``, one per given head, drawn from the same layer among heads not in ``heads`` nor drawn
    before (the control for an ablation: same layers, same count).

    A layer with no head left (its induction heads fill it: Gemma 3 270M has 4 heads a layer) gives its draw to the
    nearest layers by depth that have one (``n_layers`` needed), chosen uniformly among their free heads; with no
    free head anywhere the draw is skipped, so the control can be smaller. :func:`control_note` says how a draw
    departed from "same layers, same count"."""
    heads = [Head(*h) for h in heads]  # (layer, head) pairs too
    taken = set(heads)
    out: list[Head] = []
    layers = range(n_layers) if n_layers is not None else sorted({h.layer for h in heads})
    for layer, _ in heads:
        free: list[Head] = []
        for distance in range(len(layers) + 1):  # the same layer first, then the nearest ones by depth
            free = [Head(lay, h) for lay in layers if abs(lay - layer) == distance for h in range(n_heads) if (lay, h) not in taken]
            if free:
                break
        if not free:
            continue
        pick = free[int(torch.randint(len(free), (1,), generator=generator))]
        taken.add(pick)
        out.append(pick)
    return out


def control_note(heads: list[Head], controls: list[list[Head]]) -> str:
    """How random controls drawn by :func:`random_heads_like` differ from "same layers, same count" ("" if not)."""
    layers = {Head(*g).layer for g in heads}
    moved = sum(sum(1 for h in c if h.layer not in layers) for c in controls)
    short = sum(len(heads) - len(c) for c in controls)
    notes = []
    if moved:
        notes.append(f"{moved} of the controls' {sum(len(c) for c in controls)} heads come from the nearest layers by depth "
                     "(the induction heads' layers have no other head left)")
    if short:
        notes.append(f"{short} draws skipped (no free head left in the model)")
    return "; ".join(notes)


def ablation(model: HeadModel, heads: list[Head], mode: str, z_mean: torch.Tensor | None = None) -> Intervention:
    """Zero ablation (head_scale 0) or mean ablation (z replaced by ``z_mean``: [L, H, E], or [L, T, H, E] per position)
    of ``heads`` at every position: the one way the induction analyses ablate heads."""
    L, H = model.n_layers, model.n_heads
    mask = torch.zeros(L, H, dtype=torch.bool)
    for layer, h in heads:
        mask[layer, h] = True
    if mode == "zero":
        return Intervention(head_scale=(~mask).float())
    if mode == "mean":
        return Intervention(replace_mask=mask, replace_z=z_mean)
    raise ValueError(f"ablation mode {mode!r} is not zero or mean")


@dataclass
class InductionProbe:
    """Repeated random tokens: BOS + ``length`` tokens, twice. ids [B, 1 + 2 * length]."""

    ids: torch.Tensor
    length: int

    @classmethod
    def make(cls, model: HeadModel, batch: int, length: int, generator: torch.Generator) -> "InductionProbe":
        return cls(repeated_random_tokens(batch, length, 2, model.probe_vocab(), generator, bos=model.bos_id), length)

    def copy_positions(self) -> tuple[slice, slice]:
        """The loss indices of the first and of the second copy's tokens (length - 1 each), the first token of each
        copy left out (it cannot be predicted in either copy)."""
        off = self.ids.shape[1] - 2 * self.length  # 0 without BOS, 1 with (loss t predicts token t + 1)
        return slice(off, off + self.length - 1), slice(off + self.length, off + 2 * self.length - 1)

    def copy_losses(self, losses: torch.Tensor) -> tuple[float, float]:
        """Mean loss on the first and on the second copy (the second is predictable by induction); losses [B, T-1]."""
        first, second = self.copy_positions()
        return float(losses[:, first].mean()), float(losses[:, second].mean())


def text_icl(losses: torch.Tensor) -> tuple[float, list[float]]:
    """ICL score (Olsson et al.'s late minus early token loss, rescaled to the length) and the mean loss per position."""
    late, early = icl_positions(losses.shape[1] + 1)
    return icl_score(losses, late, early), losses.mean(0).tolist()


@dataclass(frozen=True)
class AblationEffect:
    """The second-copy loss on the repeated-token probe and the ICL score on text, under one ablation."""

    second_copy_loss: float
    icl_score: float


def ablation_effects(model: HeadModel, condition_heads: dict[str, list[Head]], modes: tuple[str, ...], z_mean: torch.Tensor,
                     text: torch.Tensor, probe: InductionProbe, batch: int = 8) -> dict[str, dict[str, AblationEffect]]:
    """For each mode and each named head set: the second-copy loss on ``probe`` and the ICL score on ``text``
    with those heads ablated; ``"clean"`` (no ablation) under every mode for reference."""

    ablations = {(mode, name): ablation(model, heads, mode, z_mean) for mode in modes for name, heads in condition_heads.items()}
    # every ablated pass starts at the first layer any of them changes, from the clean pass's residual stream there
    start = min((layer for iv in ablations.values() if (layer := iv.first_layer_changed()) is not None), default=model.n_layers)
    # and unembeds only the positions the effects read: the probe's second copy, the text's late and early tokens
    second = torch.arange(probe.ids.shape[1])[probe.copy_positions()[1]]
    late, early = icl_positions(text.shape[1])
    probe_clean, probe_prefix = clean_token_losses(model, probe.ids, batch, start, second)
    text_clean, text_prefix = clean_token_losses(model, text, batch, start, torch.tensor([late, early]))

    def effect(second_copy: torch.Tensor, late_early: torch.Tensor) -> AblationEffect:  # [B, length - 1], [B, 2]
        return AblationEffect(float(second_copy.mean()), icl_score(late_early, 0, 1))

    clean = effect(probe_clean, text_clean)
    effects = {key: effect(token_losses(model, probe.ids, iv, batch, probe_prefix, second),
                           token_losses(model, text, iv, batch, text_prefix, torch.tensor([late, early])))
               for key, iv in track(list(ablations.items()), what="ablated head sets")}
    return {mode: {"clean": clean, **{name: effects[mode, name] for name in condition_heads}} for mode in modes}


def first_copy_corrupted_pairs(model: HeadModel, n: int, length: int, generator: torch.Generator) -> list[PromptPair]:
    """Prompt pairs for patching induction: clean = BOS + r + r without its last token, answer r's last token (what
    an induction head predicts); corrupted = the same with the first copy replaced by other random tokens, so that
    nothing in the context points to the answer. Both ``1 + 2 * length - 1`` tokens."""
    vocab = model.probe_vocab()
    pairs = []
    for _ in range(n):
        r, other = (vocab[torch.randint(len(vocab), (length,), generator=generator)].tolist() for _ in range(2))
        bos = [] if model.bos_id is None else [model.bos_id]
        pairs.append(PromptPair(bos + r + r[:-1], bos + other + r[:-1], answer=r[-1]))
    return pairs
