"""Training-step speed: iclab's Transformer against Hugging Face GPT2Model, side by side, as a share of the matrix
product rate measured in the same run.

The baseline is the architecture most in-context regression code uses (Garg
et al. 2022): GPT2Model driven by ``inputs_embeds`` between a linear read-in
and read-out. Both models have the same size, see the same batches and use
AdamW; the script prints the median time per step of each, their ratio, and
the achieved FLOP/s as a share of the matmul rate measured in this same run:
float32 steps against the float32 rate, bfloat16 steps (``torch.autocast``)
against the bfloat16 rate.

    python benchmarks/train_throughput.py [--sizes 32 64 128 256] [--steps 30] [--threads N] [--no-compile] [--profile 32]
    python benchmarks/train_throughput.py --seeds 1 3 8 [--steps 40] [--threads N]
    python benchmarks/train_throughput.py --precision [--steps 40] [--repeats 3] [--threads N]

``--seeds``: seeds trained together (one stacked model, ``iclab run --together``) against as many lone runs, one
after the other, for the quick studies' models (linreg's deepest, add-k's subject, two induction models): whole
training runs of ``--steps`` steps through ``iclab.train.train`` and ``iclab.train.together.train_seeds`` (folders,
checkpoints and the final save included), in seed-steps per second.

``--precision``: the same quick recipes' whole runs in float32 against ``train.precision=bfloat16`` (autocast),
interleaved (float32, bfloat16, float32, ...) after a warm-up run of each, steps per second, the median of
``--repeats`` runs each, and each precision's final training loss.

Each size is also run through ``torch.compile`` (iclab's ``train.compile``, and
GPT2Model compiled); compile time is printed apart from the step time. Sizes:
d_model 32, 64 and 128 (the quick presets' models) and 256. ``--profile D``
prints where a float32 step of iclab's model at d_model D spends its time.

Target: at least 80% of the float32 matmul rate at d_model 128.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from iclab.models import ModelConfig, Transformer
from iclab.tasks import LinearRegression, LinRegConfig


class GPT2Regressor(nn.Module):
    def __init__(self, d_in: int, d_model: int, n_layers: int, n_heads: int, n_ctx: int):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(
            n_positions=n_ctx,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self.read_in = nn.Linear(d_in, d_model)
        self.backbone = GPT2Model(cfg)
        self.read_out = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read_out(self.backbone(inputs_embeds=self.read_in(x)).last_hidden_state)


def step_times(model: nn.Module, task: LinearRegression, batch_size: int, steps: int, warmup: int = 5,
               compiled: bool = False, bf16: bool = False) -> tuple[list[float], float]:
    """Time per training step after ``warmup`` steps, and the time of the first step (compilation included); with
    ``bf16``, forward and loss under bfloat16 autocast (weights and optimizer in float32)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model = torch.compile(model) if compiled else model
    times, first = [], 0.0
    for step in range(warmup + steps):
        batch = task.batch(step, batch_size, "train")
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 0:
            first = time.perf_counter() - t0
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return times, first


def train_flops(n_layers: int, d_model: int, tokens: int, seq: int, batch: int) -> float:
    """Matmul FLOPs of one training step (forward x 3): per layer 24 BT D^2 (QKV, O, MLP 4D) + 4 B T^2 D (attention)."""
    per_layer = 24 * tokens * d_model**2 + 4 * batch * seq**2 * d_model
    return 3.0 * n_layers * per_layer


def matmul_rate(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def profile_step(model: nn.Module, task: LinearRegression, batch_size: int, rows: int = 12) -> None:
    """Where one float32 training step spends its time: the operators with the most self time."""
    from torch.profiler import profile

    step_times(model, task, batch_size, steps=3)
    with profile() as prof:
        step_times(model, task, batch_size, steps=5, warmup=0)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def seed_recipes() -> dict[str, object]:
    """The quick studies' training configs at seed 0, by name."""
    from iclab.studies.addk import PRESETS as ADDK, run_config as addk_config
    from iclab.studies.induction import PRESETS as INDUCTION, run_config as induction_config
    from iclab.studies.linreg import PRESETS as LINREG
    from iclab.studies.linreg.models import planned_runs

    linreg = dict(planned_runs(LINREG["quick"]))
    deepest = max((n for n in linreg if n.startswith("L")), key=lambda n: int(n[1:]))
    return {f"linreg {deepest}": linreg[deepest], "addk": addk_config(ADDK["quick"]),
            "induction attn2": induction_config(INDUCTION["quick"], "attn2"),
            "induction mlp2": induction_config(INDUCTION["quick"], "mlp2")}


def seeds_together(counts: list[int], steps: int) -> None:
    """Seed-steps per second of S lone runs and of S seeds trained together, side by side, for each quick recipe."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from iclab.tasks.base import seeded
    from iclab.train import train
    from iclab.train.together import train_seeds

    print(f"threads {torch.get_num_threads()}; {steps} steps a run; seed-steps per second (higher is faster)")
    for name, config in seed_recipes().items():
        short = replace(config, train=replace(config.train, steps=steps, snapshots=0, eval_every=0,
                                              checkpoint_every=steps, log_every=steps))
        rows = []
        with tempfile.TemporaryDirectory() as tmp:  # a warm-up run: the first run of a process pays one-time costs
            train(replace(short, train=replace(short.train, steps=5, checkpoint_every=5, log_every=5)), Path(tmp) / "w",
                  progress=False)
        for S in counts:
            configs = [replace(short, task=seeded(short.task, s), seed=s) for s in range(S)]
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                for s, c in enumerate(configs):
                    train(c, Path(tmp) / f"lone{s}", progress=False)
                lone = time.perf_counter() - t0
                t0 = time.perf_counter()
                if S > 1:
                    train_seeds(configs, [Path(tmp) / f"together{s}" for s in range(S)])
                else:  # one seed has nothing to stack with (train_seeds trains it alone): the stacked model of one
                    from iclab.train.loop import begin
                    from iclab.train.together import _steps

                    _steps(configs, [begin(configs[0], Path(tmp) / "together0", "cpu")], "cpu", None)
                together = time.perf_counter() - t0
            rows.append(f"S={S}: lone {S * steps / lone:6.1f}, together {S * steps / together:6.1f} ({lone / together:.2f}x)")
        m = config.model
        print(f"  {name:16s} (d_model {m.d_model}, {m.n_layers} layers, batch {config.train.batch_size}): " + "; ".join(rows),
              flush=True)


def precisions(steps: int, repeats: int) -> None:
    """Steps per second of whole quick-recipe runs in float32 and under bfloat16 autocast, interleaved in one process."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from iclab.device import fast_bf16
    from iclab.train import train

    kinds = ("float32", "bfloat16")
    print(f"threads {torch.get_num_threads()}; {steps} steps a run, median of {repeats}; steps per second (higher is faster); "
          f"native bfloat16 products: {'yes' if fast_bf16('cpu') else 'no (emulated)'}")
    for name, config in seed_recipes().items():
        runs = {k: replace(config, train=replace(config.train, steps=steps, snapshots=0, eval_every=0, checkpoint_every=steps,
                                                 log_every=steps, precision=k)) for k in kinds}
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        losses: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for k in kinds:  # warm-up: the first run of each kind pays one-time costs
                train(replace(runs[k], train=replace(runs[k].train, steps=5, checkpoint_every=5, log_every=5)),
                      Path(tmp) / f"warm-{k}", progress=False)
            for i in range(repeats):
                for k in kinds:
                    t0 = time.perf_counter()
                    result = train(runs[k], Path(tmp) / f"{k}-{i}", progress=False)
                    rates[k].append(steps / (time.perf_counter() - t0))
                    losses[k] = float(result.summary["final_loss"])
        fp32, bf16 = (statistics.median(rates[k]) for k in kinds)
        m = config.model
        print(f"  {name:16s} (d_model {m.d_model}, {m.n_layers} layers, batch {config.train.batch_size}): float32 {fp32:6.1f}, "
              f"bfloat16 {bf16:6.1f} ({bf16 / fp32:.2f}x); final loss {losses['float32']:.4f} / {losses['bfloat16']:.4f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--profile", type=int, default=None, metavar="D", help="profile iclab's step at d_model D")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                        help="seeds trained together against as many lone runs (e.g. 1 3 8)")
    parser.add_argument("--precision", action="store_true", help="whole quick-recipe runs, float32 against bfloat16 autocast")
    parser.add_argument("--repeats", type=int, default=3, help="with --precision: runs of each precision (median)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision:
        precisions(args.steps if args.steps != 30 else 40, args.repeats)
        return
    if args.seeds:
        seeds_together(args.seeds, args.steps if args.steps != 30 else 40)
        return
    d, n_points, batch, n_layers, n_heads = 20, 40, 64, 4, 4
    task = LinearRegression(LinRegConfig(d=d, n_points=n_points))
    seq = 2 * n_points
    peak = {"fp32": matmul_rate(), "bf16": matmul_rate(dtype=torch.bfloat16)}
    print(f"threads {torch.get_num_threads()}, matmul rate (2048^2): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s ({peak['bf16'] / peak['fp32']:.2f}x)")
    print(f"batch {batch}, {n_points} points of d = {d} ({seq} tokens), {n_layers} layers, {n_heads} heads\n")

    def config(d_model: int) -> ModelConfig:
        return ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=seq, input="continuous", d_input=d,
                           d_output=1)

    for d_model in args.sizes:
        flops = train_flops(n_layers, d_model, batch * seq, seq, batch)
        cases = [("iclab", False, False), ("iclab bf16", False, True), ("GPT2Model", False, False)]
        if not args.no_compile:
            cases += [("iclab", True, False), ("GPT2Model", True, False)]
        rows = {}
        for name, compiled, bf16 in cases:
            torch.manual_seed(0)
            model = Transformer(config(d_model)) if name.startswith("iclab") else GPT2Regressor(d, d_model, n_layers, n_heads, seq)
            times, first = step_times(model, task, batch, args.steps, compiled=compiled, bf16=bf16)
            rows[(name, compiled)] = (statistics.median(times), first, "bf16" if bf16 else "fp32")
        print(f"d_model {d_model}:")
        for (name, compiled), (t, first, kind) in rows.items():
            label = f"{name}{' compiled' if compiled else ''}"
            extra = f"   (first step, compiling: {first:.1f} s)" if compiled else ""
            print(f"  {label:20s} {t * 1e3:8.1f} ms/step   {flops / t / 1e9:6.1f} GFLOP/s = {flops / t / peak[kind]:5.1%} "
                  f"of the {kind} matmul rate{extra}")
        base = rows[("GPT2Model", False)][0]
        print(f"  speed-up of iclab over GPT2Model (eager): {base / rows[('iclab', False)][0]:.2f}x; "
              f"bf16 autocast over float32: {rows[('iclab', False)][0] / rows[('iclab bf16', False)][0]:.2f}x")
        if not args.no_compile:
            print(f"  speed-up of iclab compiled over GPT2Model compiled: {rows[('GPT2Model', True)][0] / rows[('iclab', True)][0]:.2f}x")
        print()
    if args.profile:
        print(f"where a float32 step of iclab's model at d_model {args.profile} goes:")
        profile_step(Transformer(config(args.profile)), task, batch)


if __name__ == "__main__":
    main()
