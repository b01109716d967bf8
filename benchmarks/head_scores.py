"""All head scores of real-vocabulary models: wall time and peak memory, and what the old [L, H, N, V] tensor needed.

Scores every head (prefix-matching, copying by logits and by OV eigenvalues,
previous-token, detection scores) of
  - SmolLM2-135M (`iclab models get smollm2-135m`): 30 x 9 heads, vocabulary 49,152;
  - a model of Qwen2.5-0.5B's shape built from its config with random weights (24 x 14 heads, 2 key/value heads,
    d_model 896, vocabulary 151,936): memory and time do not depend on the weights' values.
Each runs in its own process (peak resident memory from the OS); the direct OV logits are computed layer by
layer in chunks of tokens, so the [L, H, N, V] tensor the scorer used to build (N = 200 source tokens) never
exists. Targets on 2 CPU cores: SmolLM2 under 2 minutes and 3 GB; the 0.5B model under 6 GB.

    python benchmarks/head_scores.py [--skip-05b]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, torch
from iclab.analysis.induction.scores import score_heads
spec = sys.argv[1]
t0 = time.perf_counter()
if spec == "qwen2-0.5b-shape":
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from iclab.heads import HFHeadModel
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=0)
    torch.manual_seed(0)
    model = HFHeadModel(Qwen2ForCausalLM(cfg))
else:
    from iclab.heads import load_model
    model = load_model(spec, log=lambda s: None)
loaded = time.perf_counter() - t0
scores = score_heads(model, torch.Generator().manual_seed(0), model.probe_vocab() if model.tokenizer is not None else torch.arange(3, 151936))
print(json.dumps({"load_s": loaded, "score_s": time.perf_counter() - t0 - loaded, "L": model.n_layers, "H": model.n_heads,
                  "V": model.model.config.vocab_size, "best_prefix_matching": float(scores["prefix_matching"].max())}))
"""


def measure(spec: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{spec}: {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(spec=spec, wall_s=wall, peak_gb=max(peak, before) / 2**20)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-05b", action="store_true")
    args = ap.parse_args()
    specs = ["smollm2-135m"] + ([] if args.skip_05b else ["qwen2-0.5b-shape"])
    for spec in specs:  # the 0.5B model runs second: RUSAGE_CHILDREN reports the largest child so far
        r = measure(spec)
        old_gb = r["L"] * r["H"] * 200 * r["V"] * 4 / 2**30
        print(f"{spec}: {r['L']} x {r['H']} heads, vocabulary {r['V']:,}: wall {r['wall_s']:.0f} s (load {r['load_s']:.0f} s, "
              f"scores {r['score_s']:.0f} s), peak memory {r['peak_gb']:.2f} GB; the full [L, H, N=200, V] float32 tensor alone: "
              f"{old_gb:.1f} GB ({old_gb / r['peak_gb']:.1f}x this whole run's peak); best prefix-matching {r['best_prefix_matching']:.2f}")


if __name__ == "__main__":
    main()
