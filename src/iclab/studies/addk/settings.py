"""The addk study's settings: the model trained here (quick) or a pretrained one, its training mix, the head-set
search, the subspace and self-correction tests, the pretrained models' accuracy scan, the thresholds its claims use,
and the presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from iclab.analysis.addk.pipeline import HeadSetSearch
from iclab.config import require, require_positive
from iclab.tasks.addk import PROMPT_FORMATS, AddKConfig
from iclab.train.config import Precision


@dataclass(frozen=True)
class AddKRecipe:
    """The decoder trained here (quick preset); see docs/addk.md for how it was chosen."""

    n_layers: int = 3
    d_model: int = 128
    n_heads: int = 4
    lr: float = 1e-3
    warmup_steps: int = 200
    batch_size: int = 64
    steps: int = 8000
    precision: Precision = "float32"  # train.precision: bfloat16 autocast for the training steps

    def __post_init__(self) -> None:
        require_positive(self, "n_layers", "d_model", "n_heads", "lr", "batch_size", "steps")


@dataclass(frozen=True)
class AddKThresholds:
    """The numbers the claims' verdicts use, stated before any run."""

    max_selected_share: float = 0.25  # "sparse": at most this share of all heads selected
    min_fv_gain: float = 0.2  # the selected heads' function vector must raise zero-shot accuracy by more than this
    min_necessity_drop: float = 0.2  # ablating only the main heads must cost at least this much few-shot accuracy ...
    necessity_ratio: float = 2.0  # ... and this many times the drop from random head sets of the same size
    min_label_share: float = 0.9  # share of a head's extracted signal from label tokens (paper: 0.96-0.99)
    max_successive_correlation: float = -0.1  # self-correction: successive signal deviations correlate below this
    correction_tolerance: float = 0.05  # an early wrong demonstration may hurt at most this much more than a late one
    # the subspace verdict (Hu et al. section 4): a head's task means need at most this many PCs for 95% of their
    # variance, and the joint fit on its top 6 PCs reconstructs every one of the six periodic targets (centred) to this R^2
    max_subspace_dims: int = 6
    min_periodic_r2: float = 0.8

    def __post_init__(self) -> None:
        for name in ("max_selected_share", "min_label_share"):
            require(0 < getattr(self, name) <= 1, name, f"must be a share in (0, 1], got {getattr(self, name)}")
        require_positive(self, "min_fv_gain", "min_necessity_drop", "necessity_ratio")
        require(-1 <= self.max_successive_correlation <= 1, "max_successive_correlation",
                f"must lie in [-1, 1], got {self.max_successive_correlation}")
        require(self.correction_tolerance >= 0, "correction_tolerance", f"must be >= 0, got {self.correction_tolerance}")
        require(self.max_subspace_dims >= 1, "max_subspace_dims", f"must be at least 1, got {self.max_subspace_dims}")
        require(self.min_periodic_r2 <= 1, "min_periodic_r2", f"must be at most 1, got {self.min_periodic_r2}")


@dataclass(frozen=True)
class AddKStudySettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    seeds: int = 3  # the seeds trained and analysed, seed .. seed + seeds - 1; a claim's verdict is judged over them
    model: str | None = None  # a pretrained model (`iclab models` name, HF folder or .gguf); None: train iclab's own model
    # instead of a trained model, the hand-set one whose mechanism is known (iclab.analysis.addk.planted): its task heads
    # carry k in Hu et al.'s six periodic features ("periodic") or in a random code ("random", the negative control)
    planted: Literal["periodic", "random"] | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    recipe: AddKRecipe = field(default_factory=AddKRecipe)
    # The quick model's training mix (docs/addk.md): 1-5 shots, one label in ten another task's answer. Chosen among the
    # recipes tried by the rule stated before any was run: the accuracy targets (>= 0.95 / 0.9 held out), then the
    # strongest task vector by layer, then the cheapest. No recipe tried without the TVP loss has a task vector.
    task: AddKConfig = field(default_factory=lambda: AddKConfig(min_shots=1, label_noise=0.1))
    eval_per_task: int = 20  # few-shot prompts per task for accuracies
    mean_per_task: int = 100  # prompts per task for the task means z_k
    tv_per_task: int = 20  # few-shot and zero-shot prompts per task for the task-vector curve (Hendel et al.'s patching)
    mask_per_task: int = 40  # zero-shot prompts per training task for the mask optimisation ...
    mask_fit_share: float = 0.8  # ... of which this share fits the mask and the rest tests the head sets
    fv_layer: int | None = None  # injection layer; None: a third of the depth
    lam: float = 0.05
    mask_lr: float = 0.01
    mask_epochs: int = 50
    mask_batch: int = 128
    q: float = 0.05  # Benjamini-Hochberg false-discovery rate
    main_fraction: float = 0.25  # Hu et al.'s unified rule: main heads recover at least this share of the best head's gain,
    main_clean_min: float = 0.25  # ... when few-shot accuracy reaches this (their clean_min; min_clean_accuracy gates the study)
    c_max: int = 20  # the recovery scan's coefficients c = 0 .. c_max (the authors' grid)
    random_sets: int = 3  # random head sets of the main set's size ablated in the necessity check
    max_subspace_heads: int = 3
    corrupt_offset: int = 7  # added to the first demonstration's label in the self-correction test
    patching_prompts: int = 4  # few-shot prompts per training task patched against the same inputs labelled by another k
    prompt_format: str = "arrow"  # how prompts are written (PROMPT_FORMATS); iclab's own models know only "arrow"
    scan_shots: tuple[int, ...] = (1, 3, 5)  # pretrained models: clean accuracy per prompt format x shots x k first
    scan_tasks: tuple[int, ...] = (1, 3, 7, 10, 25)
    scan_per_task: int = 8
    min_clean_accuracy: float = 0.5  # below this few-shot accuracy there is no task behaviour to localise
    thresholds: AddKThresholds = field(default_factory=AddKThresholds)

    def __post_init__(self) -> None:
        require(self.prompt_format in PROMPT_FORMATS, "prompt_format", f"must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        require(self.model is None or self.planted is None, "planted", "is a subject of its own: give --model or planted, not both")
        require(self.planted is None or (self.task.op == "add" and not self.task.digits), "planted",
                "the planted model does add-k with one token per number (task.op = add, task.digits = false)")
        require(self.task.tvp_layer is None or self.task.tvp_layer < self.recipe.n_layers, "task.tvp_layer",
                f"must be a layer of the model trained here, [0, recipe.n_layers - 1 = {self.recipe.n_layers - 1}]")
        require(self.model is not None or self.prompt_format == "arrow", "prompt_format",
                "iclab's own add-k model is trained on the arrow format only; other formats need --model")
        require(0 <= self.min_clean_accuracy <= 1, "min_clean_accuracy", f"must lie in [0, 1], got {self.min_clean_accuracy}")
        require(all(s >= 1 for s in self.scan_shots), "scan_shots", "every number of shots must be at least 1")
        require(bool(self.scan_ks), "scan_tasks", f"needs at least one k within [1, task.k_max={self.task.k_max}]")

        require_positive(self, "seeds", "eval_per_task", "mean_per_task", "tv_per_task", "mask_per_task", "patching_prompts")
        require(self.task.shots >= 2, "task.shots", "the analyses need at least 2 demonstrations")
        self.search  # the head-set search's own checks (lam, q, main_fraction, ...) before anything is written

    @property
    def scan_ks(self) -> list[int]:
        """The scanned tasks that exist at this k_max."""
        return [k for k in self.scan_tasks if 1 <= k <= self.task.k_max]

    @property
    def search(self) -> HeadSetSearch:
        """The head-set search's settings, from the flat fields (``--set lam=...`` etc.)."""
        return HeadSetSearch(lam=self.lam, lr=self.mask_lr, epochs=self.mask_epochs, batch=self.mask_batch, fit_share=self.mask_fit_share,
                             c_max=self.c_max, q=self.q, main_fraction=self.main_fraction, main_clean_min=self.main_clean_min,
                             random_sets=self.random_sets)


PRESETS = {
    # the subject's training under bfloat16 autocast where the device multiplies bfloat16 natively: 1.8x faster on
    # such CPUs with every seed's verdict unchanged, while emulated bfloat16 is 7x slower (docs/scaling.md, "bfloat16
    # training"); --set recipe.precision=float32 trains in float32 everywhere
    "quick": AddKStudySettings(recipe=AddKRecipe(precision="auto")),
    "paper": AddKStudySettings(
        preset="paper",
        dtype="bfloat16",
        eval_per_task=100,
        mean_per_task=100,
        mask_per_task=100,
        fv_layer=10,  # middle of layer 10 of Llama-3-8B-Instruct's 32
        lam=0.05,
        mask_lr=0.01,
        mask_epochs=50,
        mask_batch=128,
        max_subspace_heads=3,
    ),
}
