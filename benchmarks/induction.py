"""The induction study's quick preset: wall time and peak memory; the phase change's position across seeds.

First runs ``iclab run induction --preset quick`` in this process and prints its
wall time and peak resident memory (target: under 15 minutes and 3 GB on 2
CPU cores). Then trains the models again with seeds 1 and 2 (model
initialisation and the training data stream both change with the seed) and
prints each model's phase-change window and induction heads per seed, to show
the window is not one lucky seed.

    python benchmarks/induction.py [--out DIR] [--models smeared1,smeared2,attn2]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from iclab.studies import induction


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/bench-induction"))
    ap.add_argument("--models", default="smeared1,smeared2,attn2", help="models re-trained for seeds 1 and 2")
    args = ap.parse_args()
    quiet = lambda s: None  # noqa: E731
    t0 = time.perf_counter()
    first = induction.run("quick", args.out / "seed0", [], torch.device("cpu"), log=quiet)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"quick preset: {wall / 60:.1f} min wall, peak RSS {peak_gb:.2f} GB (targets: 15 min, 3 GB)")
    runs = {0: first}
    models = args.models.split(",")
    for seed in (1, 2):
        s = induction.run("quick", args.out / f"seed{seed}", [f"seed={seed}", f"models=[{','.join(models)}]"], torch.device("cpu"), log=quiet)
        runs[seed] = s
    print("phase-change window (training tokens) and induction heads (layer, head) by seed:")
    for m in models:
        cells = []
        for seed, s in runs.items():
            win = s["phase_change"].get(m)
            heads = [(h["layer"], h["head"]) for h in s["induction_heads"].get(m, [])]
            cells.append(f"seed {seed}: " + ("none" if win is None else f"{win['start_tokens']:.3g}-{win['end_tokens']:.3g}") + f" {heads}")
        print(f"  {m:9s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
