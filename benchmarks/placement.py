"""A real model's head scores with its layers read from disk during each pass (accelerate's device map), against the
same model loaded whole: time, peak memory and the largest score difference, side by side in one run.

What a user with a model larger than memory gets: ``load_hf(folder, device_map="auto", max_memory={"cpu": ...})``
keeps the blocks that fit in memory and reads the others from the safetensors file in each pass; every head analysis
runs on it (tests/test_placement.py checks the numbers equal the whole model's on 14 families). On a GPU machine
``--device auto`` does the same across GPUs when a model does not fit one. Each variant runs in its own process (its
peak resident memory is its own); the scores are compared in this one.

    python benchmarks/placement.py               # SmolLM2-135M (`iclab models get smollm2-135m`)
    python benchmarks/placement.py --cpu-mb 150  # how much of the weights stays in memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def sample_memory(peaks: dict, stop) -> None:
    """Every 20 ms until ``stop`` is set: the process's resident anonymous memory (what the kernel cannot drop) and
    its resident file pages (the safetensors file mapped while offloaded weights are read: page cache the kernel
    reclaims under pressure), keeping each one's peak in ``peaks`` (bytes)."""
    while not stop.wait(0.02):
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                peaks[key] = max(peaks.get(key, 0), int(value.split()[0]) * 1024)


def one(model_name: str, cpu_mb: int | None, out: str) -> None:
    """Load the model (whole, or with ``cpu_mb`` MB of it in memory and the rest on disk), score every head, write
    the scores and the times to ``out``."""
    from iclab.analysis.induction.scores import score_heads
    from iclab.heads import load_hf
    from iclab.pretrained import resolve

    import threading

    peaks: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(peaks, stop), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    folder = resolve(model_name, log=lambda s: None)
    placement = {} if cpu_mb is None else {"device_map": "auto", "max_memory": {"cpu": cpu_mb * 2**20}}
    model = load_hf(folder, **placement)
    meta = sum(p.numel() for p in model.model.parameters() if p.device.type == "meta")
    total = sum(p.numel() for p in model.model.parameters())
    t1 = time.perf_counter()
    scores = score_heads(model, torch.Generator().manual_seed(0))
    t2 = time.perf_counter()
    stop.set()
    sampler.join()
    torch.save({k: v.cpu() for k, v in scores.items()}, out)
    print(json.dumps({"load_s": t1 - t0, "scores_s": t2 - t1, "on_disk": meta / total,
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "anon_gb": peaks.get("RssAnon", 0) / 2**30, "file_gb": peaks.get("RssFile", 0) / 2**30}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--cpu-mb", type=int, default=150, help="MB of weights kept in memory when placed (default 150)")
    parser.add_argument("--one", nargs=2, metavar=("CPU_MB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.model, None if args.one[0] == "whole" else int(args.one[0]), args.one[1])
        return
    import tempfile

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cpu in (("whole", "whole"), ("placed", str(args.cpu_mb))):
            out = f"{tmp}/{name}.pt"
            run = subprocess.run([sys.executable, __file__, "--model", args.model, "--one", cpu, out],
                                 capture_output=True, text=True, check=True)
            rows[name] = json.loads(run.stdout.strip().splitlines()[-1])
            rows[name]["scores"] = torch.load(out)
    print(f"{args.model}, head scores (iclab heads' workload), {torch.get_num_threads()} threads, one process each")
    for name, r in rows.items():
        print(f"{name:>7}: load {r['load_s']:5.1f} s, scores {r['scores_s']:6.1f} s, peak resident {r['peak_gb']:.2f} GB "
              f"(anonymous {r['anon_gb']:.2f}, file pages {r['file_gb']:.2f}), {100 * r['on_disk']:.0f}% of the weights "
              "read from disk")
    a, b = rows["whole"]["scores"], rows["placed"]["scores"]
    diff = max(float((a[k] - b[k]).abs().nan_to_num().max()) for k in a)
    print(f"placed / whole: scores {rows['placed']['scores_s'] / rows['whole']['scores_s']:.2f}x the time, "
          f"peak anonymous memory {rows['placed']['anon_gb'] / rows['whole']['anon_gb']:.2f}x; largest score difference "
          f"{diff:.2e}")


if __name__ == "__main__":
    main()
