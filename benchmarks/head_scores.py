"""All head scores of real-vocabulary models: wall time and peak memory, and what the old [L, H, N, V] tensor needed.

Scores every head (prefix-matching, copying by logits, rank and OV eigenvalues,
previous-token, detection scores) of
  - SmolLM2-135M (`iclab models get smollm2-135m`): 30 x 9 heads, vocabulary 49,152;
  - Gemma 3 270M when it is here (`iclab models get gemma-3-270m --accept-licence`): 18 x 4 heads, vocabulary 262,144,
    sliding-window attention in five of every six layers;
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
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, torch
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
pm = scores["prefix_matching"]
cfg = model.model.config
types = list(getattr(cfg, "layer_types", None) or ["full_attention"] * model.n_layers)
top = torch.argsort(pm.flatten(), descending=True)[:6].tolist()
print(json.dumps({"load_s": loaded, "score_s": time.perf_counter() - t0 - loaded, "L": model.n_layers, "H": model.n_heads,
                  "V": cfg.vocab_size, "best_prefix_matching": float(pm.max()), "prefix_matching": pm.tolist(),
                  "layer_types": types, "top": [[i // model.n_heads, i % model.n_heads, float(pm.flatten()[i]),
                  float(scores["copying_rank"].flatten()[i])] for i in top],
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure(spec: str) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{spec}: {done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(spec=spec, wall_s=wall, peak_gb=row["peak_kib"] / 2**20)  # the child's own peak resident memory
    return row


def depth_figure(rows: list[dict], path: str) -> None:
    """Prefix-matching of every head against its layer's relative depth, one panel per model, marked by attention type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], rows):
        for layer, (scores, kind) in enumerate(zip(r["prefix_matching"], r["layer_types"])):
            depth = layer / max(r["L"] - 1, 1)
            sliding = kind.startswith("sliding")
            ax.scatter([depth] * len(scores), scores, s=18, marker="o" if not sliding else "^",
                       facecolors="none" if sliding else "C0", edgecolors="C1" if sliding else "C0")
        ax.scatter([], [], marker="o", c="C0", label="full attention")
        if any(k.startswith("sliding") for k in r["layer_types"]):
            ax.scatter([], [], marker="^", facecolors="none", edgecolors="C1", label="sliding window")
        ax.axhline(0.3, ls=":", c="gray")
        ax.set_title(f"{r['spec']} ({r['L']} x {r['H']} heads)", fontsize=9)
        ax.set_xlabel("relative depth (layer / (L - 1))")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("prefix-matching score")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main() -> None:
    from iclab.pretrained import is_here

    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-05b", action="store_true")
    ap.add_argument("--figure", help="also draw where the catalogue models' induction heads sit, to this file")
    args = ap.parse_args()
    catalogue = ["smollm2-135m"] + (["gemma-3-270m"] if is_here("gemma-3-270m") else [])
    specs = catalogue + ([] if args.skip_05b else ["qwen2-0.5b-shape"])
    rows = []
    for spec in specs:
        r = measure(spec)
        rows.append(r)
        print(f"  top heads (layer, head, prefix-matching, copying rank): {r['top']}; attention: "
              f"{sum(t.startswith('sliding') for t in r['layer_types'])} of {r['L']} layers sliding-window")
        old_gb = r["L"] * r["H"] * 200 * r["V"] * 4 / 2**30
        print(f"{spec}: {r['L']} x {r['H']} heads, vocabulary {r['V']:,}: wall {r['wall_s']:.0f} s (load {r['load_s']:.0f} s, "
              f"scores {r['score_s']:.0f} s), peak memory {r['peak_gb']:.2f} GB; the full [L, H, N=200, V] float32 tensor alone: "
              f"{old_gb:.1f} GB ({old_gb / r['peak_gb']:.1f}x this whole run's peak); best prefix-matching {r['best_prefix_matching']:.2f}")
    if args.figure:
        depth_figure([r for r in rows if r["spec"] in catalogue], args.figure)


if __name__ == "__main__":
    main()
