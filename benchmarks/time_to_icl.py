"""Time to in-context learning: iclab's linreg recipe against Garg et al.'s, same model size, one run.

A 4-layer model of the quick recipe's width (d_model 32, 4 heads) is trained until its normalised error
(squared error / d) at n = 2d in-context examples falls below 0.1, evaluated
every ``--eval-every`` steps on held-out prompts. Printed: steps and wall time
for each recipe, and their ratio. iclab's recipe runs first (at most
``--max-steps``); Garg's then gets ``--cap`` times iclab's wall time (and any
number of steps): if it does not get there, that is reported with its best
error and the ratio as a lower bound, never extrapolated.

    python benchmarks/time_to_icl.py [--d 4] [--max-steps 8000] [--cap 10]

Recipes (same model size, same d and prompt length 2d + 1):
  iclab: the linreg study's quick recipe (pre-LayerNorm, PyTorch's default linear
         init, Akyürek token encoding, AdamW 3e-3, batch 512, 200 warm-up steps
         then cosine over --max-steps).
  garg:  Adam 1e-4 constant, batch 64, GPT-2-style LayerNorm model (init std 0.02),
         Garg's token encoding and curriculum scaled to d (dimension from
         d - 3, +1 every 2000 steps; points from 2(d - 3) + 1, +2 every 2000).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from iclab.studies.linreg import PRESETS, run_config
from iclab.tasks import Curriculum, make_task
from iclab.train import build_model, learning_rate


def time_to_threshold(config, max_steps: int, eval_every: int, threshold: float, n_eval: int,
                      max_seconds: float = float("inf")) -> dict:
    torch.manual_seed(0)
    task = make_task(config.task)
    model = build_model(config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=0.0)
    d = config.task.d
    xs, ys, _ = task.sample(0, 512, "eval")
    best = float("inf")
    t0 = time.perf_counter()
    eval_time = 0.0
    for step in range(max_steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(config.train, step)
        batch = task.batch(step, config.train.batch_size, "train")
        loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % eval_every == 0:
            te = time.perf_counter()
            with torch.no_grad():
                err = float((task.predictions(model(task.encode(xs[:, : n_eval + 1], ys[:, : n_eval + 1])))[:, n_eval] - ys[:, n_eval]).pow(2).mean() / d)
            eval_time += time.perf_counter() - te
            best = min(best, err)
            seconds = time.perf_counter() - t0 - eval_time
            if err < threshold:
                return {"reached": True, "steps": step + 1, "seconds": seconds, "error": err}
            if seconds > max_seconds:
                return {"reached": False, "steps": step + 1, "seconds": seconds, "error": best}
    return {"reached": False, "steps": max_steps, "seconds": time.perf_counter() - t0 - eval_time, "error": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=8000)
    parser.add_argument("--d", type=int, default=PRESETS["quick"].d)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--cap", type=float, default=10.0, help="Garg's recipe gets this many times iclab's wall time")
    args = parser.parse_args()
    cfg = PRESETS["quick"]
    d = args.d
    n_points, threshold = 2 * d + 1, 0.1
    ours = run_config(cfg, 4, args.max_steps, d, n_points)
    garg = run_config(cfg, 4, args.max_steps, d, n_points)
    garg = replace(
        garg,
        task=replace(garg.task, encoding="garg", curriculum=Curriculum(d_start=max(1, d - 3), d_increment=1,
                                                                         points_start=2 * max(1, d - 3) + 1, points_increment=2, interval=2000)),
        model=replace(garg.model, normalization="layernorm", init="gpt2", d_input=d),
        train=replace(garg.train, lr=1e-4, schedule="constant", warmup_steps=0, batch_size=64),
    )
    print(f"4 layers, d_model {ours.model.d_model}, d = {d}, threshold: error/d < {threshold} at n = {2 * d}, {torch.get_num_threads()} threads")
    results = {}
    for name, config in (("iclab", ours), ("garg", garg)):
        cap = args.cap * results["iclab"]["seconds"] if name == "garg" else float("inf")
        r = time_to_threshold(config, args.max_steps if name == "iclab" else 10**9, args.eval_every, threshold, 2 * d, cap)
        results[name] = r
        status = "reached" if r["reached"] else f"NOT reached within {r['steps']} steps (best {r['error']:.3f})"
        print(f"  {name:6s} {status:45s} steps {r['steps']:6d}   {r['seconds']:7.1f} s")
    if results["iclab"]["reached"] and results["garg"]["reached"]:
        print(f"  speed-up (wall time): {results['garg']['seconds'] / results['iclab']['seconds']:.1f}x")
    elif results["iclab"]["reached"]:
        print(f"  speed-up (wall time): more than {results['garg']['seconds'] / results['iclab']['seconds']:.1f}x (Garg's recipe did not reach the threshold)")


if __name__ == "__main__":
    main()
