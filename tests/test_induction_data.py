"""Induction-study data: spans really repeat at random places, Markov chains follow their matrix, stdlib split by file."""

import pytest
import torch

from iclab.tasks import InductionConfig, InductionTask, make_task
from iclab.tasks.induction import FAMILIES, markov_sequences, repeat_sequences, span_sequences, stdlib_corpus
from iclab.train import apply_overrides, default_config, train


def test_copied_spans_repeat_earlier_tokens_at_random_positions():
    cfg = InductionConfig(n_ctx=64, span_min=4, span_max=10, n_spans=2)
    tokens, repeated = span_sequences(cfg, 32, torch.Generator().manual_seed(0))
    assert tokens.shape == (32, 64) and repeated.any(dim=1).all()
    for b in range(32):
        for t in torch.nonzero(repeated[b]).flatten().tolist():
            # a copied token continues a copy of an earlier stretch: some earlier s has the same two tokens
            pairs = [(int(tokens[b, s - 1]), int(tokens[b, s])) for s in range(1, t - 1)]
            assert (int(tokens[b, t - 1]), int(tokens[b, t])) in pairs
    first = [int(torch.nonzero(r)[0]) for r in repeated]
    assert len(set(first)) > 8, "copy positions must vary between sequences"
    # the distance back to the source varies over most of the context: no positional shortcut
    offsets = []
    for b in range(32):
        for t in torch.nonzero(repeated[b]).flatten().tolist():
            offsets += [t - s for s in range(1, t - 1) if (tokens[b, s - 1], tokens[b, s]) == (tokens[b, t - 1], tokens[b, t])]
    assert max(offsets) - min(offsets) > 32
    assert repeated[:, -8:].float().mean() > 0.15, "late tokens, where the ICL score is read, are often copies"


def test_repeats_have_a_random_period_and_start_per_sequence():
    cfg = InductionConfig(n_ctx=64, span_min=4)
    tokens, repeated = repeat_sequences(cfg, 256, torch.Generator().manual_seed(0))
    periods, starts = [], []
    for seq, rep in zip(tokens, repeated):
        first = int(torch.nonzero(rep)[0])  # the first predictable copy: start + period + 1
        period = next(p for p in range(cfg.span_min, 64) if torch.equal(seq[first - 1 :], seq[first - 1 - p : 64 - p]))
        assert rep[first:].all() and not rep[:first].any()
        periods.append(period)
        starts.append(first - 1 - period)
    assert min(periods) == cfg.span_min and max(periods) >= 24, "periods cover a wide range: no fixed offset to copy by"
    assert min(starts) == 0 and max(starts) >= 12
    assert all(s + 2 * p <= 64 for s, p in zip(starts, periods)), "every repeat is seen whole at least twice"


def test_markov_chains_use_few_states_and_a_fresh_matrix_per_sequence():
    cfg = InductionConfig(n_ctx=256, markov_states=4)
    seqs = markov_sequences(cfg, 8, torch.Generator().manual_seed(1))
    assert all(len(torch.unique(s)) <= 4 for s in seqs)
    def bigram_counts(s):
        states = {int(v): i for i, v in enumerate(torch.unique(s))}
        counts = torch.zeros(4, 4)
        for a, b in zip(s[:-1].tolist(), s[1:].tolist()):
            counts[states[a], states[b]] += 1
        return counts / counts.sum(1, keepdim=True).clamp(min=1)
    assert not torch.allclose(bigram_counts(seqs[0]), bigram_counts(seqs[1]), atol=0.1)


def test_the_stdlib_corpus_is_split_by_file_and_batches_are_pure():
    train_bytes, eval_bytes = stdlib_corpus("train", 0.1), stdlib_corpus("eval", 0.1)
    assert len(train_bytes) > 5 * len(eval_bytes) > 0
    task = InductionTask(InductionConfig(natural_share=0.5, markov_share=0.25))
    a, b = task.batch(3, 16, "train"), task.batch(3, 16, "train")
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, task.batch(3, 16, "eval").inputs)
    assert a.inputs.max() < 256 and (a.extras["family"] == FAMILIES.index("natural")).sum() == 8
    mixed = InductionTask(InductionConfig(natural_share=0.25, repeat_share=0.5)).batch(0, 16, "train")
    counts = torch.bincount(mixed.extras["family"], minlength=len(FAMILIES)).tolist()
    assert counts == [4, 0, 4, 8]
    odd = InductionTask(InductionConfig(natural_share=0.5, repeat_share=0.5)).batch(0, 3, "train")
    assert len(odd.inputs) == 3, "rounding the shares never makes a batch larger than asked"
    assert mixed.extras["repeated"][mixed.extras["family"] == 3].float().mean() > 0.4


def test_an_attention_only_model_trains_on_the_task(tmp_path):
    cfg = apply_overrides(default_config("induction"), [
        "task.n_ctx=32", "task.span_max=8", "model.n_layers=1", "model.d_model=32", "model.attn_only=true",
        "model.positional=shortformer", "train.steps=30", "train.batch_size=8",
    ])
    result = train(cfg, tmp_path / "r", progress=False)
    assert {"loss", "icl_score", "repeated_token_loss"} <= set(result.summary["final_eval"])
    assert make_task(cfg.task).config.name == "induction"


def test_the_training_metric_and_the_studys_icl_score_are_one_definition():
    """The ICL score logged during training equals the study's score on the same batch (same token positions)."""
    from iclab.analysis.induction.evidence import token_losses
    from iclab.heads import IclabHeadModel
    from iclab.models import ModelConfig, Transformer
    from iclab.tasks.induction import InductionConfig, InductionTask, icl_positions, icl_score

    task = InductionTask(InductionConfig(n_ctx=64, natural_share=0.0))
    model = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, attn_only=True, **task.config.model_io()),
                        generator=torch.Generator().manual_seed(0)).eval()
    batch = task.batch(0, 8, "eval")
    with torch.no_grad():
        logged = task.metrics(model(batch.inputs), batch)["icl_score"]
    assert icl_positions(64) == (62, 6)
    assert logged == pytest.approx(icl_score(token_losses(IclabHeadModel(model), batch.inputs), *icl_positions(64)), abs=1e-6)
