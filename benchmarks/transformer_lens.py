"""iclab against TransformerLens, side by side: every attention pattern of a real model and its induction-head
detection score, on the same model and the same probe sequences, in one run.

The job: Olsson et al.'s probe (BOS + 25 random tokens repeated 4 times, 16 sequences, iclab's
``repeated_random_tokens`` from the model's probe vocabulary), every head's attention pattern, and TransformerLens'
induction-head detection score ("mul": the share of a head's attention on the token after an earlier occurrence of
the current one, the BOS column left out, averaged over the sequences).

- iclab: ``HeadModel.patterns`` and ``iclab.analysis.heads.detection_score``, as ``iclab heads`` computes them.
- TransformerLens (``pip install 'iclab[bench]'``): since 4.0 it wraps the Hugging Face model in a
  ``TransformerBridge`` (``HookedTransformer`` was removed); it is booted offline from the same local folder and the
  same loaded weights. Two ways a TransformerLens user runs the job: ``run_with_cache`` caching every activation (what
  ``detect_head`` does when given no cache) and caching the patterns only (``names_filter``); then
  ``head_detector``'s own detection pattern and score for each sequence and head, as ``detect_head`` loops.

Each side runs in a process of its own (peak resident memory from the OS, the model's load included, and the rise
above the memory held once the model is loaded); the job's time is the best of ``--repeats`` runs after one warm-up.
The scores are compared head by head: correlation, largest difference, the top heads of each.

    python benchmarks/transformer_lens.py [--model smollm2-135m] [--repeats 3]

Targets (#27): iclab at least 3x faster and at most half the peak memory; correlation at least 0.99 and the same
top heads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
side, spec, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

from iclab.analysis.heads import repeated_random_tokens
from iclab.analysis.induction.scores import probe_shape
from iclab.heads import load_model
t0 = time.perf_counter()
model = load_model(spec, log=lambda s: None)
length, reps = probe_shape(model.n_ctx)
ids = repeated_random_tokens(16, length, reps, model.probe_vocab(), torch.Generator().manual_seed(0), bos=model.bos_id)

if side == "iclab":
    from iclab.analysis.heads import detection_score, induction_detection
    def job():
        return detection_score(model.patterns(ids, fast=True), induction_detection(ids), exclude_bos=True)
else:
    from transformers import AutoModelForCausalLM
    from transformer_lens.head_detector import compute_head_attention_similarity_score, get_induction_head_detection_pattern
    from transformer_lens.model_bridge import TransformerBridge
    from iclab.pretrained import resolve
    path = resolve(spec, log=lambda s: None)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    del model  # only the bridge's copy of the weights stays
    bridge = TransformerBridge.boot_transformers(str(path), hf_model=hf, tokenizer=None, device="cpu")
    only_patterns = side == "tl-patterns"
    def job():
        with torch.no_grad():
            if only_patterns:
                _, cache = bridge.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_pattern"))
            else:
                _, cache = bridge.run_with_cache(ids)
        L, H = bridge.cfg.n_layers, bridge.cfg.n_heads
        scores = torch.zeros(len(ids), L, H)
        for b in range(len(ids)):
            detection = get_induction_head_detection_pattern(ids[b : b + 1])
            for layer in range(L):
                pattern = cache["pattern", layer][b]  # [H, T, T]
                for h in range(H):
                    scores[b, layer, h] = compute_head_attention_similarity_score(
                        pattern[h], detection, exclude_bos=True, exclude_current_token=False, error_measure="mul")
        return scores.mean(0)
loaded = time.perf_counter() - t0
base = rss_kib()
with torch.no_grad():
    job()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        scores = job()
        times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"load_s": loaded, "job_s": min(times), "peak_kib": peak, "rise_kib": max(0, peak - base),
                  "tokens": list(ids.shape), "scores": scores.tolist(), "threads": torch.get_num_threads()}))
"""

SIDES = {"iclab": "iclab", "tl-all": "TransformerLens, every activation cached", "tl-patterns": "TransformerLens, patterns cached"}


def measure(side: str, spec: str, repeats: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, side, spec, str(repeats)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="a name from `iclab models` or a local Hugging Face folder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import transformer_lens  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs TransformerLens: pip install 'iclab[bench]'") from None
    rows = {side: measure(side, args.model, args.repeats) for side in SIDES}
    ours = rows["iclab"]
    print(f"{args.model}: {ours['tokens'][0]} probe sequences of {ours['tokens'][1]} tokens, {ours['threads']} threads, "
          f"best of {args.repeats}")
    print(f"{'':42s} {'job':>8s} {'peak memory':>12s} {'rise after load':>16s}")
    for side, label in SIDES.items():
        r = rows[side]
        print(f"{label:42s} {r['job_s']:7.2f}s {r['peak_kib'] / 2**20:10.2f} GB {r['rise_kib'] / 2**20:14.2f} GB")
    a = torch.tensor(ours["scores"]).flatten()
    for side in ("tl-all", "tl-patterns"):
        r = rows[side]
        b = torch.tensor(r["scores"]).flatten()
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        top_a, top_b = (set(torch.argsort(x, descending=True)[:5].tolist()) for x in (a, b))
        H = len(ours["scores"][0])
        print(f"iclab against {SIDES[side]}: {r['job_s'] / ours['job_s']:.2f}x faster, peak memory "
              f"{ours['peak_kib'] / r['peak_kib']:.2f} of it (rise {ours['rise_kib'] / max(r['rise_kib'], 1):.2f}); "
              f"scores: correlation {corr:.5f}, largest difference {float((a - b).abs().max()):.2e}, "
              f"top-5 heads {'the same' if top_a == top_b else 'differ'} "
              f"({', '.join(f'L{i // H}H{i % H}' for i in sorted(top_a, key=lambda i: -float(a[i])))})")


if __name__ == "__main__":
    main()
