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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from iclab.analysis.learner_metrics import best_step_size, ilwd, implicit_weights, mspd, normalized_error, spd
from iclab.analysis.probes import probe_targets, train_probes
from iclab.claims import Claim, Verdict, measured
from iclab.config import require, require_positive, to_dict
from iclab.learners import GD, KNN, OLS, SGD, Averaging, Ridge
from iclab.learners.model import ModelLearner
from iclab.models import ModelConfig, run_with_cache
from iclab.runs import RunDir
from iclab.studies.common import Parts, finish, generator, seeded, settings_for
from iclab.tasks import Curriculum, LinearRegression, LinRegConfig
from iclab.train import RunConfig, TrainConfig, train


@dataclass(frozen=True)
class LinRegRecipe:
    """How each model is trained (shared by every model of the study).

    The quick defaults were chosen by measurement on 2 CPU cores (d = 8, 4 layers,
    d_model 64): with pre-LayerNorm, a y token's embedding is normalised before
    the first attention, which keeps only the sign of y, and the loss sat on the
    predict-zero plateau (error/d ~ 1.05) for over 1,500 steps at lr 1e-3 and
    3e-3, with or without Garg's curriculum. Without LayerNorm, with Akyürek's
    encoding (x and y in separate coordinates) and batch 128, the plateau broke
    after ~300 steps (error/d at n = 2d: 0.74 at step 500, 0.50 at 1,000).
    """

    d_model: int = 64
    n_heads: int = 4
    normalization: Literal["layernorm", "none"] = "none"
    lr: float = 1e-3
    batch_size: int = 128
    warmup_steps: int = 100
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

    def __post_init__(self) -> None:
        require_positive(self, "d", "n_points", "n_layers", "steps", "prefixes", "n_train", "n_test", "probe_steps", "hidden")
        require(self.control_steps is None or self.control_steps >= 1, "control_steps", "must be at least 1, or null for steps")
        require(max(self.prefixes) <= self.n_points, "prefixes", f"must be <= n_points={self.n_points}")


@dataclass(frozen=True)
class LinRegThresholds:
    """The numbers the claims' verdicts use, stated before any run."""

    ols_margin: float = 0.5  # "closest to OLS": SPD to OLS below this fraction of the SPD to kNN and to averaging
    ols_spd: float = 0.01  # the paper's "SPD to OLS < 0.01"
    share_of_n: float = 0.9  # ... at more than this share of prefix lengths


@dataclass(frozen=True)
class LinRegStudySettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    d: int = 8
    n_points: int = 17
    depths: tuple[int, ...] = (1, 2, 4)
    steps: tuple[int, ...] = (500, 1000, 2000)
    recipe: LinRegRecipe = field(default_factory=LinRegRecipe)
    noise_ratios: tuple[float, ...] = (0.0, 1 / 16, 1 / 9, 1 / 4, 4 / 9)
    noise_finetune_steps: int = 150
    eval_prompts: int = 1000
    ilwd_prompts: int = 64
    step_grid: int = 16  # GD / SGD step sizes tried, log-spaced in [0.01, 2] / d
    probing: Probing = field(default_factory=Probing)
    thresholds: LinRegThresholds = field(default_factory=LinRegThresholds)

    def __post_init__(self) -> None:
        require_positive(self, "d", "n_points", "depths", "steps", "eval_prompts", "ilwd_prompts")
        require(len(self.steps) == len(self.depths), "steps", f"needs one entry per depth ({len(self.depths)}), got {len(self.steps)}")
        require(all(r >= 0 for r in self.noise_ratios) and 0.0 in self.noise_ratios, "noise_ratios", "must be >= 0 and include 0")
        require(self.noise_finetune_steps >= 0, "noise_finetune_steps", "must be >= 0")


PRESETS = {
    "quick": LinRegStudySettings(),
    "paper": LinRegStudySettings(
        preset="paper",
        n_points=40,
        depths=(1, 2, 4, 8, 12, 16),
        steps=(500_000,) * 6,
        recipe=LinRegRecipe(d_model=512, n_heads=4, normalization="layernorm", lr=1e-4, batch_size=64, warmup_steps=100_000, encoding="akyurek"),
        noise_finetune_steps=100_000,
        eval_prompts=4000,
        ilwd_prompts=256,
        probing=Probing(d=4, n_points=40, n_layers=16, steps=500_000, prefixes=(4, 8, 16, 40),
                        n_train=4096, n_test=1024, probe_steps=2000, hidden=512),
    ),
}


# ----------------------------------------------------------------------------- models


def _run_config(cfg: LinRegStudySettings, n_layers: int, steps: int, d: int, n_points: int, sigma: float = 0.0,
                fixed_w: bool = False, init_weights: str | None = None, curriculum: bool = True) -> RunConfig:
    r = cfg.recipe
    task = LinRegConfig(d=d, n_points=n_points, sigma=sigma, fixed_w=fixed_w, encoding=r.encoding,
                        curriculum=r.curriculum if curriculum else None)
    io = task.model_io()
    model = ModelConfig(n_layers=n_layers, d_model=r.d_model, n_heads=r.n_heads, normalization=r.normalization, **io)
    train_cfg = TrainConfig(steps=steps, batch_size=r.batch_size, lr=r.lr, warmup_steps=min(r.warmup_steps, steps // 5),
                            checkpoint_every=max(100, steps // 5), log_every=max(10, steps // 100), init_weights=init_weights)
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
    deepest = f"L{max(cfg.depths)}"
    for ratio in cfg.noise_ratios:
        if ratio > 0:
            start = str(runs[deepest].final_model) if cfg.noise_finetune_steps else None
            steps = cfg.noise_finetune_steps or cfg.steps[cfg.depths.index(max(cfg.depths))]
            fit(_noise_name(ratio), _run_config(cfg, max(cfg.depths), steps, cfg.d, cfg.n_points, sigma=math.sqrt(ratio),
                                                init_weights=start, curriculum=False))
    p = cfg.probing
    fit("probe", _run_config(cfg, p.n_layers, p.steps, p.d, p.n_points, curriculum=False))
    fit("control", _run_config(cfg, p.n_layers, p.control_steps or p.steps, p.d, p.n_points, fixed_w=True, curriculum=False))
    return runs


def _noise_name(ratio: float) -> str:
    return f"L_noise_{ratio:.4f}"


def _learner(run: RunDir) -> ModelLearner:
    from iclab.runs import load_run

    loaded = load_run(run.path)
    return ModelLearner(loaded.model, LinearRegression(loaded.config.task))


# ----------------------------------------------------------------------------- analyses


def reference_learners(d: int, sigma: float = 0.0) -> dict[str, Any]:
    """The learners every model is compared with. GD and SGD here have fixed steps scaled to d; :func:`behaviour`
    replaces them, per model, by the step of a grid that brings each closest to that model (``gd_1step``, ``sgd``)
    and adds the steps with their own lowest error (``gd_1step_best``, ``sgd_best``)."""
    return {
        "ols": OLS(),
        "ridge_0.1": Ridge(0.1),
        "ridge_1": Ridge(1.0),
        "gd_1step": GD(steps=1, lr=0.5 / d / 10),
        "sgd": SGD(lr=0.5 / d),
        "knn_3": KNN(3, "uniform"),
        "knn_3_inv": KNN(3, "inverse_distance"),
        "averaging": Averaging(),
    }


def _eval_data(cfg: LinRegStudySettings, d: int, n: int, count: int, part: str, sigma: float = 0.0):
    task = LinearRegression(LinRegConfig(d=d, n_points=n, sigma=sigma, data_seed=cfg.seed + 101, task_seed=cfg.seed + 102, noise_seed=cfg.seed + 103))
    xs, ys, ws = task.sample(0, count, "eval")
    g = generator(cfg.seed, part)
    return xs, ys, ws, g


def behaviour(cfg: LinRegStudySettings, runs: dict[str, RunDir]) -> dict[str, Any]:
    """SPD and ILWD of every depth's model to every learner, and each one's error, against i."""
    xs, ys, _, g = _eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "behaviour")
    queries = torch.randn(cfg.ilwd_prompts, 2 * cfg.d, cfg.d, generator=g)
    xs_i, ys_i = xs[: cfg.ilwd_prompts], ys[: cfg.ilwd_prompts]
    learners = reference_learners(cfg.d)
    preds = {name: learner.predict(xs, ys) for name, learner in learners.items()}
    weights = {name: implicit_weights(learner.predict_queries(xs_i, ys_i, queries), queries) for name, learner in learners.items()}
    out: dict[str, Any] = {"learner_error": {n: normalized_error(p, ys, cfg.d) for n, p in preds.items()}, "depths": {},
                           "step_sizes": {}}
    grid = [float(x) / cfg.d for x in np.geomspace(0.01, 2.0, cfg.step_grid)]
    makers = {"gd_1step": lambda lr: GD(steps=1, lr=lr), "sgd": SGD}
    for name, make in makers.items():  # the second variant: the step with the learner's own lowest error
        lr, _ = best_step_size(make, grid, xs, ys, cfg.d)
        out["step_sizes"][f"{name}_best"] = lr
        learner = make(lr)
        preds[f"{name}_best"] = learner.predict(xs, ys)
        weights[f"{name}_best"] = implicit_weights(learner.predict_queries(xs_i, ys_i, queries), queries)
        out["learner_error"][f"{name}_best"] = normalized_error(preds[f"{name}_best"], ys, cfg.d)
    for depth in cfg.depths:
        model = _learner(runs[f"L{depth}"])
        mp = model.predict(xs, ys)
        mw = implicit_weights(model.predict_queries(xs_i, ys_i, queries), queries)
        mine_p, mine_w, chosen = dict(preds), dict(weights), {}
        for name, make in makers.items():  # the step that brings the learner closest to this model
            lr, _ = best_step_size(make, grid, xs, ys, cfg.d, target=mp)
            chosen[name] = lr
            mine_p[name] = make(lr).predict(xs, ys)
            mine_w[name] = implicit_weights(make(lr).predict_queries(xs_i, ys_i, queries), queries)
        out["depths"][str(depth)] = {
            "error": normalized_error(mp, ys, cfg.d),
            "spd": {n: to_dict(spd(mp, p, cfg.d, g)) for n, p in mine_p.items()},
            "ilwd": {n: to_dict(ilwd(mw, w, g)) for n, w in mine_w.items()},
            "step_sizes": chosen,
        }
    return out


def noise_table(cfg: LinRegStudySettings, runs: dict[str, RunDir]) -> dict[str, Any]:
    """MSPD between the deepest model trained at each noise ratio and ridge at every lambda of the grid."""
    deepest = f"L{max(cfg.depths)}"
    table: dict[str, dict[str, float]] = {}
    for ratio in cfg.noise_ratios:
        run = runs[deepest] if ratio == 0 else runs[_noise_name(ratio)]
        xs, ys, _, _ = _eval_data(cfg, cfg.d, cfg.n_points, cfg.eval_prompts, "noise", sigma=math.sqrt(ratio))
        mp = _learner(run).predict(xs, ys)
        table[f"{ratio:.4f}"] = {
            f"{lam:.4f}": mspd(mp, (OLS() if lam == 0 else Ridge(lam)).predict(xs, ys), cfg.d) for lam in cfg.noise_ratios
        }
    best = {col: float(min(row, key=row.get)) for col, row in table.items()}
    return {"mspd_table": table, "best_ridge_lambda": best}


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
            for target, y in probe_targets(xs, ys, n).items():
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


def findings(cfg: LinRegStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    beh = res["behaviour"]["depths"]
    spd_sum = {dep: {n: _mean(c) for n, c in v["spd"].items()} for dep, v in beh.items()}
    ilwd_sum = {dep: {n: _mean(c) for n, c in v["ilwd"].items()} for dep, v in beh.items()}
    closest = {dep: min(v, key=v.get) for dep, v in spd_sum.items()}
    deepest = str(max(cfg.depths))
    s, t = spd_sum[deepest], cfg.thresholds
    ok = closest[deepest] in ("ols", "ridge_0.1") and s["ols"] < t.ols_margin * min(s["knn_3"], s["averaging"])
    claims = [Claim(
        f"the deepest model ({deepest} layers) behaves like OLS: closest to it among the learners", Verdict.of(ok),
        f"closest: {closest[deepest]}; mean normalised SPD to OLS {s['ols']:.3f}, to kNN {s['knn_3']:.3f}, to averaging {s['averaging']:.3f}",
        f"{AKYUREK}, section 4 (SPD)", {"thresholds.ols_margin": t.ols_margin})]
    frac = float(np.mean(np.array(beh[deepest]["spd"]["ols"]["mean"][1:]) < t.ols_spd))
    claims.append(Claim(
        "normalised SPD to OLS is tiny at almost every number of examples", Verdict.of(frac > t.share_of_n),
        f"below {t.ols_spd} at {frac:.0%} of n", f"{AKYUREK}, figure 2", {"thresholds.ols_spd": t.ols_spd, "thresholds.share_of_n": t.share_of_n},
        scale_note="The paper's models are L16 H512 trained 500k steps; this preset's are far smaller and shorter."))
    claims.append(measured("closest learner by SPD per depth (paper: 1 layer ~ one GD step, 2-4 ridge-like, 8+ OLS-like); GD and "
                           "SGD with the step size of a grid that brings each closest to that model",
                           ", ".join(f"{d} layers -> {c} (GD step {beh[d]['step_sizes']['gd_1step'] * cfg.d:.3g}/d, SGD "
                                     f"{beh[d]['step_sizes']['sgd'] * cfg.d:.3g}/d)" for d, c in closest.items())
                           + f"; steps with the learners' own lowest error: GD {res['behaviour']['step_sizes']['gd_1step_best'] * cfg.d:.3g}/d, "
                           f"SGD {res['behaviour']['step_sizes']['sgd_best'] * cfg.d:.3g}/d", f"{AKYUREK}, figure 3"))
    best = res["noise"]["best_ridge_lambda"]
    ratios = sorted(best, key=float)
    vals = [best[r] for r in ratios]
    mono = all(b >= a - 1e-12 for a, b in zip(vals, vals[1:]))
    diag = sum(abs(best[r] - float(r)) < 1e-9 for r in ratios)
    claims.append(Claim(
        "the best-matching ridge lambda grows with the noise ratio sigma^2 / tau^2", Verdict.of(mono and vals[-1] > vals[0]),
        f"{', '.join(f'{float(r):.3f}->{v:.3f}' for r, v in zip(ratios, vals))}; on the diagonal for {diag}/{len(ratios)} columns",
        f"{AKYUREK}, figure 4"))
    pr = res["probes"]
    n_max = max(cfg.probing.prefixes)
    summary_r2: dict[str, dict[str, list[float]]] = {"model": {}, "control": {}}
    for who in ("model", "control"):
        for target in ("XTy", "w_ols"):
            summary_r2[who][target] = pr[who][f"{target}/mlp/n={n_max}"]
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
    claims.append(Claim("MLP probes beat linear ones for w_OLS (it is encoded non-linearly)", Verdict.of(max(mlp) >= max(lin)),
                        f"best R^2 {max(mlp):.2f} vs {max(lin):.2f}", f"{AKYUREK}, section 5"))
    numbers = {
        "spd": spd_sum,
        "ilwd": ilwd_sum,
        "closest_learner": closest,
        "mspd_table": res["noise"]["mspd_table"],
        "best_ridge_lambda": best,
        "probe_r2": summary_r2,
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
    claims, numbers = findings(cfg, res)
    from iclab.plots.linreg import plot_all

    figures = plot_all(res, cfg, out / "figures")
    notes = [
        "Noise-grid models are fine-tuned from the noiseless deepest model for noise_finetune_steps steps (0: trained from scratch).",
        "SPD / ILWD summaries are means over n >= 1 of the curves in parts/behaviour.json (normalised by d).",
        "ILWD fits implicit weights on 2d fresh probe inputs per prompt.",
        "Quick probes: MLP probes have 128 hidden units (512 in the paper preset) and are fitted at n = 2d only, to fit the CPU budget.",
    ]
    return finish("linreg", cfg.preset, out, numbers, claims, figures, parts, notes)

