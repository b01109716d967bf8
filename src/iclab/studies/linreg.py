"""Study linreg: which learning algorithm is in-context linear regression?

Akyürek et al. (ICLR 2023), with Garg et al. (2022)'s training set-up. Trains
transformers of several depths on noiseless in-context regression, compares
their predictions with reference learners by SPD and ILWD, repeats the
comparison across label-noise levels for the deepest model (MSPD table), and
probes hidden states for X^T y and w_OLS against a control model trained on
one fixed task. Every model is an ordinary iclab run (resumable), under
``out/runs/``; every analysis is a cached part under ``out/parts/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from iclab.analysis.learner_metrics import (best_step_size, ilwd, implicit_weight_stability, implicit_weights, mspd,
                                           normalized_error, spd)
from iclab.analysis.probes import probe_targets, train_probes
from iclab.claims import Claim, Verdict, measured
from iclab.config import require, require_positive, to_dict
from iclab.constructions import gd_step_model, ridge_model
from iclab.learners import GD, OLS, RIDGES, SGD, Ridge, reference_learners
from iclab.learners.model import ModelLearner
from iclab.models import ModelConfig, run_with_cache
from iclab.runs import RunDir
from iclab.studies.common import Parts, finish, generator, seeded, settings_for
from iclab.tasks import Curriculum, LinearRegression, LinRegConfig
from iclab.train import RunConfig, TrainConfig, train


@dataclass(frozen=True)
class LinRegRecipe:
    """How each model is trained (shared by every model of the study).

    The quick defaults were chosen by measurement on 2 CPU cores (d = 4, 9 points,
    4 layers, d_model 64, batch 128, 200 warm-up steps then cosine):
    pre-LayerNorm with PyTorch's default linear init (``init = "torch"``) and lr
    3e-3 reached error/d 0.026 at n = 2d after 2,000 steps (lr 1e-3: 0.055);
    at d = 8 the same model at lr 1e-3 was still at 0.17 after 3,000 steps.
    With iclab's GPT-2 init (std 0.02) a pre-LayerNorm model sat on the
    predict-zero plateau for over 1,500 steps, because the small init makes the
    normalised y token carry little more than its sign; the earlier quick
    recipe therefore dropped LayerNorm (error/d 0.5 after 1,000 steps at d = 8).
    """

    d_model: int = 64
    n_heads: int = 4
    normalization: Literal["layernorm", "none"] = "layernorm"
    init: Literal["gpt2", "torch"] = "torch"
    lr: float = 3e-3
    batch_size: int = 128
    warmup_steps: int = 200
    encoding: Literal["garg", "akyurek"] = "akyurek"
    curriculum: Curriculum | None = None

    def __post_init__(self) -> None:
        require_positive(self, "d_model", "n_heads", "lr", "batch_size")


@dataclass(frozen=True)
class Probing:
    d: int = 4
    n_points: int = 12
    n_layers: int = 4
    steps: int = 800
    control_steps: int | None = None  # None: exactly as long as the probed model (a fair control)
    prefixes: tuple[int, ...] = (8,)
    n_train: int = 1024
    n_test: int = 512
    probe_steps: int = 200
    hidden: int = 128
    inverse_lambda: float = 0.1  # lambda of the probed Sherman-Morrison state (X^T X + lambda I)^-1

    def __post_init__(self) -> None:
        require_positive(self, "d", "n_points", "n_layers", "steps", "prefixes", "n_train", "n_test", "probe_steps", "hidden",
                         "inverse_lambda")
        require(self.control_steps is None or self.control_steps >= 1, "control_steps", "must be at least 1, or null for steps")
        require(max(self.prefixes) <= self.n_points, "prefixes", f"must be <= n_points={self.n_points}")


@dataclass(frozen=True)
class LinRegThresholds:
    """The numbers the claims' verdicts use, stated before any run."""

    ols_margin: float = 0.5  # "closest to OLS": SPD to OLS below this fraction of the SPD to kNN and to averaging
    ols_spd: float = 0.01  # the paper's "SPD to OLS < 0.01"
    share_of_n: float = 0.9  # ... at more than this share of prefix lengths
    construction_tol: float = 1e-7  # a constructed model vs its learner (GD step, ridge): max |difference| / max |prediction|
    ols_spd_at_2d: float = 0.05  # the quick target: SPD/d to OLS at n = 2d (the paper reaches < 0.01 at L16 H512)


# Akyürek et al.'s noise grid: (sigma, tau), i.e. sigma^2 / tau^2 in {0, 1/16, 1/9, 1/4, 4/9}.
PAPER_NOISE_GRID = ((0.0, 1.0), (0.25, 1.0), (0.5, 1.5), (0.5, 1.0), (0.5, 0.75))
OLS_LIKE = ("ols", "ridge_0.01")  # ridge with lambda <= 0.01 differs from OLS only near n = d
RIDGE_LIKE = ("ridge_0.1", "ridge_1")


@dataclass(frozen=True)
class NoiseTraining:
    """How the models of the noise grid are trained: fine-tuned from the noiseless deepest model
    in rounds of ``round_steps`` (constant lr ``lr_factor`` x the recipe's) until their error,
    averaged over prefixes, is within ``bayes_margin`` (relative) of the Bayes-optimal ridge's,
    or ``max_steps`` are spent; the margin reached is reported either way. Measured at quick scale
    (d = 4, 4 layers): the noiseless model starts 11-13% above the Bayes error on noisy prompts and
    1,500 fine-tuning steps moved that by less than 2 points (the limit is the model, not the steps)."""

    round_steps: int = 300
    max_steps: int = 900
    bayes_margin: float = 0.15
    lr_factor: float = 0.3

    def __post_init__(self) -> None:
        require_positive(self, "round_steps", "max_steps", "bayes_margin", "lr_factor")


@dataclass(frozen=True)
class LinRegStudySettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    d: int = 4
    n_points: int = 9
    depths: tuple[int, ...] = (1, 2, 4)
    steps: tuple[int, ...] = (1000, 1500, 2500)
    recipe: LinRegRecipe = field(default_factory=LinRegRecipe)
    noise_grid: tuple[tuple[float, float], ...] = PAPER_NOISE_GRID
    noise_training: NoiseTraining = field(default_factory=NoiseTraining)
    eval_prompts: int = 1000
    ilwd_prompts: int = 64
    ilwd_queries: int = 32  # probe inputs per prompt for ILWD, as a multiple of d (kNN's fit settles by ~32 d)
    step_grid: int = 16  # GD / SGD step sizes tried, log-spaced in [0.01, 2] / d
    probing: Probing = field(default_factory=Probing)
    thresholds: LinRegThresholds = field(default_factory=LinRegThresholds)

    def __post_init__(self) -> None:
        require_positive(self, "d", "n_points", "depths", "steps", "eval_prompts", "ilwd_prompts", "ilwd_queries")
        require(len(self.steps) == len(self.depths), "steps", f"needs one entry per depth ({len(self.depths)}), got {len(self.steps)}")
        require(all(len(p) == 2 and p[0] >= 0 and p[1] > 0 for p in self.noise_grid), "noise_grid",
                "must be [sigma, tau] pairs with sigma >= 0 and tau > 0")
        require(any(p[0] == 0 for p in self.noise_grid), "noise_grid", "must include a noiseless pair (sigma = 0)")
        ratios = [noise_ratio(p) for p in self.noise_grid]
        require(len(set(ratios)) == len(ratios), "noise_grid", "the pairs must have distinct sigma^2 / tau^2")

    @property
    def noise_ratios(self) -> list[float]:
        """sigma^2 / tau^2 of each pair of the noise grid, in grid order."""
        return [noise_ratio(p) for p in self.noise_grid]


def noise_ratio(pair: tuple[float, float]) -> float:
    """sigma^2 / tau^2, the lambda of the Bayes-optimal ridge for that noise."""
    return float(pair[0]) ** 2 / float(pair[1]) ** 2


PRESETS = {
    "quick": LinRegStudySettings(),
    "paper": LinRegStudySettings(
        preset="paper",
        d=8,
        n_points=40,
        depths=(1, 2, 4, 8, 12, 16),
        steps=(500_000,) * 6,
        recipe=LinRegRecipe(d_model=512, n_heads=4, normalization="layernorm", init="gpt2", lr=1e-4, batch_size=64,
                            warmup_steps=100_000, encoding="akyurek"),
        noise_training=NoiseTraining(round_steps=20_000, max_steps=100_000),
        eval_prompts=4000,
        ilwd_prompts=256,
        probing=Probing(d=4, n_points=40, n_layers=16, steps=500_000, prefixes=(4, 8, 16, 40),
                        n_train=4096, n_test=1024, probe_steps=2000, hidden=512),
    ),
}


# ----------------------------------------------------------------------------- models


def _run_config(cfg: LinRegStudySettings, n_layers: int, steps: int, d: int, n_points: int, noise: tuple[float, float] = (0.0, 1.0),
                fixed_w: bool = False, init_weights: str | None = None, curriculum: bool = True) -> RunConfig:
    r = cfg.recipe
    task = LinRegConfig(d=d, n_points=n_points, sigma=noise[0], tau=noise[1], fixed_w=fixed_w, encoding=r.encoding,
                        curriculum=r.curriculum if curriculum else None)
    io = task.model_io()
    model = ModelConfig(n_layers=n_layers, d_model=r.d_model, n_heads=r.n_heads, normalization=r.normalization, init=r.init, **io)
    train_cfg = TrainConfig(steps=steps, batch_size=r.batch_size, lr=r.lr, warmup_steps=min(r.warmup_steps, steps // 5),
                            checkpoint_every=max(100, steps // 5), log_every=max(10, steps // 100), init_weights=init_weights)
    if init_weights is not None:  # fine-tuning in rounds: a constant rate, so that raising the steps extends the run
        n = cfg.noise_training
        train_cfg = replace(train_cfg, lr=r.lr * n.lr_factor, schedule="constant", warmup_steps=0,
                            checkpoint_every=n.round_steps, log_every=max(10, n.round_steps // 30))
    return RunConfig(task=seeded(task, cfg.seed), model=model, train=train_cfg, seed=cfg.seed)


def train_models(cfg: LinRegStudySettings, out: Path, device: torch.device, log: Callable[[str], None]) -> dict[str, RunDir]:
    """Train (or resume, or reuse) every model of the study; returns run directories by name."""
    runs: dict[str, RunDir] = {}

    def fit(name: str, config: RunConfig) -> None:
        log(f"  model {name}: {config.model.n_layers} layers, {config.train.steps} steps")
        result = train(config, out / "runs" / name, device, progress=False, label=f"linreg/{name}")
        runs[name] = result.run

    for depth, steps in zip(cfg.depths, cfg.steps):
        fit(f"L{depth}", _run_config(cfg, depth, steps, cfg.d, cfg.n_points))
    for pair in cfg.noise_grid:
        if pair[0] > 0:
            _fit_to_bayes(cfg, pair, runs, fit, out, log)
    p = cfg.probing
    fit("probe", _run_config(cfg, p.n_layers, p.steps, p.d, p.n_points, curriculum=False))
    fit("control", _run_config(cfg, p.n_layers, p.control_steps or p.steps, p.d, p.n_points, fixed_w=True, curriculum=False))
    return runs


def _fit_to_bayes(cfg: LinRegStudySettings, pair: tuple[float, float], runs: dict[str, RunDir], fit, out: Path,
                  log: Callable[[str], None]) -> None:
    """Fine-tune the deepest model on noise ``pair`` in rounds until it is within the Bayes margin (or out of steps)."""
    n, name = cfg.noise_training, _noise_name(pair)
    on_disk = RunDir(out / "runs" / name)
    # relative to the noise run's folder, so the study folder can be moved; a folder made before iclab 0.4 keeps
    # the absolute path its runs were started with
    start = os.path.relpath(runs[f"L{max(cfg.depths)}"].final_model, on_disk.path)
    if on_disk.config_file.is_file() and Path(on_disk.read_config().train.init_weights or "").is_absolute():
        start = on_disk.read_config().train.init_weights
    steps = max(n.round_steps, on_disk.read_config().train.steps if on_disk.config_file.is_file() else 0)
    while True:
        fit(name, _run_config(cfg, max(cfg.depths), steps, cfg.d, cfg.n_points, noise=pair, init_weights=start, curriculum=False))
        excess = bayes_excess(cfg, runs[name], pair)
        log(f"    {name}: error {excess:+.1%} relative to the Bayes-optimal ridge after {steps} steps")
        if excess <= n.bayes_margin or steps >= n.max_steps:
            return
        steps = min(steps + n.round_steps, n.max_steps)


def _noise_name(pair: tuple[float, float]) -> str:
    return f"L_noise_s{pair[0]:g}_t{pair[1]:g}"


def _learner(run: RunDir) -> ModelLearner:
    from iclab.runs import load_run

    loaded = load_run(run.path)
    return ModelLearner(loaded.model, LinearRegression(loaded.config.task))


# ----------------------------------------------------------------------------- analyses


def _eval_data(cfg: LinRegStudySettings, d: int, n: int, count: int, part: str, noise: tuple[float, float] = (0.0, 1.0)):
    task = LinearRegression(LinRegConfig(d=d, n_points=n, sigma=noise[0], tau=noise[1], data_seed=cfg.seed + 101,
                                         task_seed=cfg.seed + 102, noise_seed=cfg.seed + 103))
    xs, ys, ws = task.sample(0, count, "eval")
    g = generator(cfg.seed, part)
    return xs, ys, ws, g


def bayes_excess(cfg: LinRegStudySettings, run: RunDir, pair: tuple[float, float]) -> float:
    """The model's squared error, averaged over prefixes n >= 1, relative to the Bayes-optimal ridge
    (lambda = sigma^2 / tau^2) on the same held-out prompts, minus 1."""
    xs, ys, _, _ = _eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "bayes", noise=pair)
    lam = noise_ratio(pair)
    model = float(np.mean(normalized_error(_learner(run).predict(xs, ys), ys, cfg.d)[1:]))
    bayes = float(np.mean(normalized_error((OLS() if lam == 0 else Ridge(lam)).predict(xs, ys), ys, cfg.d)[1:]))
    return model / bayes - 1.0


def behaviour(cfg: LinRegStudySettings, runs: dict[str, RunDir]) -> dict[str, Any]:
    """SPD and ILWD (fitted through the origin, and with an intercept as in the authors' code) of every depth's
    model to every learner, each one's error against i, and how stable kNN's implicit weights are in the number
    of probe inputs."""
    xs, ys, _, g = _eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "behaviour")
    queries = torch.randn(cfg.ilwd_prompts, cfg.ilwd_queries * cfg.d, cfg.d, generator=g)
    xs_i, ys_i = xs[: cfg.ilwd_prompts], ys[: cfg.ilwd_prompts]

    def fits(learner) -> dict[str, torch.Tensor]:
        qp = learner.predict_queries(xs_i, ys_i, queries)
        return {"origin": implicit_weights(qp, queries), "intercept": implicit_weights(qp, queries, intercept=True)}

    learners = reference_learners(cfg.d)
    preds = {name: learner.predict(xs, ys) for name, learner in learners.items()}
    weights = {name: fits(learner) for name, learner in learners.items()}
    out: dict[str, Any] = {"learner_error": {n: normalized_error(p, ys, cfg.d) for n, p in preds.items()}, "depths": {},
                           "step_sizes": {}, "ilwd_queries": cfg.ilwd_queries * cfg.d,
                           "knn_weight_stability": {kind: implicit_weight_stability(learners["knn_3"], xs_i, ys_i, g, intercept=kind == "intercept")
                                                    for kind in ("origin", "intercept")}}
    grid = [float(x) / cfg.d for x in np.geomspace(0.01, 2.0, cfg.step_grid)]
    makers = {"gd_1step": lambda lr: GD(steps=1, lr=lr), "sgd": SGD}
    for name, make in makers.items():  # the second variant: the step with the learner's own lowest error
        lr, _ = best_step_size(make, grid, xs, ys, cfg.d)
        out["step_sizes"][f"{name}_best"] = lr
        learner = make(lr)
        preds[f"{name}_best"] = learner.predict(xs, ys)
        weights[f"{name}_best"] = fits(learner)
        out["learner_error"][f"{name}_best"] = normalized_error(preds[f"{name}_best"], ys, cfg.d)
    for depth in cfg.depths:
        model = _learner(runs[f"L{depth}"])
        mp = model.predict(xs, ys)
        mw = fits(model)
        mine_p, mine_w, chosen = dict(preds), dict(weights), {}
        for name, make in makers.items():  # the step that brings the learner closest to this model
            lr, _ = best_step_size(make, grid, xs, ys, cfg.d, target=mp)
            chosen[name] = lr
            mine_p[name] = make(lr).predict(xs, ys)
            mine_w[name] = fits(make(lr))
        out["depths"][str(depth)] = {
            "error": normalized_error(mp, ys, cfg.d),
            "spd": {n: to_dict(spd(mp, p, cfg.d, g)) for n, p in mine_p.items()},
            "ilwd": {n: to_dict(ilwd(mw["origin"], w["origin"], g)) for n, w in mine_w.items()},
            "ilwd_intercept": {n: to_dict(ilwd(mw["intercept"], w["intercept"], g)) for n, w in mine_w.items()},
            "step_sizes": chosen,
        }
    return out


def noise_table(cfg: LinRegStudySettings, runs: dict[str, RunDir]) -> dict[str, Any]:
    """MSPD between the deepest model trained at each (sigma, tau) of the grid and ridge at every
    lambda = sigma^2 / tau^2 of the grid (lambda 0: OLS); rows and columns keyed by the ratio."""
    deepest = f"L{max(cfg.depths)}"
    table: dict[str, dict[str, float]] = {}
    excess: dict[str, float] = {}
    for pair in cfg.noise_grid:
        run = runs[deepest] if pair[0] == 0 else runs[_noise_name(pair)]
        xs, ys, _, _ = _eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "noise", noise=pair)
        mp = _learner(run).predict(xs, ys)
        key = f"{noise_ratio(pair):.4f}"
        table[key] = {f"{lam:.4f}": mspd(mp, (OLS() if lam == 0 else Ridge(lam)).predict(xs, ys), cfg.d)
                      for lam in sorted(cfg.noise_ratios)}
        if pair[0] > 0:
            excess[key] = bayes_excess(cfg, run, pair)
    best = {col: float(min(row, key=row.get)) for col, row in table.items()}
    return {"mspd_table": table, "best_ridge_lambda": best, "bayes_excess": excess,
            "pairs": {f"{noise_ratio(p):.4f}": list(p) for p in cfg.noise_grid}}


@torch.no_grad()
def construction(cfg: LinRegStudySettings, runs: dict[str, RunDir], behaviour_part: dict[str, Any]) -> dict[str, Any]:
    """Akyürek et al.'s Theorem 1 as weights: the 2-block one-step-GD transformer at the step size that brings one GD
    step closest to the shallowest trained model, checked against the GD learner (float64), and compared with every
    trained depth by SPD."""
    shallowest = str(min(cfg.depths))
    lr = behaviour_part["depths"][shallowest]["step_sizes"]["gd_1step"]
    model = gd_step_model(cfg.d, cfg.n_points, lr)
    xs, ys, _, g = _eval_data(cfg, cfg.d, cfg.n_points, min(cfg.eval_prompts, 512), "construction")
    task = LinearRegression(LinRegConfig(d=cfg.d, n_points=cfg.n_points, encoding="akyurek"))
    x64, y64 = xs.double(), ys.double()  # the learners answer in their inputs' dtype: compare in float64
    built = task.predictions(model(task.encode(x64, y64)))
    gd = GD(steps=1, lr=lr).predict(x64, y64)
    out: dict[str, Any] = {"lr": lr, "prompts": len(xs), "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model, "d_mlp": model.cfg.mlp_dim,
                           "max_relative_error": float((built - gd).abs().max() / gd.abs().max()), "spd": {}}
    # Theorem 2: ridge by Sherman-Morrison updates, at the ridge of the learner list closest to the deepest model
    deepest = behaviour_part["depths"][str(max(cfg.depths))]["spd"]
    lam_name = min(RIDGES, key=lambda name: float(np.mean(deepest[name]["mean"][1:])))
    lam = RIDGES[lam_name]
    ridge_built = ridge_model(cfg.d, cfg.n_points, lam)
    ridge_pred = task.predictions(ridge_built(task.encode(x64, y64)))
    ridge_ref = Ridge(lam).predict(x64, y64)
    ridge = {"lam": lam, "n_layers": ridge_built.cfg.n_layers, "d_model": ridge_built.cfg.d_model,
             "d_mlp": ridge_built.cfg.mlp_dim, "n_heads": ridge_built.cfg.n_heads,
             "max_relative_error": float((ridge_pred - ridge_ref).abs().max() / ridge_ref.abs().max()), "spd": {}}
    for depth in cfg.depths:
        mine = _learner(runs[f"L{depth}"]).predict(xs, ys)
        out["spd"][str(depth)] = float(np.mean(spd(mine, built, cfg.d, g).mean[1:]))
        ridge["spd"][str(depth)] = float(np.mean(spd(mine, ridge_pred, cfg.d, g).mean[1:]))
    out["ridge"] = ridge
    return out


@torch.no_grad()
def _hidden_states(run: RunDir, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Residual stream before block 0 and after every block: [L+1, B, 2n, D]."""
    learner = _learner(run)
    model = learner.model
    inputs = learner.task.encode(xs, ys)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    _, cache = run_with_cache(model, inputs, names=names)
    return torch.stack([cache[n] for n in names])


def probes(cfg: LinRegStudySettings, runs: dict[str, RunDir]) -> dict[str, Any]:
    """R^2 of linear and MLP probes per layer and prefix, for the probed model and the control."""
    p = cfg.probing
    xs, ys, _, g = _eval_data(cfg, p.d, p.n_points, p.n_train + p.n_test, "probes")
    out: dict[str, Any] = {}
    for which in ("probe", "control"):
        hidden = _hidden_states(runs[which], xs, ys)
        res: dict[str, Any] = {}
        for n in p.prefixes:
            h = hidden[:, :, : 2 * n]
            for target, y in probe_targets(xs, ys, n, p.inverse_lambda).items():
                for kind in ("linear", "mlp"):
                    r = train_probes(h[:, : p.n_train], y[: p.n_train], h[:, p.n_train :], y[p.n_train :], kind, g,
                                     hidden=p.hidden, steps=p.probe_steps)
                    res[f"{target}/{kind}/n={n}"] = r.r2
        out["model" if which == "probe" else "control"] = res
    return out


def training_curves(runs: dict[str, RunDir]) -> dict[str, Any]:
    return {
        name: {"step": [r["step"] for r in rows], "loss": [r["loss"] for r in rows]}
        for name, run in runs.items()
        for rows in [[r for r in run.read_metrics() if r.get("split") == "train"]]
    }


# ----------------------------------------------------------------------------- findings


def _mean(curve: dict[str, list[float]], start: int = 1) -> float:
    return float(np.mean(curve["mean"][start:]))


AKYUREK = "Akyürek et al. 2023"


_TREND_RANK = {"gd_1step": 0, "gd_1step_best": 0, "ridge_1": 1, "ridge_0.1": 2, "ridge_0.01": 3, "ols": 3}


def _depth_trend(cfg: LinRegStudySettings, spd_sum: dict[str, dict[str, float]], beh: dict[str, Any],
                 own_steps: dict[str, float]) -> Claim:
    """1 layer ~ one GD step, intermediate depths ridge-like, the deepest OLS-like (closest learner moving monotonically
    along GD -> ridge with decreasing lambda -> OLS)."""
    depths = sorted(cfg.depths)
    closest = {dep: min(v, key=v.get) for dep, v in spd_sum.items()}
    ranks = [_TREND_RANK.get(closest[str(dep)]) for dep in depths]
    middle = ranks[1:-1]
    ok = (len(depths) >= 2 and None not in ranks and ranks[0] == 0 and ranks[-1] == 3
          and all(b >= a for a, b in zip(ranks, ranks[1:])) and (not middle or any(r in (1, 2) for r in middle)))
    return Claim(
        "the closest learner moves with depth: 1 layer ~ one GD step, intermediate depths ridge-like, the deepest OLS-like",
        Verdict.of(ok),
        ", ".join(f"{d} layers -> {closest[str(d)]} (SPD {spd_sum[str(d)][closest[str(d)]]:.3f}; one GD step "
                  f"{spd_sum[str(d)]['gd_1step']:.3f} at {beh[str(d)]['step_sizes']['gd_1step'] * cfg.d:.3g}/d, SGD "
                  f"{spd_sum[str(d)]['sgd']:.3f} at {beh[str(d)]['step_sizes']['sgd'] * cfg.d:.3g}/d)" for d in depths)
        + f"; GD and SGD take, per model, the step of a grid that brings each closest to it; steps with the learners' own "
        f"lowest error: GD {own_steps['gd_1step_best'] * cfg.d:.3g}/d, SGD {own_steps['sgd_best'] * cfg.d:.3g}/d",
        f"{AKYUREK}, figure 3")


def _noise_trend(cfg: LinRegStudySettings, noise: dict[str, Any]) -> Claim:
    """The best-matching ridge lambda grows with sigma^2 / tau^2 and each model's minimum is on or next to the diagonal."""
    best = noise["best_ridge_lambda"]
    ratios = sorted(best, key=float)
    lams = sorted(float(r) for r in ratios)
    vals = [best[r] for r in ratios]
    mono = all(b >= a - 1e-12 for a, b in zip(vals, vals[1:])) and vals[-1] > vals[0]
    offsets = [abs(lams.index(best[r]) - lams.index(float(r))) for r in ratios]
    near = all(o <= 1 for o in offsets)
    excess = noise.get("bayes_excess", {})
    return Claim(
        "the best-matching ridge lambda grows with the noise ratio sigma^2 / tau^2, on or next to the diagonal of the MSPD table",
        Verdict.of(mono and near),
        f"{', '.join(f'{float(r):.3f}->{v:.3f}' for r, v in zip(ratios, vals))}; on the diagonal for "
        f"{offsets.count(0)}/{len(ratios)} models, next to it for {offsets.count(1)}; noisy models' error vs the Bayes ridge "
        f"(training stops within {cfg.noise_training.bayes_margin:.0%} or at {cfg.noise_training.max_steps} steps): "
        + ", ".join(f"{float(r):.3f}: {e:+.1%}" for r, e in sorted(excess.items(), key=lambda kv: float(kv[0]))),
        f"{AKYUREK}, figure 4")


def _construction_claims(cfg: LinRegStudySettings, c: dict[str, Any], probe_r2: dict[str, dict[str, list[float]]]) -> list[Claim]:
    t = cfg.thresholds
    built = Claim(
        "a transformer implements one step of gradient descent on its prompt with O(1) layers and O(d) width (Theorem 1)",
        Verdict.of(c["max_relative_error"] <= t.construction_tol),
        f"constructed model: {c['n_layers']} blocks, width {c['d_model']} = 5d + 5, MLP {c['d_mlp']}, one head; max |prediction - "
        f"GD(lr {c['lr'] * cfg.d:.3g}/d)| / max |prediction| = {c['max_relative_error']:.1e} over {c.get('prompts', cfg.eval_prompts)} prompts (float64)",
        f"{AKYUREK}, section 3, Theorem 1", {"thresholds.construction_tol": t.construction_tol})
    r = c["ridge"]
    ridge = Claim(
        "a transformer implements ridge regression by Sherman-Morrison updates, with O(n) layers and O(d^2) width (Theorem 2)",
        Verdict.of(r["max_relative_error"] <= t.construction_tol),
        f"constructed model at lambda {r['lam']:g} (the reference ridge closest to the deepest model): {r['n_layers']} blocks = "
        f"5 (n - 1) + 2, width {r['d_model']} = d^2 + 6d + 13, MLP {r['d_mlp']}, {r['n_heads']} heads; division through the "
        f"LayerNorm; max |prediction - ridge| / max |ridge| = {r['max_relative_error']:.1e} (float64)",
        f"{AKYUREK}, section 3, Theorem 2", {"thresholds.construction_tol": t.construction_tol})
    model, control = probe_r2["model"], probe_r2["control"]
    compare = measured(
        "trained models against the constructed ones (SPD/d, mean over n >= 1), and probes for the constructions' "
        "intermediate quantities: X^T y (one GD step) and the Sherman-Morrison state (X^T X + lambda I)^-1",
        "SPD to one GD step: " + ", ".join(f"{dep} layers {v:.3f}" for dep, v in c["spd"].items())
        + "; to Sherman-Morrison ridge: " + ", ".join(f"{dep} layers {v:.3f}" for dep, v in r["spd"].items())
        + "; best MLP-probe R^2 in the probed model (control): "
        + ", ".join(f"{name} {max(model[name]):.2f} ({max(control[name]):.2f})" for name in ("XTy", "inv_gram")),
        f"{AKYUREK}, sections 3 and 5")
    return [built, ridge, compare]


def findings(cfg: LinRegStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    beh = res["behaviour"]["depths"]
    spd_sum = {dep: {n: _mean(c) for n, c in v["spd"].items()} for dep, v in beh.items()}
    ilwd_sum = {dep: {n: _mean(c) for n, c in v["ilwd"].items()} for dep, v in beh.items()}
    ilwd_icpt = {dep: {n: _mean(c) for n, c in v["ilwd_intercept"].items()} for dep, v in beh.items()}
    closest = {dep: min(v, key=v.get) for dep, v in spd_sum.items()}
    deepest = str(max(cfg.depths))
    s, t = spd_sum[deepest], cfg.thresholds
    at_2d = beh[deepest]["spd"]["ols"]["mean"][2 * cfg.d] if 2 * cfg.d < cfg.n_points else beh[deepest]["spd"]["ols"]["mean"][-1]
    ok = (closest[deepest] in OLS_LIKE and s["ols"] < t.ols_margin * min(s["knn_3"], s["averaging"])
          and at_2d <= t.ols_spd_at_2d)
    claims = [Claim(
        f"the deepest model ({deepest} layers) behaves like OLS: closest to it among the learners (ridge with lambda <= 0.01 "
        "counts as OLS), far from kNN and averaging, and SPD/d to OLS small once n = 2d", Verdict.of(ok),
        f"closest: {closest[deepest]}; mean normalised SPD to OLS {s['ols']:.3f}, ridge 0.01 {s['ridge_0.01']:.3f}, ridge 0.1 "
        f"{s['ridge_0.1']:.3f}, kNN {s['knn_3']:.3f}, averaging {s['averaging']:.3f}; SPD/d to OLS at n = 2d {at_2d:.3f}",
        f"{AKYUREK}, section 4 (SPD)", {"thresholds.ols_margin": t.ols_margin, "thresholds.ols_spd_at_2d": t.ols_spd_at_2d},
        scale_note=f"d = {cfg.d}; the paper's behaviour figures use d = 8 and 16 (d = 4 is its probing setting)."
        if cfg.d != 8 else "")]
    frac = float(np.mean(np.array(beh[deepest]["spd"]["ols"]["mean"][1:]) < t.ols_spd))
    claims.append(Claim(
        "normalised SPD to OLS is tiny at almost every number of examples", Verdict.of(frac > t.share_of_n),
        f"below {t.ols_spd} at {frac:.0%} of n", f"{AKYUREK}, figure 2", {"thresholds.ols_spd": t.ols_spd, "thresholds.share_of_n": t.share_of_n},
        scale_note="The paper's models are L16 H512 trained 500k steps; this preset's are far smaller and shorter."))
    claims.append(_depth_trend(cfg, spd_sum, beh, res["behaviour"]["step_sizes"]))
    stab = res["behaviour"]["knn_weight_stability"]
    claims.append(measured(
        "ILWD: kNN's implicit weights against the number of probe inputs (relative squared change vs a fit on 64 d probes); "
        f"ILWD here uses {res['behaviour']['ilwd_queries']} probes per prompt",
        "; ".join(f"{kind}: " + ", ".join(f"{m}d {v:.3f}" for m, v in stab[kind].items()) for kind in ("origin", "intercept"))
        + f"; closest learner by ILWD at {deepest} layers: through the origin {min(ilwd_sum[deepest], key=ilwd_sum[deepest].get)}, "
        f"with an intercept {min(ilwd_icpt[deepest], key=ilwd_icpt[deepest].get)}",
        f"{AKYUREK}, section 4 (ILWD); the authors' plotting code fits with an intercept"))
    claims.append(_noise_trend(cfg, res["noise"]))
    best = res["noise"]["best_ridge_lambda"]
    pr = res["probes"]
    n_max = max(cfg.probing.prefixes)
    summary_r2: dict[str, dict[str, list[float]]] = {"model": {}, "control": {}}
    for who in ("model", "control"):
        for target in ("XTy", "w_ols", "inv_gram"):
            summary_r2[who][target] = pr[who].get(f"{target}/mlp/n={n_max}", [float("nan")])
    parts = []
    ok = True
    for target in ("XTy", "w_ols"):
        m, c = summary_r2["model"][target], summary_r2["control"][target]
        ok &= max(m[1:]) > m[0] and max(m) > max(c)
        parts.append(f"{target}: model R^2 {m[0]:.2f} (embeddings) -> best {max(m):.2f}, control best {max(c):.2f}")
    claims.append(Claim("probes find X^T y and w_OLS better with depth, and better than in the control model", Verdict.of(ok),
                        f"MLP probes, n={n_max}; " + "; ".join(parts), f"{AKYUREK}, section 5"))
    lin = pr["model"][f"w_ols/linear/n={n_max}"]
    mlp = pr["model"][f"w_ols/mlp/n={n_max}"]
    claims += _construction_claims(cfg, res["construction"], summary_r2)
    claims.append(Claim("MLP probes beat linear ones for w_OLS (it is encoded non-linearly)", Verdict.of(max(mlp) >= max(lin)),
                        f"best R^2 {max(mlp):.2f} vs {max(lin):.2f}", f"{AKYUREK}, section 5"))
    numbers = {
        "spd": spd_sum,
        "ilwd": ilwd_sum,
        "ilwd_intercept": ilwd_icpt,
        "closest_learner": closest,
        "mspd_table": res["noise"]["mspd_table"],
        "best_ridge_lambda": best,
        "noise_bayes_excess": res["noise"]["bayes_excess"],
        "probe_r2": summary_r2,
        "construction": res["construction"],
    }
    return claims, numbers


def run(preset: str, out: Path, overrides: list[str], device: torch.device, log: Callable[[str], None] = print) -> dict[str, Any]:
    cfg = settings_for(PRESETS, preset, overrides, "linreg")
    out = Path(out)
    parts = Parts("linreg", out, cfg, log)
    runs = train_models(cfg, out, device, log)
    res = {
        "behaviour": parts.get("behaviour", lambda: behaviour(cfg, runs)),
        "noise": parts.get("noise", lambda: noise_table(cfg, runs)),
        "probes": parts.get("probes", lambda: probes(cfg, runs)),
        "curves": training_curves(runs),
    }
    res["construction"] = parts.get("construction", lambda: construction(cfg, runs, res["behaviour"]))
    claims, numbers = findings(cfg, res)
    from iclab.plots.linreg import plot_all

    figures = plot_all(res, cfg, out / "figures")
    notes = [
        "Noise-grid models (the paper's (sigma, tau) pairs) are fine-tuned from the noiseless deepest model in rounds until within "
        "noise_training.bayes_margin of the Bayes-optimal ridge's error (or noise_training.max_steps); the margins reached are in the noise claim.",
        "SPD / ILWD summaries are means over n >= 1 of the curves in parts/behaviour.json (normalised by d).",
        "ILWD fits implicit weights on ilwd_queries x d fresh probe inputs per prompt, through the origin (ilwd) and with an "
        "intercept (ilwd_intercept, as the authors' plotting code); kNN's stability in the number of probes is in the findings.",
        "Quick probes: MLP probes have 128 hidden units (512 in the paper preset) and are fitted at n = 2d only, to fit the CPU budget.",
    ]
    return finish("linreg", cfg.preset, out, numbers, claims, figures, parts, notes)

