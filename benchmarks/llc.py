"""iclab's LLC estimator side by side with devinterp's (``pip install devinterp``), on the same model, data and
hyperparameters, in one run: both estimates with their standard errors (over chains), whether they agree within them,
each one's time and the ratio (iclab with two chains at once in single-thread processes, and one after the other).

The model: a two-layer attention-only induction model trained here for a few hundred steps (or the final weights of
the run given as an argument). The data: 1,024 sequences of its task; the loss: mean next-token cross-entropy.
devinterp 2.x averages its loss over every sampling step, burn-in included, so both run without burn-in here (the
same estimator either way); its initial loss is a mean over 32 minibatches, iclab's over every sample.

    python benchmarks/llc.py [RUN]
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
import tempfile
import time
import warnings
from pathlib import Path

import torch

from iclab.analysis.llc import SGLDSettings, estimate_llc
from iclab.analysis.llc_runs import task_loss
from iclab.runs import load_run
from iclab.tasks import make_task
from iclab.tasks.induction import InductionTask

SAMPLES, CHAINS, DRAWS, BATCH = 1024, 4, 300, 32
WORKERS = 2  # iclab runs two chains at once, one thread each; devinterp runs its chains one after the other
LR, LOCALIZATION = 1e-4, 100.0


class Plain(torch.nn.Module):
    """The model under another name: devinterp takes any module with a ``cfg.n_heads`` for a TransformerLens model."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner(ids)


def trained_run(folder: Path) -> Path:
    from iclab.train import train
    from iclab.train.config import apply_overrides, default_config

    cfg = apply_overrides(default_config("induction"), ["model.n_layers=2", "model.d_model=32", "model.attn_only=true",
                                                       "train.steps=400", "task.n_ctx=64"])
    return train(cfg, folder / "run", "cpu", progress=False).run.path


def main() -> None:
    import datasets
    from devinterp.slt.llc import llc as devinterp_llc

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else trained_run(Path(tmp))
        run = load_run(path)
        model, task = run.model, make_task(run.config.task)
        data = task.batch(0, SAMPLES, "eval", "cpu")
        settings = SGLDSettings(step_size=LR, localization=LOCALIZATION, chains=CHAINS, burnin=0, draws=DRAWS, batch_size=BATCH,
                                workers=WORKERS)
        nbeta = settings.inverse_temperature
        print(f"model: {path} ({sum(p.numel() for p in model.parameters())} weights), {SAMPLES} sequences of "
              f"{data.inputs.shape[1]} tokens; {CHAINS} chains x {DRAWS} draws, batch {BATCH}, lr {LR}, "
              f"localization {LOCALIZATION}, nbeta {nbeta:.2f}, {torch.get_num_threads()} threads")

        t0 = time.perf_counter()
        ours = estimate_llc(model, task_loss(task, data), SAMPLES, settings)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        serial = estimate_llc(model, task_loss(task, data), SAMPLES, replace(settings, workers=1))
        t_serial = time.perf_counter() - t0

        dataset = datasets.Dataset.from_dict({"input_ids": data.inputs.tolist()}).with_format("torch")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = devinterp_llc(Plain(model), dataset, {}, lr=LR, n_beta=nbeta, localization=LOCALIZATION, num_chains=CHAINS,
                                   num_draws=DRAWS, batch_size=BATCH, num_burnin_steps=0, device="cpu",
                                   loss_fn=lambda m, ids: InductionTask.token_losses(m(ids), ids),
                                   output_path=Path(tmp) / "devinterp.zarr")
        t_theirs = time.perf_counter() - t0
        d_mean, d_std = float(theirs["llc_mean"]), float(theirs["llc_std"])
        d_err = d_std / math.sqrt(CHAINS)
        gap = abs(ours.llc - d_mean)
        both = math.hypot(ours.stderr, d_err)
        print(f"iclab     LLC {ours.llc:8.3f} +- {ours.stderr:.3f}  ({t_ours:.1f} s, {WORKERS} chains at once; one after the "
              f"other {serial.llc:.3f} in {t_serial:.1f} s)")
        print(f"devinterp LLC {d_mean:8.3f} +- {d_err:.3f}  ({t_theirs:.1f} s)")
        print(f"difference {gap:.3f} = {gap / both:.2f} combined standard errors ({'agree' if gap <= 2 * both else 'DISAGREE'}); "
              f"iclab {t_theirs / t_ours:.2f}x faster")


if __name__ == "__main__":
    main()
