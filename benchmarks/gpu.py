"""One run on a GPU: the paper presets' training steps, head scores of the real models, the add-k paper preset's
mask search; a Markdown table with the device named, for docs/scaling.md.

    python benchmarks/gpu.py [--device cuda] [--steps 20] [--models smollm2-135m gemma-3-270m] \
        [--addk-model PATH_OR_NAME] [--preset paper] [--out gpu.md]

- Training: one model of each study's paper preset (linreg's deepest, induction's attn2 and mlp2, addk's own
  model), AdamW, batches of its own task at its recipe's batch size; the median of ``--steps`` steps after five
  warm-up steps (the device synchronised around each), tokens per second and the peak memory allocated.
- Head scores: every head's scores (``iclab heads``) of each model in ``--models`` found locally (catalogue names
  are never fetched here), load time apart.
- Placement: the first model's head scores again with ``--placed-memory`` of its weights on the device and the rest
  offloaded (beside a GPU, to CPU memory), against the whole model's scores.
- Mask search: ``iclab run addk --preset paper --model M`` for ``--addk-model`` (a local model), its parts' times as
  the study logs them (localisation is the mask search).

``--device cpu --preset quick --steps 2`` runs the same script on the CPU with the quick presets' models (a check that
it works: the paper presets' induction model alone, 8,192 positions at d_model 768, takes minutes a step there).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from iclab.errors import IclabError


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB" if device.type == "cuda" else "-"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def preset_runs(preset: str) -> list[tuple[str, object]]:
    """(label, RunConfig) of one model of each study's ``preset``."""
    from iclab.studies import study
    from iclab.studies.addk import run_config as addk_config
    from iclab.studies.induction import run_config as induction_config
    from iclab.studies.linreg.models import run_config as linreg_config

    runs = []
    lin = study("linreg").settings(preset, [])
    depth = max(lin.depths)
    runs.append((f"linreg L{depth}", linreg_config(lin, depth, max(lin.steps), lin.d, lin.n_points)))
    ind = study("induction").settings(preset, [])
    runs += [(f"induction {name}", induction_config(ind, name)) for name in ("attn2", "mlp2")]
    runs.append(("addk (iclab model)", addk_config(study("addk").settings(preset, []))))
    return runs


def time_training(config, device: torch.device, steps: int) -> dict:
    from iclab.tasks import make_task
    from iclab.train.loop import build_model

    reset_peak(device)
    model, task = build_model(config, device), make_task(config.task)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bs = config.train.batch_size
    times, tokens = [], 0
    for step in range(5 + steps):
        batch = task.batch(step, bs, "train", device)
        sync(device)
        t0 = time.perf_counter()
        loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if step >= 5:
            times.append(time.perf_counter() - t0)
        tokens = batch.inputs.shape[0] * batch.inputs.shape[1]
    t = statistics.median(times)
    return {"ms": t * 1e3, "tokens_s": tokens / t, "params": sum(p.numel() for p in model.parameters()),
            "batch": bs, "peak_gb": peak_gb(device)}


def time_head_scores(spec: str, device: torch.device, max_memory: str | None = None) -> dict | None:
    """Load ``spec`` (with ``max_memory``: at most that much of its weights on the device, the rest offloaded) and time
    every head's scores; None for a catalogue model that is not here."""
    from iclab.analysis.induction.scores import score_heads
    from iclab.heads import load_model
    from iclab.pretrained import CATALOGUE, is_here

    if spec in CATALOGUE and not is_here(spec):
        return None  # never fetched here
    reset_peak(device)
    t0 = time.perf_counter()
    model = load_model(spec, device, log=lambda s: None, max_memory=max_memory)
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = score_heads(model, torch.Generator().manual_seed(0))
    sync(device)
    offloaded = sum(p.numel() for p in model.model.parameters() if p.device.type == "meta") if max_memory else 0
    return {"load_s": loaded, "score_s": time.perf_counter() - t0, "heads": model.n_layers * model.n_heads,
            "peak_gb": peak_gb(device), "scores": {k: v.cpu() for k, v in scores.items()},
            "offloaded": offloaded / sum(p.numel() for p in model.model.parameters())}


def time_mask_search(spec: str, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "iclab", "run", "addk", "--preset", "paper", "--model", spec,
                               "--device", device.type, "--out", str(Path(tmp) / "addk")], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"iclab run addk --preset paper --model {spec}: {(done.stderr or done.stdout).strip()[-1500:]}")
    parts = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\w+): done in ([0-9.]+)s", done.stdout + done.stderr, re.M)}
    return {"wall_s": wall, "parts": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--addk-model", default=None, help="a local model for the add-k paper preset's mask search")
    parser.add_argument("--preset", default="paper", choices=["paper", "quick"], help="whose models' training steps")
    parser.add_argument("--placed-memory", default="150MB", help="the head scores again with at most this much of the "
                        "first model's weights on the device, the rest offloaded (accelerate's device map)")
    parser.add_argument("--out", type=Path, default=Path("gpu.md"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; this benchmark is for a machine with a GPU (--device cpu checks it runs)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"Measured on {name}, torch {torch.__version__}, `python benchmarks/gpu.py --steps {args.steps}`.", "",
             f"| training step ({args.preset} preset) | parameters | batch | ms / step | tokens / s | peak memory |", "|---|---|---|---|---|---|"]
    for label, config in preset_runs(args.preset):
        r = time_training(config, device, args.steps)
        lines.append(f"| {label} | {r['params'] / 1e6:.2f}M | {r['batch']} | {r['ms']:.1f} | {r['tokens_s']:,.0f} | {r['peak_gb']} |")
        print(lines[-1], flush=True)
    lines += ["", "| head scores (every head) | heads | load | scores | peak memory |", "|---|---|---|---|---|"]
    whole = {}
    for spec in args.models:
        try:
            r = time_head_scores(spec, device)
        except IclabError as err:
            raise SystemExit(f"--models {spec}: {err}") from None
        lines.append(f"| {spec} | " + ("not here (`iclab models get` it first) | | | |" if r is None else
                                       f"{r['heads']} | {r['load_s']:.1f} s | {r['score_s']:.1f} s | {r['peak_gb']} |"))
        print(lines[-1], flush=True)
        if r is not None and not whole:
            whole = {"spec": spec, **r}
    if whole:  # the device map's path on this device: most of the weights offloaded (beside a GPU: to CPU memory)
        r = time_head_scores(whole["spec"], device, max_memory=args.placed_memory)
        diff = max(float((whole["scores"][k] - r["scores"][k]).abs().nan_to_num().max()) for k in r["scores"])
        lines += ["", f"{whole['spec']} placed with `--max-memory {args.placed_memory}` ({100 * r['offloaded']:.0f}% of the "
                  f"weights offloaded): scores {r['score_s']:.1f} s ({r['score_s'] / whole['score_s']:.2f}x whole), peak "
                  f"{r['peak_gb']}, largest score difference from the whole model's {diff:.1e}."]
        print(lines[-1], flush=True)
    if args.addk_model:
        r = time_mask_search(args.addk_model, device)
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in r["parts"].items())
        lines += ["", f"`iclab run addk --preset paper --model {args.addk_model}`: {r['wall_s']:.0f} s in all ({parts})."]
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"table: {args.out}")


if __name__ == "__main__":
    main()
