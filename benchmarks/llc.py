"""iclab's LLC estimator side by side with devinterp's (``pip install devinterp``), on the same model, data and
hyperparameters, in one run: both estimates at three seeds, whether they agree over the seeds, each one's time and the
ratio (iclab with two chains at once in single-thread processes, and one after the other; devinterp 2.x runs its chains
one after the other).

The models: the two workloads iclab's studies estimate the LLC of, each trained here for a few hundred steps (or the
final weights of the runs given as arguments): the induction study's two-layer attention-only model (loss: mean
next-token cross-entropy over 1,024 sequences) and the linreg study's deepest model at its quick shape (loss: mean
squared error of every prediction over 1,024 noiseless prompts); for an induction model also one head's refined LLC
(its weights alone: iclab's masks, devinterp's ``param_masks``). devinterp reads the same fixed samples: its dataset
holds their indices and its loss function returns their per-token (per-prediction) losses. devinterp 2.x averages its
loss over every sampling step, burn-in included, so both run without burn-in here (the same estimator either way); its
initial loss is a mean over 32 minibatches, iclab's over every sample.

    python benchmarks/llc.py [RUN ...]
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import replace
import tempfile
import time
import warnings
from pathlib import Path

import torch

from iclab.analysis.llc import SGLDSettings, estimate_llc
from iclab.analysis.llc_runs import head_masks, task_loss
from iclab.results import Head
from iclab.runs import load_run
from iclab.tasks import make_task
from iclab.tasks.induction import InductionTask

SAMPLES, CHAINS, DRAWS, BATCH = 1024, 4, 300, 32
SEEDS = (0, 1, 2)  # whole estimates repeated: their spread is what the agreement is judged by
WORKERS = 2  # iclab runs two chains at once, one thread each; devinterp runs its chains one after the other
LR, LOCALIZATION = 1e-4, 100.0
# the workloads iclab's studies estimate the LLC of, each trained here for a few hundred steps: the induction study's
# two-layer attention-only model and the linreg study's deepest model (its quick preset's shape)
WORKLOADS = {
    "induction-attn2": ("induction", ["model.n_layers=2", "model.d_model=32", "model.attn_only=true", "train.steps=400",
                                      "task.n_ctx=64"]),
    "linreg-L4": ("linreg", ["task.d=4", "task.n_points=9", "task.encoding=akyurek", "model.n_layers=4", "model.d_model=32",
                             "model.n_heads=4", "model.n_ctx=18", "model.d_input=5", "model.init=torch", "train.lr=3e-3",
                             "train.batch_size=512", "train.warmup_steps=100", "train.steps=400"]),
}
REFINED_HEAD = Head(1, 0)  # the first head of the induction model's second layer (fixed before any run)
STEP_SIZES = {"linreg": 3e-4}  # the linreg study's step size (docs/llc.md); the induction row keeps its earlier 1e-4


class Plain(torch.nn.Module):
    """The model under another name: devinterp takes any module with a ``cfg.n_heads`` for a TransformerLens model."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner(ids)


def trained_run(folder: Path, workload: str) -> Path:
    from iclab.train import train
    from iclab.train.config import apply_overrides, default_config

    task, overrides = WORKLOADS[workload]
    cfg = apply_overrides(default_config(task), overrides)
    return train(cfg, folder / workload, "cpu", progress=False).run.path


def per_token(task, data):
    """devinterp's loss function over rows of sample indices [B, k + 1] -> the per-token (per-prediction) losses
    [B, k] of those samples, whose mean is the task's loss: its dataset holds indices, so both estimators read the
    same fixed samples through the same model."""
    if isinstance(task, InductionTask):
        return lambda m, rows: InductionTask.token_losses(m(data.inputs[rows[:, 0]]), data.targets[rows[:, 0]])
    return lambda m, rows: (task.predictions(m(data.inputs[rows[:, 0]])) - data.targets[rows[:, 0]]).pow(2)


def side_by_side(name: str, path: Path, lr: float, tmp: Path, head: Head | None = None) -> None:
    """Both estimators at each seed of SEEDS on one run's final weights: the estimates, their agreement over the seeds
    (the spread of whole estimates, which four chains' standard error understates) and the times summed over seeds.
    With ``head``, the refined LLC of that head's weights (Wang et al. 2024): iclab's masks, given to devinterp as its
    ``param_masks``."""
    import datasets
    from devinterp.slt.llc import llc as devinterp_llc

    run = load_run(path)
    model, task = run.model, make_task(run.config.task)
    data = task.batch(0, SAMPLES, "eval", "cpu")
    settings = SGLDSettings(step_size=lr, localization=LOCALIZATION, chains=CHAINS, burnin=0, draws=DRAWS, batch_size=BATCH,
                            workers=WORKERS)
    nbeta = settings.inverse_temperature
    loss, losses = task_loss(task, data), per_token(task, data)
    width = losses(model, torch.zeros(1, 1, dtype=torch.long)).shape[1] + 1
    rows = torch.arange(SAMPLES)[:, None].expand(SAMPLES, width)
    dataset = datasets.Dataset.from_dict({"input_ids": rows.tolist()}).with_format("torch")
    masks = None if head is None else head_masks(model, head)
    theirs_masks = None if masks is None else {f"inner.{k}": v for k, v in masks.items()}  # Plain's names
    if head is not None:
        name = f"{name}, head {head} refined"
    print(f"{name}: {path} ({sum(p.numel() for p in model.parameters())} weights), {SAMPLES} samples of "
          f"{tuple(data.inputs.shape[1:])}; {CHAINS} chains x {DRAWS} draws, batch {BATCH}, lr {lr}, "
          f"localization {LOCALIZATION}, nbeta {nbeta:.2f}, {torch.get_num_threads()} threads, seeds {SEEDS}")
    ours, theirs, times = [], [], {"at once": 0.0, "one after the other": 0.0, "devinterp": 0.0}
    for seed in SEEDS:
        t0 = time.perf_counter()
        est = estimate_llc(model, loss, SAMPLES, replace(settings, seed=seed), masks=masks)
        t1 = time.perf_counter()
        estimate_llc(model, loss, SAMPLES, replace(settings, seed=seed, workers=1), masks=masks)
        t2 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = devinterp_llc(Plain(model), dataset, {}, param_masks=theirs_masks, lr=lr, n_beta=nbeta, localization=LOCALIZATION, num_chains=CHAINS,
                                num_draws=DRAWS, batch_size=BATCH, num_burnin_steps=0, device="cpu", loss_fn=losses,
                                init_seed=seed, output_path=tmp / f"devinterp-{name}-{seed}.zarr")
        t3 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key] += dt
        ours.append(est.llc)
        theirs.append(float(out["llc_mean"]))
        d_err = float(out["llc_std"]) / math.sqrt(CHAINS)
        print(f"  seed {seed}: iclab {est.llc:7.3f} +- {est.stderr:.3f} (chains)  devinterp {theirs[-1]:7.3f} +- {d_err:.3f}  "
              f"iclab {t1 - t0:.1f} s at once, {t2 - t1:.1f} s one after the other; devinterp {t3 - t2:.1f} s")
    mean_o, mean_t = statistics.fmean(ours), statistics.fmean(theirs)
    both = math.hypot(statistics.stdev(ours) / math.sqrt(len(SEEDS)), statistics.stdev(theirs) / math.sqrt(len(SEEDS)))
    gap = abs(mean_o - mean_t)
    print(f"  over the seeds: iclab {mean_o:.3f}, devinterp {mean_t:.3f}; difference {gap:.3f} = {gap / both:.2f} combined "
          f"standard errors of the seeds' means ({'agree' if gap <= 2 * both else 'DISAGREE'})")
    print(f"  time: iclab {times['at once']:.1f} s ({WORKERS} chains at once), {times['one after the other']:.1f} s (one after "
          f"the other); devinterp {times['devinterp']:.1f} s: iclab {times['devinterp'] / times['at once']:.2f}x faster at once, "
          f"{times['devinterp'] / times['one after the other']:.2f}x one after the other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="runs to estimate (default: the two workloads, trained here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [(p.name, p) for p in args.runs] or [(name, trained_run(tmp, name)) for name in WORKLOADS]
        for name, path in runs:
            task = load_run(path).config.task.name
            lr = STEP_SIZES.get(task, LR)
            side_by_side(name, path, lr, tmp)
            if task == "induction":  # the refined LLC the induction study estimates per head
                side_by_side(name, path, lr, tmp, REFINED_HEAD)


if __name__ == "__main__":
    main()
