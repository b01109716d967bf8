"""Head ablations on SmolLM2-135M as the pretrained induction study runs them: the passes from the clean prefix against
whole passes, and float32 against bfloat16 autocast.

The study's workload (`iclab run induction --model smollm2-135m`'s ablation part): 8 windows of 256 tokens of the
pydoc text, 16 repeated-random-token probes of 2 x 25 tokens, the four induction heads L18H6, L17H4, L17H5, L17H3 and
three draws of four random heads of the same layers, each zero- and mean-ablated. Timed side by side in one process:
  - whole: every ablated pass runs every layer (iclab 0.13);
  - prefix: every ablated pass starts at the first layer an ablation changes, from the clean pass's residual stream
    there (iclab 0.14); the numbers must be the same;
  - read: the prefix passes unembedding only the positions the effects read, the probe's second copy and the text's
    late and early tokens (`ablation_effects`, iclab 0.15); the numbers must be the same;
  - bf16: the read passes under bfloat16 autocast (where the CPU multiplies bf16 natively): how far the second-copy
    loss and the ICL score move, against the speed issue's bar of 0.01 for a lower precision.

    python benchmarks/ablations.py          # needs `iclab models get smollm2-135m`
"""

from __future__ import annotations

import time

import torch

import iclab.analysis.induction.evidence as E
from iclab.heads import load_model
from iclab.results import Head
from iclab.studies.induction.settings import PretrainedProbe

INDUCTION = [Head(18, 6), Head(17, 4), Head(17, 5), Head(17, 3)]


def whole_passes(model, sets, modes, z_mean, text, probe, batch) -> dict:
    """The effects as iclab 0.13 computed them: every pass through every layer."""
    def effect(iv):
        return E.AblationEffect(probe.copy_losses(E.token_losses(model, probe.ids, iv, batch))[1],
                                E.text_icl(E.token_losses(model, text, iv, batch))[0])

    clean = effect(None)
    return {mode: {"clean": clean, **{name: effect(E.ablation(model, heads, mode, z_mean)) for name, heads in sets.items()}}
            for mode in modes}


def prefix_passes(model, sets, modes, z_mean, text, probe, batch) -> dict:
    """The effects as iclab 0.14 computed them: from the clean prefix, every position unembedded."""
    ablations = {(m, name): E.ablation(model, heads, m, z_mean) for m in modes for name, heads in sets.items()}
    start = min(iv.first_layer_changed() for iv in ablations.values())
    probe_clean, probe_prefix = E.clean_token_losses(model, probe.ids, batch, start)
    text_clean, text_prefix = E.clean_token_losses(model, text, batch, start)

    def effect(p, t):
        return E.AblationEffect(probe.copy_losses(p)[1], E.text_icl(t)[0])

    clean = effect(probe_clean, text_clean)
    return {m: {"clean": clean, **{name: effect(E.token_losses(model, probe.ids, ablations[m, name], batch, probe_prefix),
                                                E.token_losses(model, text, ablations[m, name], batch, text_prefix))
                                   for name in sets}} for m in modes}


def largest_change(a: dict, b: dict) -> tuple[float, float]:
    """The largest difference of the second-copy loss and of the ICL score over every mode and head set."""
    pairs = [(a[m][n], b[m][n]) for m in a for n in a[m]]
    return (max(abs(x.second_copy_loss - y.second_copy_loss) for x, y in pairs),
            max(abs(x.icl_score - y.icl_score) for x, y in pairs))


def main() -> None:
    from iclab.device import fast_bf16

    model = load_model("smollm2-135m", log=lambda s: None)
    p = PretrainedProbe()
    g = torch.Generator().manual_seed(0)
    text = E.natural_text_ids(model, p.text_sequences, p.text_length, g)
    probe = E.InductionProbe.make(model, p.probe_batch, p.probe_length, g)
    sets = {"induction": INDUCTION, **{f"random{i}": E.random_heads_like(INDUCTION, model.n_heads, g, model.n_layers)
                                       for i in range(p.random_draws)}}
    modes = ("zero", "mean")
    z_mean = E.mean_head_z(model, text, p.batch)
    print(f"SmolLM2-135M, {len(sets)} head sets x {len(modes)} modes, {torch.get_num_threads()} threads")
    runs = {}
    variants = {"whole": whole_passes, "prefix": prefix_passes, "read": E.ablation_effects, "bf16": E.ablation_effects}
    for name, fn in variants.items():
        bf16 = name == "bf16"
        if bf16 and not fast_bf16("cpu"):
            print("bf16: this CPU has no native bfloat16 products; skipped")
            continue
        t0 = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            runs[name] = (fn(model, sets, modes, z_mean, text, probe, p.batch), time.perf_counter() - t0)
        print(f"{name:>6}: {runs[name][1]:6.1f} s")
    base, t_base = runs["whole"]
    for name in ("prefix", "read", "bf16"):
        if name in runs:
            loss, icl = largest_change(base, runs[name][0])
            print(f"{name} vs whole: {t_base / runs[name][1]:.2f}x faster; largest change of the second-copy loss {loss:.4f} "
                  f"nats, of the ICL score {icl:.4f}")


if __name__ == "__main__":
    main()
