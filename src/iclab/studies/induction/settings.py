"""The induction study's settings: the training recipe, the models (attn<L>, smeared<L>, mlp<L>), the probes, the
pretrained-model branch's settings, the thresholds its claims use, and the presets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from iclab.analysis.induction.phase_change import WINDOW_LEVEL
from iclab.analysis.llc import SGLDSettings
from iclab.config import require, require_positive
from iclab.tasks.induction import InductionConfig
from iclab.train.config import Precision

MODEL_NAME = re.compile(r"^(attn|smeared|mlp)([1-9])$")


@dataclass(frozen=True)
class InductionRecipe:
    """How every model of the study is trained (see docs/induction.md for how it was chosen)."""

    d_model: int = 64
    n_heads: int = 4
    n_ctx: int = 64
    normalization: Literal["layernorm", "none"] = "layernorm"
    positional: Literal["learned", "shortformer", "none"] = "shortformer"
    lr: float = 6e-3
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "constant"
    batch_size: int = 32
    steps: int = 3500
    snapshots: int = 100
    natural_share: float = 0.1
    markov_share: float = 0.0
    repeat_share: float = 0.9
    synthetic_vocab: int = 64
    n_spans: int = 2
    span_min: int = 4
    span_max: int = 16
    precision: Precision = "float32"  # train.precision: bfloat16 autocast for the training steps

    def __post_init__(self) -> None:
        require_positive(self, "d_model", "n_heads", "n_ctx", "lr", "batch_size", "steps", "snapshots")
        self.task()  # the mixture's own checks (shares, span lengths vs context) before anything is written

    def task(self, seed: int = 0) -> InductionConfig:
        """The training mixture; its data stream follows the study's seed (seed s samples stream s + 1)."""
        return InductionConfig(n_ctx=self.n_ctx, natural_share=self.natural_share, markov_share=self.markov_share,
                               repeat_share=self.repeat_share, synthetic_vocab=self.synthetic_vocab, n_spans=self.n_spans,
                               span_min=self.span_min, span_max=self.span_max, data_seed=seed + 1)


@dataclass(frozen=True)
class InductionThresholds:
    """The numbers the claims' verdicts use, stated before any run."""

    window_share: float = 0.5  # share of the final ICL score inside the window for "a phase change"
    previous_token: float = 0.3  # previous-token score of an earlier-layer head
    paper_window_share: float = 0.75  # the paper's "more than 75% forms in the window"
    ablation_drop: float = 0.5  # share of the ICL score ablating the induction heads must remove
    attribution_p: float = 0.01  # one-sided Welch test: induction-predictable tokens gain more across the window

    def __post_init__(self) -> None:
        for name in ("window_share", "previous_token", "paper_window_share", "ablation_drop", "attribution_p"):
            require(0 < getattr(self, name) <= 1, name, f"must lie in (0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class PretrainedProbe:
    """Settings of the study on a pretrained model (``model`` set): probes, text, ablations, and the claims' thresholds."""

    probe_length: int = 25  # random tokens per copy (Olsson et al.: 25)
    probe_batch: int = 16
    text_sequences: int = 8
    text_length: int = 256
    top_k: int = 4  # induction heads ablated together
    random_draws: int = 3  # random head sets of the same layers, the control
    batch: int = 4  # sequences per forward pass
    min_copy_gain: float = 1.0  # nats the second copy must be easier than the first for "learns repeated tokens in context"
    ablation_ratio: float = 2.0  # induction-head ablation must raise the second-copy loss this many times more than random heads
    probe_repeats: int = 4  # copies of the random tokens in the head-score probe (Olsson et al.: 4)
    patching_pairs: int = 2  # repeated random tokens vs the same with the first copy replaced, for activation patching

    def __post_init__(self) -> None:
        require_positive(self, "probe_length", "probe_batch", "text_sequences", "text_length", "top_k", "random_draws", "batch",
                         "probe_repeats", "patching_pairs")


@dataclass(frozen=True)
class InductionLLC:
    """The local learning coefficient along training (Hoogland et al. 2024; Wang et al. 2024's refined LLC per head):
    which models, at how many of their snapshots (log-spaced, as saved), on how many fixed training-mixture sequences,
    with which sampler; and the claims' limits (a step of the LLC curve counts when larger than ``sigma`` combined
    standard errors of the chains)."""

    models: tuple[str, ...] = ("attn1", "attn2")  # those of the study's models whose LLC curve is estimated
    snapshots: int = 10
    samples: int = 512
    sampler: SGLDSettings = field(default_factory=lambda: SGLDSettings(step_size=3e-4, localization=100.0, chains=2, burnin=50,
                                                                       draws=100, batch_size=32))
    head_model: str = "attn2"  # whose heads get a refined LLC, at its snapshots just before and after its phase-change window
    sigma: float = 2.0

    def __post_init__(self) -> None:
        require_positive(self, "snapshots", "samples", "sigma")
        for name in self.models:
            require(MODEL_NAME.match(name) is not None, "llc.models", f"{name!r} is not attn<L>, smeared<L> or mlp<L>")


@dataclass(frozen=True)
class InductionStudySettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    seeds: int = 3  # the seeds trained and analysed, seed .. seed + seeds - 1; a claim's verdict is judged over them
    model: str | None = None  # a pretrained model (`iclab models` name, HF folder or .gguf): analysed instead of training models
    pretrained: PretrainedProbe = field(default_factory=PretrainedProbe)
    thresholds: InductionThresholds = field(default_factory=InductionThresholds)
    models: tuple[str, ...] = ("attn1", "attn2", "attn3", "smeared1", "smeared2", "mlp2")
    recipe: InductionRecipe = field(default_factory=InductionRecipe)
    eval_sequences: int = 256
    probe_length: int = 25
    probe_repeats: int = 2
    probe_batch: int = 32
    loss_positions: int = 256
    induction_threshold: float = 0.3  # prefix-matching score above which a head counts as an induction head ...
    induction_copying_top1: float = 0.5  # ... if its direct OV path ranks the attended token first for more than this share
    min_icl_change: float = 0.2  # nats of ICL score a model must gain inside its fastest-change window for it to be a phase change
    window_level: float = WINDOW_LEVEL  # the window: rate of ICL change >= this x its peak (0.19: 90% of an ideal logistic inside)
    ablation_sequences: int = 256
    attribution_sequences: int = 4  # held-out stdlib text sequences whose per-token loss change is attributed
    llc: InductionLLC = field(default_factory=InductionLLC)

    def __post_init__(self) -> None:
        require(len(self.models) > 0, "models", "needs at least one model")
        for name in self.models:
            require(MODEL_NAME.match(name) is not None, "models", f"{name!r} is not attn<L>, smeared<L> or mlp<L> with 1 <= L <= 9")
        require_positive(self, "seeds", "eval_sequences", "probe_length", "probe_repeats", "probe_batch", "loss_positions", "ablation_sequences",
                         "attribution_sequences")
        require(0 < self.induction_threshold < 1, "induction_threshold", f"must lie in (0, 1), got {self.induction_threshold}")
        require(0 <= self.induction_copying_top1 < 1, "induction_copying_top1", f"must lie in [0, 1), got {self.induction_copying_top1}")
        need = 1 + self.probe_length * self.probe_repeats
        require(need <= self.recipe.n_ctx, "probe_length", f"1 + probe_length * probe_repeats = {need} must fit in recipe.n_ctx={self.recipe.n_ctx}")


PRESETS = {
    "quick": InductionStudySettings(),
    "paper": InductionStudySettings(
        preset="paper",
        models=("attn1", "attn2", "attn3", "attn4", "attn5", "attn6", "smeared1", "smeared2", "mlp1", "mlp2", "mlp3"),
        recipe=InductionRecipe(d_model=768, n_heads=12, n_ctx=8192, lr=1e-3, warmup_steps=1000, schedule="cosine", batch_size=32,
                      steps=10_000, snapshots=200, natural_share=0.9, repeat_share=0.0, span_max=512, n_spans=4),
        eval_sequences=1000,
        probe_length=25,
        probe_repeats=4,
        probe_batch=256,
        loss_positions=10_000,
        ablation_sequences=1000,
    ),
}



def model_shape(name: str) -> tuple[int, bool]:
    """'attn2' -> (2, False), 'smeared1' -> (1, True), 'mlp2' -> (2, False): (layers, smeared keys)."""
    kind, layers = MODEL_NAME.match(name).groups()
    return int(layers), kind == "smeared"


def has_mlps(name: str) -> bool:
    """'mlp<L>': attention and MLP blocks (Olsson et al.'s models with MLPs, correlational evidence); else attention-only."""
    return name.startswith("mlp")
