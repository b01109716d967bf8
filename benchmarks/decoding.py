"""Greedy decoding with the key / value cache vs re-running the whole sequence for every new token.

Same model (a Llama-family model built from a config: 4 layers, d_model 256,
8 heads with 2 key / value heads), same prompts (16 prompts of 96 tokens),
same intervention (a function vector added at the last prompt position and
every generated one), 32 new tokens. Checks that both give identical tokens,
then prints both times and the ratio.

    python benchmarks/decoding.py [--new 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from iclab.heads import HFHeadModel, Intervention, greedy_generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=96)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0, eos_token_id=1)
    model = HFHeadModel(LlamaForCausalLM(cfg))
    ids = torch.randint(2, 512, (16, args.prompt), generator=torch.Generator().manual_seed(1))
    iv = Intervention(add_layer=2, add_vector=torch.randn(256) * 0.5, start=args.prompt - 1)
    greedy_generate(model, ids[:2], 2, iv)  # warm-up
    times, outs = {}, {}
    for name, cache in (("kv_cache", True), ("rerun", False)):
        t0 = time.perf_counter()
        outs[name] = greedy_generate(model, ids, args.new, iv, use_cache=cache)
        times[name] = time.perf_counter() - t0
    same = torch.equal(outs["kv_cache"], outs["rerun"])
    print(f"16 prompts x {args.prompt} tokens, {args.new} new tokens, function vector injected at layer 2")
    print(f"  with key/value cache : {times['kv_cache']:.2f} s")
    print(f"  re-running the prefix: {times['rerun']:.2f} s")
    print(f"  ratio: {times['rerun'] / times['kv_cache']:.1f}x faster with the cache; identical tokens: {same}")


if __name__ == "__main__":
    main()
