"""The attention paths side by side: forward and backward of causal attention at the quick presets' shapes and beyond,
fused (PyTorch's scaled_dot_product_attention), plain (two batched matrix products around a softmax) and narrow (the
plain path's products transposed), each shape's paths measured in turn in one process; which path iclab takes there
(``iclab.models.attention.attention_path``), and the largest difference from the fused path's outputs and gradients.

    python benchmarks/attention.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from iclab.models.attention import attention_path, narrow_attention, plain_attention

# (batch, positions, heads, head dimensions): linreg quick (batch 512, 24 positions), add-k (12 positions, 32
# dimensions), induction (64 positions, 16 dimensions), the LLC benchmark's model (batch 32, 64 positions, 8
# dimensions), and longer sequences.
SHAPES = [(512, 24, 4, 8), (64, 12, 4, 32), (32, 64, 4, 16), (32, 64, 4, 8), (32, 128, 4, 8), (16, 256, 4, 8),
          (8, 512, 4, 8), (32, 64, 4, 32)]


def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)


PATHS = {"fused": fused, "plain": plain_attention, "narrow": narrow_attention}


def step_ms(path, q, k, v, grad, repeats: int) -> float:
    """Median milliseconds of one forward and backward pass."""
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        path(q, k, v).backward(grad)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), median of {args.repeats} forward + backward passes, milliseconds")
    print(f"{'batch x positions x heads x dims':>34} {'fused':>8} {'plain':>8} {'narrow':>8}  iclab's path  its speed-up over fused  max diff")
    g = torch.Generator().manual_seed(0)
    for B, T, H, E in SHAPES:
        q, k, v = (torch.randn(B, T, H, E, generator=g, requires_grad=True) for _ in range(3))
        grad = torch.randn(B, T, H, E, generator=g)
        results = {}
        for name, path in PATHS.items():
            out = path(q, k, v)
            out.backward(grad)
            results[name] = (out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone())
            q.grad = k.grad = v.grad = None
        diff = max(float((a - b).abs().max()) for name in ("plain", "narrow")
                   for a, b in zip(results[name], results["fused"]))
        ms = {name: step_ms(path, q, k, v, grad, args.repeats) for name, path in PATHS.items()}
        chosen = attention_path(T, E)
        print(f"{f'{B} x {T} x {H} x {E}':>34} {ms['fused']:8.2f} {ms['plain']:8.2f} {ms['narrow']:8.2f}  {chosen:>12}"
              f"  {ms['fused'] / ms[chosen]:>23.2f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
