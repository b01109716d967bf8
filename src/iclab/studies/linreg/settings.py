"""The linreg study's settings: the recipe every model is trained with, the depths and steps, the noise grid and how
its models are fine-tuned, the probing set-up, the thresholds its claims use, and the presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from iclab.analysis.llc import SGLDSettings
from iclab.config import require, require_positive
from iclab.tasks import Curriculum
from iclab.train.config import Precision


@dataclass(frozen=True)
class LinRegRecipe:
    """How each model is trained (shared by every model of the study).

    The quick defaults were chosen by measurement on 2 CPU cores (d = 4, 9 points,
    4 layers, 200 warm-up steps then cosine; docs/linreg.md has the table):
    pre-LayerNorm with PyTorch's default linear init (``init = "torch"``), lr
    3e-3. What makes the deepest model OLS-like rather than ridge(0.1)-like is
    the number of prompts it sees, not the steps or the width: at batch 128 the
    4-layer model stayed closest to ridge 0.1 after 2,500 and 5,000 steps, at
    d_model 64 and 128 alike; at batch 512 it is closest to ridge 0.01 after
    1,800-2,500 steps, at d_model 32 as at 64. The loss averages every prefix,
    and the early prefixes' irreducible error makes the gradient noisy; a larger
    batch averages that noise away. d_model 32 costs half of d_model 64 per step.
    With iclab's GPT-2 init (std 0.02) a pre-LayerNorm model sat on the
    predict-zero plateau for over 1,500 steps, because the small init makes the
    normalised y token carry little more than its sign.
    """

    d_model: int = 32
    n_heads: int = 4
    normalization: Literal["layernorm", "none"] = "layernorm"
    init: Literal["gpt2", "torch"] = "torch"
    lr: float = 3e-3
    batch_size: int = 512
    warmup_steps: int = 200
    encoding: Literal["garg", "akyurek"] = "akyurek"
    curriculum: Curriculum | None = None
    precision: Precision = "float32"  # train.precision: bfloat16 autocast for the training steps

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
    probe_z: float = 2.0  # "MLP probes beat linear ones": the R^2 difference exceeds this many standard errors
    probe_gain: float = 0.0  # "probes find X^T y and w_OLS better with depth": best R^2 above the embeddings' and the control's by more
    noise_offset: int = 1  # each noisy model's best ridge lambda at most this many grid steps from its own noise ratio
    # the depth trend's order of learners: one GD step, then ridge with decreasing lambda, then OLS-like (a model's closest
    # learner must not move back along it with depth; the shallowest in the first group, the deepest in the last)
    depth_trend: tuple[tuple[str, ...], ...] = (("gd_1step", "gd_1step_best"), ("ridge_1",), ("ridge_0.1",), ("ridge_0.01", "ols"))

    def __post_init__(self) -> None:
        require_positive(self, "ols_margin", "ols_spd", "share_of_n", "construction_tol", "ols_spd_at_2d", "probe_z")
        require(self.share_of_n <= 1, "share_of_n", f"must be a share in (0, 1], got {self.share_of_n!r}")
        require(self.probe_gain >= 0 and self.noise_offset >= 0, "noise_offset", "probe_gain and noise_offset must be >= 0")
        require(len(self.depth_trend) >= 2, "depth_trend", "needs at least two groups of learners")


# Akyürek et al.'s noise grid: (sigma, tau), i.e. sigma^2 / tau^2 in {0, 1/16, 1/9, 1/4, 4/9}.
PAPER_NOISE_GRID = ((0.0, 1.0), (0.25, 1.0), (0.5, 1.5), (0.5, 1.0), (0.5, 0.75))
OLS_LIKE = ("ols", "ridge_0.01")  # ridge with lambda <= 0.01 differs from OLS only near n = d
RIDGE_LIKE = ("ridge_0.1", "ridge_1")


@dataclass(frozen=True)
class NoiseTraining:
    """How the models of the noise grid are trained: fine-tuned from the noiseless deepest model
    in rounds of ``round_steps`` (constant lr ``lr_factor`` x the recipe's) until their error,
    averaged over prefixes, is within ``bayes_margin`` (relative) of the Bayes-optimal ridge's,
    or ``max_steps`` are spent; the margin reached is reported either way (docs/linreg.md has the
    margins measured at quick scale)."""

    round_steps: int = 300
    max_steps: int = 900
    bayes_margin: float = 0.15
    lr_factor: float = 0.3

    def __post_init__(self) -> None:
        require_positive(self, "round_steps", "max_steps", "bayes_margin", "lr_factor")


@dataclass(frozen=True)
class LinRegLLC:
    """The local learning coefficient along the deepest model's training (Hoogland et al. 2024's linear-regression
    transformer): ``snapshots`` log-spaced weight snapshots saved while it trains, each estimated on ``samples`` fixed
    noiseless prompts with ``sampler`` and compared with the reference learners on ``prompts`` held-out prompts. A step
    of the LLC curve counts when larger than ``sigma`` combined standard errors of the chains. ``snapshots = 0``: no
    LLC parts. The step size was chosen by a rule stated before any claim was looked at: the smallest of 1e-4, 3e-4,
    1e-3, 3e-3 at which both chains on the final snapshot settle (docs/llc.md)."""

    snapshots: int = 12
    samples: int = 512
    prompts: int = 500
    sampler: SGLDSettings = field(default_factory=lambda: SGLDSettings(step_size=3e-4, localization=100.0, chains=2, burnin=50,
                                                                       draws=100, batch_size=32))
    sigma: float = 2.0

    def __post_init__(self) -> None:
        require(self.snapshots >= 0, "llc.snapshots", f"must be >= 0, got {self.snapshots}")
        require(self.snapshots != 1, "llc.snapshots", "must be 0 (no LLC parts) or at least 2 (a curve)")
        require_positive(self, "samples", "prompts", "sigma")


@dataclass(frozen=True)
class LinRegStudySettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    seeds: int = 3  # the seeds trained and analysed, seed .. seed + seeds - 1; a claim's verdict is judged over them
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
    llc: LinRegLLC = field(default_factory=LinRegLLC)

    def __post_init__(self) -> None:
        require_positive(self, "seeds", "d", "n_points", "depths", "steps", "eval_prompts", "ilwd_prompts", "ilwd_queries")
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
