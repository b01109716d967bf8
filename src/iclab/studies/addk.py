"""Study addk: few-shot "add k" localized to a few heads, and their subspaces (Hu et al. 2025).

On iclab's own model trained here on few-shot add-k prompts (quick), or on any
Hugging Face causal LM from a local folder (``--model PATH``): clean few-shot
accuracy; task-mean head outputs; the sparse head mask that makes a function
vector work in a zero-shot prompt; the selected / significant / main head sets;
per-head PCA and periodic fits of the task means; the aggregation / extraction
identity on real forward passes, label-token shares and per-demonstration
signals; self-correction. Every analysis is a cached part under ``out/parts/``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from iclab.analysis import addk as A
from iclab.claims import Claim, Verdict, measured
from iclab.config import require, require_positive
from iclab.errors import IclabError
from iclab.heads import HeadModel, from_run, load_model
from iclab.models import ModelConfig
from iclab.studies.common import Parts, finish, generator, seeded, settings_for
from iclab.tasks.addk import PROMPT_FORMATS, AddKConfig
from iclab.train import RunConfig, TrainConfig, train
from iclab.train.checkpoint import load_tensors, save_tensors


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


@dataclass(frozen=True)
class AddKStudySettings:
    preset: Literal["quick", "paper"] = "quick"
    seed: int = 0
    model: str | None = None  # a pretrained model (`iclab models` name, HF folder or .gguf); None: train iclab's own model
    dtype: Literal["float32", "bfloat16"] = "float32"
    recipe: AddKRecipe = field(default_factory=AddKRecipe)
    # The quick model's training mix (docs/addk.md): 1-5 shots, 0-4 extra "#" before the first demonstration, one
    # label in ten another task's answer. Without the offset and the noise it reads k off the first demonstration.
    task: AddKConfig = field(default_factory=lambda: AddKConfig(min_shots=1, max_offset=4, label_noise=0.1))
    eval_per_task: int = 20  # few-shot prompts per task for accuracies
    mean_per_task: int = 100  # prompts per task for the task means z_k
    mask_per_task: int = 40  # zero-shot prompts per training task for the mask optimisation (80/20 split)
    fv_layer: int | None = None  # injection layer; None: a third of the depth
    lam: float = 0.05
    mask_lr: float = 0.01
    mask_epochs: int = 50
    mask_batch: int = 128
    q: float = 0.05  # Benjamini-Hochberg false-discovery rate
    main_fraction: float = 0.25  # Hu et al.'s unified rule: main heads recover at least this share of the best head's gain
    c_max: int = 20  # the recovery scan's coefficients c = 0 .. c_max (the authors' grid)
    random_sets: int = 3  # random head sets of the main set's size ablated in the necessity check
    max_subspace_heads: int = 3
    corrupt_offset: int = 7  # added to the first demonstration's label in the self-correction test
    prompt_format: str = "arrow"  # how prompts are written (PROMPT_FORMATS); iclab's own models know only "arrow"
    scan_shots: tuple[int, ...] = (1, 3, 5)  # pretrained models: clean accuracy per prompt format x shots x k first
    scan_tasks: tuple[int, ...] = (1, 3, 7, 10, 25)
    scan_per_task: int = 8
    min_clean_accuracy: float = 0.5  # below this few-shot accuracy there is no task behaviour to localise
    thresholds: AddKThresholds = field(default_factory=AddKThresholds)

    def __post_init__(self) -> None:
        require(self.prompt_format in PROMPT_FORMATS, "prompt_format", f"must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        require(self.model is not None or self.prompt_format == "arrow", "prompt_format",
                "iclab's own add-k model is trained on the arrow format only; other formats need --model")
        require(0 <= self.min_clean_accuracy <= 1, "min_clean_accuracy", f"must lie in [0, 1], got {self.min_clean_accuracy}")
        require(all(s >= 1 for s in self.scan_shots), "scan_shots", "every number of shots must be at least 1")
        require(bool(self.scan_ks), "scan_tasks", f"needs at least one k within [1, task.k_max={self.task.k_max}]")

    @property
    def scan_ks(self) -> list[int]:
        """The scanned tasks that exist at this k_max."""
        return [k for k in self.scan_tasks if 1 <= k <= self.task.k_max]
        require_positive(self, "eval_per_task", "mean_per_task", "mask_per_task", "lam", "mask_lr", "mask_epochs", "mask_batch")
        require(0 < self.q < 1, "q", f"must lie in (0, 1), got {self.q}")
        require(0 < self.main_fraction <= 1, "main_fraction", f"must lie in (0, 1], got {self.main_fraction}")
        require(self.task.shots >= 2, "task.shots", "the analyses need at least 2 demonstrations")


PRESETS = {
    "quick": AddKStudySettings(),
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


# ----------------------------------------------------------------------------- the model


def run_config(cfg: AddKStudySettings) -> RunConfig:
    r = cfg.recipe
    model = ModelConfig(n_layers=r.n_layers, d_model=r.d_model, n_heads=r.n_heads, **cfg.task.model_io())
    train_cfg = TrainConfig(steps=r.steps, batch_size=r.batch_size, lr=r.lr, warmup_steps=min(r.warmup_steps, r.steps // 5),
                            checkpoint_every=max(100, r.steps // 5), log_every=max(10, r.steps // 100))
    return RunConfig(task=seeded(cfg.task, cfg.seed), model=model, train=train_cfg, seed=cfg.seed)


def get_model(cfg: AddKStudySettings, out: Path, device: torch.device, log: Callable[[str], None]) -> tuple[HeadModel, str]:
    if cfg.model is not None:
        log(f"  model: pretrained model {cfg.model}")
        return load_model(cfg.model, device, cfg.dtype, log=log), str(cfg.model)
    config = run_config(cfg)
    log(f"  model: training iclab decoder ({config.model.n_layers} layers, d_model {config.model.d_model}), {config.train.steps} steps")
    result = train(config, out / "runs" / "addk", device, progress=False, label="addk/model")
    return from_run(result.run.path, device=device), "iclab:runs/addk"


# ----------------------------------------------------------------------------- prompts


def prompts(model: HeadModel, cfg: AddKStudySettings, ks: list[int], per_task: int, shots: int, part: str) -> list[A.Prompt]:
    return A.make_prompts(model, cfg.task, ks, per_task, shots, generator(cfg.seed, part), PROMPT_FORMATS[cfg.prompt_format])


def clean_scan(model: HeadModel, cfg: AddKStudySettings) -> dict[str, Any]:
    """Clean few-shot accuracy per prompt format, number of shots and task k (answers greedy-decoded, several tokens each)."""
    out: dict[str, Any] = {}
    for name, fmt in PROMPT_FORMATS.items():
        for shots in cfg.scan_shots:
            ps = A.make_prompts(model, cfg.task, cfg.scan_ks, cfg.scan_per_task, shots, generator(cfg.seed, f"scan/{shots}"), fmt)
            ok = A.correct(model, ps)
            per_k = {str(k): float(ok[[p.k == k for p in ps]].mean()) for k in cfg.scan_ks}
            out[f"{name}/{shots}"] = {"format": name, "shots": shots, "accuracy": float(ok.mean()), "per_k": per_k,
                                      "answer_tokens": float(np.mean([len(p.answer) for p in ps]))}
    return out


def fv_layer(cfg: AddKStudySettings, model: HeadModel) -> int:
    layer = cfg.fv_layer if cfg.fv_layer is not None else max(1, round(model.n_layers / 3))
    if not 0 <= layer < model.n_layers:
        raise IclabError(f"fv_layer={layer} is outside [0, {model.n_layers - 1}] for this model (the FV goes after that layer's attention)")
    return layer


def task_means(model: HeadModel, cfg: AddKStudySettings, out: Path, log) -> torch.Tensor:
    """[K, L, H, E] for k = 1..k_max, computed once in batches and cached in the run directory."""
    path = out / "parts" / "task_means.safetensors"
    key = f"{cfg.seed}/{cfg.mean_per_task}/{cfg.task}/{cfg.model}/{model.n_layers}x{model.n_heads}"
    if path.is_file():
        tensors, meta = load_tensors(path)
        if meta.get("key") == key:
            log("  task_means: cached")
            return tensors["z_mean"]
    ks = list(range(1, cfg.task.k_max + 1))
    z = A.task_mean_z(model, prompts(model, cfg, ks, cfg.mean_per_task, cfg.task.shots, "means"), ks)
    save_tensors(path, {"z_mean": z.contiguous()}, {"key": key})
    return z


# ----------------------------------------------------------------------------- parts


def clean_accuracy(model: HeadModel, cfg: AddKStudySettings) -> dict[str, Any]:
    train_p = prompts(model, cfg, cfg.task.train_tasks, cfg.eval_per_task, cfg.task.shots, "eval_train")
    held_p = prompts(model, cfg, list(cfg.task.held_out), cfg.eval_per_task, cfg.task.shots, "eval_held")
    return {"train_tasks": float(A.correct(model, train_p).mean()), "held_out_tasks": float(A.correct(model, held_p).mean())}


def localisation(model: HeadModel, cfg: AddKStudySettings, z_mean: torch.Tensor) -> dict[str, Any]:
    """Mask optimisation, the three head sets and their accuracies."""
    ks_all = list(range(1, cfg.task.k_max + 1))
    L, H = model.n_layers, model.n_heads
    layer = fv_layer(cfg, model)
    results = A.task_results(model, z_mean)  # [K, L, H, D]
    zero = prompts(model, cfg, cfg.task.train_tasks, cfg.mask_per_task, 0, "zero_shot")
    order = list(range(len(zero)))
    random.Random(cfg.seed).shuffle(order)
    n_fit = int(0.8 * len(zero))
    fit, test = [zero[i] for i in order[:n_fit]], [zero[i] for i in order[n_fit:]]
    mf = A.optimise_mask(model, results, ks_all, fit, layer, generator(cfg.seed, "mask"), cfg.lam, cfg.mask_lr, cfg.mask_epochs, cfg.mask_batch)
    selected = A.largest_gap_set(mf.mask)

    def fv_correct(heads: list[tuple[int, int]], use_mask: bool = False) -> np.ndarray:
        m = mf.mask * A.heads_mask(heads, L, H) if use_mask else A.heads_mask(heads, L, H)
        return A.correct(model, test, A.fv_intervention(results, m, layer, ks_all))

    with_selected = fv_correct(selected, use_mask=True)
    # significant heads: Hu et al.'s single-head sufficiency (recovery scan, paired McNemar, Bonferroni over c, BH)
    c_grid = list(range(0, cfg.c_max + 1))
    scan = A.recovery_scan(model, results, selected, ks_all, test, layer, c_grid)
    sig = A.paired_significance(scan["outcomes"], c_grid, cfg.q)
    significant = [h for h in selected if sig[f"{h[0]}:{h[1]}"]["significant"]]
    # main heads: their unified rule on the recovery curves, then necessity by ablating only those heads in few-shot prompts
    few = prompts(model, cfg, cfg.task.train_tasks, max(4, cfg.eval_per_task // 2), cfg.task.shots, "main")
    clean_few = float(A.correct(model, few).mean())
    rule = A.unified_main_heads(scan["curves"], clean_few, beta=cfg.main_fraction)
    main = [tuple(h) for h in rule["main"]]

    def ablated_accuracy(heads: list[tuple[int, int]]) -> float:
        return float(A.correct(model, few, A.ablate_only(z_mean, heads, L, H)).mean())

    pool = [(layer_, h) for layer_ in range(L) for h in range(H) if (layer_, h) not in main]
    rng = random.Random(cfg.seed)
    random_sets = [rng.sample(pool, len(main)) for _ in range(cfg.random_sets)] if main and len(pool) >= len(main) else []
    no_mask = A.correct(model, test).mean()
    return {
        "layer": layer,
        "mask": mf.mask.tolist(),
        "mask_losses": mf.losses,
        "selected": [list(h) for h in selected],
        "significant": [list(h) for h in significant],
        "significance": sig,
        "recovery_curves": scan["curves"],
        "main": [list(h) for h in main],
        "main_rule": {k: rule[k] for k in ("gains", "best_gain", "applies")},
        "accuracy": {
            "zero_shot": float(no_mask),
            "selected_fv": float(with_selected.mean()),
            "significant_fv": float(fv_correct(significant).mean()) if significant else None,
            "main_fv": float(fv_correct(main).mean()) if main else None,
            "few_shot_clean": clean_few,
            "few_shot_main_ablated": ablated_accuracy(main) if main else None,
            "few_shot_random_ablated": [ablated_accuracy(r) for r in random_sets],
        },
    }


def subspaces(model: HeadModel, cfg: AddKStudySettings, z_mean: torch.Tensor, heads: list[list[int]]) -> dict[str, Any]:
    results = A.task_results(model, z_mean).numpy()  # [K, L, H, D]
    k = np.arange(1, cfg.task.k_max + 1)
    few = prompts(model, cfg, cfg.task.train_tasks, max(4, cfg.eval_per_task // 2), cfg.task.shots, "extraction")
    ks = np.array([p.k for p in few])
    out: dict[str, Any] = {}
    for layer, h in heads:
        pca = A.head_pca(results[:, layer, h])
        r = max(2, pca.n_95)
        fits = {f"PC{i + 1}": A.periodic_fit(k, pca.coords[:, i]) for i in range(min(6, pca.coords.shape[1]))}
        joint = A.mod_vector_fit(results[:, layer, h], k)
        ex = A.extraction(model, layer, h, pca.components[:r], few)
        means = results[ks - 1, layer, h]  # [N, D]: h_k of each prompt's task
        wrong = A.extraction(model, layer, h, pca.components[:r], corrupted(model, cfg, few, 0))
        out[f"{layer}.{h}"] = {
            "explained": pca.explained.tolist(),
            "pcs_to_95": pca.n_95,
            "coords": pca.coords[:, :3].tolist(),
            "periodic": fits,
            "mod_fit": {"r2": joint.r2, "theta": joint.theta},
            "identity_relative_error": ex.identity_error,
            "attention_label_share": ex.attention_label_share,
            "signal_label_share": ex.signal_label_share,
            "position_attention": ex.position_attention.tolist(),
            "position_signal": ex.position_signal.tolist(),
            "successive_signal_correlation": A.successive_correlation(ex.signals, ks),
            "signal_norm_by_demo": np.linalg.norm(ex.signals, axis=-1).mean(0).tolist(),
            "signal_routing": A.signal_routing(ex, means, pca.components[:6], seed=cfg.seed),
            "wrong_first_demo": A.wrong_demonstration(ex, wrong, means, 0),
        }
    return out


def projection(model: HeadModel, cfg: AddKStudySettings, z_mean: torch.Tensor, loc: dict[str, Any], heads: list[list[int]]) -> dict[str, Any]:
    """Hu et al.'s projection causal test: each head's task-mean result at its best recovery coefficient c*, kept
    whole, projected onto its parity / unit-digit / magnitude mod vectors, or onto the rest of its six-dimensional
    periodic span, injected zero-shot with every other selected head at its mean; accuracy of each arm."""
    results = A.task_results(model, z_mean)  # [K, L, H, D]
    ks_all = list(range(1, cfg.task.k_max + 1))
    index = {k: i for i, k in enumerate(ks_all)}
    layer = fv_layer(cfg, model)
    zero = prompts(model, cfg, cfg.task.train_tasks, cfg.eval_per_task, 0, "projection")
    selected = [tuple(h) for h in loc["selected"]]
    k = np.arange(1, cfg.task.k_max + 1)
    out: dict[str, Any] = {}
    for lh in heads:
        head = tuple(lh)
        c = float(loc.get("significance", {}).get(f"{head[0]}:{head[1]}", {}).get("c_star", 1))
        fit = A.mod_vector_fit(results[:, head[0], head[1]].numpy(), k)
        others = [h for h in selected if h != head]
        arms = {"whole": None}
        arms.update({f"{variant}_{sub}": A.projection_basis(fit.mod_vectors, sub, variant)
                     for variant in ("onto", "out") for sub in A.PROJECTION_SUBSPACES})
        row: dict[str, float] = {}
        for name, basis in arms.items():
            fv = A.projected_fv(results, head, others, basis, c)

            def make(chunk, T, fv=fv):
                return A.fv_injection(layer, fv[[index[p.k] for p in chunk]], T)

            row[name] = float(A.correct(model, zero, make).mean())
        out[f"{head[0]}.{head[1]}"] = {"c_star": c, "accuracy": row}
    return out


def corrupted(model: HeadModel, cfg: AddKStudySettings, clean: list[A.Prompt], which: int) -> list[A.Prompt]:
    """The same prompts with demonstration ``which``'s label off by ``corrupt_offset``."""
    return A.wrong_label_prompts(model, clean, which, cfg.corrupt_offset, cfg.task.number_range()[1],
                                 PROMPT_FORMATS[cfg.prompt_format])


def self_correction(model: HeadModel, cfg: AddKStudySettings) -> dict[str, Any]:
    """Accuracy when the first demonstration's label is wrong by ``corrupt_offset``, vs clean, vs the last one wrong."""
    clean = prompts(model, cfg, cfg.task.train_tasks, max(4, cfg.eval_per_task // 2), cfg.task.shots, "correction")
    return {
        "clean": float(A.correct(model, clean).mean()),
        "first_wrong": float(A.correct(model, corrupted(model, cfg, clean, 0)).mean()),
        "last_wrong": float(A.correct(model, corrupted(model, cfg, clean, cfg.task.shots - 1)).mean()),
    }


# ----------------------------------------------------------------------------- findings


HU = "Hu et al. 2025"


def _ci(m: dict[str, Any], fmt: str = ".2f") -> str:
    return f"{m['mean']:{fmt}} [{m['ci'][0]:{fmt}}, {m['ci'][1]:{fmt}}]"


def findings(cfg: AddKStudySettings, res: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    clean, loc, sub, sc = res["clean"], res["localisation"], res["subspaces"], res["self_correction"]
    acc, t = loc["accuracy"], cfg.thresholds
    claims = [measured("clean few-shot exact-match accuracy",
                       f"{cfg.task.shots}-shot: {clean['train_tasks']:.2f} on training tasks, {clean['held_out_tasks']:.2f} on held-out "
                       f"tasks k = {list(cfg.task.held_out)}", HU)]
    n_heads = len(loc["mask"]) * len(loc["mask"][0])
    sparse = len(loc["selected"]) <= t.max_selected_share * n_heads and acc["selected_fv"] > acc["zero_shot"] + t.min_fv_gain
    claims.append(Claim(
        "a sparse set of heads carries the task: their function vector restores it zero-shot", Verdict.of(sparse),
        f"{len(loc['selected'])} of {n_heads} heads selected; their function vector lifts zero-shot accuracy from "
        f"{acc['zero_shot']:.2f} to {acc['selected_fv']:.2f} (layer {loc['layer']})", f"{HU}, section 3",
        {"thresholds.max_selected_share": t.max_selected_share, "thresholds.min_fv_gain": t.min_fv_gain}))
    best_gain = loc["main_rule"]["best_gain"]
    claims.append(measured("nested head sets: selected, significant, main",
                           f"selected {len(loc['selected'])} (largest gap of the mask), significant {len(loc['significant'])} (single-head "
                           f"sufficiency: recovery scan c = 0..{cfg.c_max}, one-sided McNemar against c = 0, Bonferroni over c, "
                           f"Benjamini-Hochberg q = {cfg.q}), main {len(loc['main'])} {loc['main']} (peak recovery gain >= "
                           f"{cfg.main_fraction} of the best head's, {best_gain:+.2f}); paper 33 / 13 / 3 on Llama-3-8B", HU))
    if loc["main"] and acc["few_shot_main_ablated"] is not None:
        drop = acc["few_shot_clean"] - acc["few_shot_main_ablated"]
        rand = [acc["few_shot_clean"] - r for r in acc["few_shot_random_ablated"]]
        rand_mean = float(np.mean(rand)) if rand else float("nan")
        ok = drop >= t.min_necessity_drop and (not rand or drop >= t.necessity_ratio * max(rand_mean, 0.0))
        claims.append(Claim(
            "the main heads are necessary: mean-ablating only them at the final token breaks few-shot addition", Verdict.of(ok),
            f"{cfg.task.shots}-shot accuracy {acc['few_shot_clean']:.2f} clean, {acc['few_shot_main_ablated']:.2f} with the "
            f"{len(loc['main'])} main heads ablated (drop {drop:.2f}); random sets of the same size: drop "
            + ", ".join(f"{r:.2f}" for r in rand), f"{HU}, section 3.2 (five-shot necessity)",
            {"thresholds.min_necessity_drop": t.min_necessity_drop, "thresholds.necessity_ratio": t.necessity_ratio}))
    else:
        claims.append(Claim("the main heads are necessary: mean-ablating only them at the final token breaks few-shot addition",
                            Verdict.NOT_APPLICABLE, "no main head: no scanned head recovers the task", f"{HU}, section 3.2"))
    for head, s in sub.items():
        best = {pc: max(f.items(), key=lambda kv: kv[1]["r2"]) for pc, f in s["periodic"].items()}
        joint = s.get("mod_fit", {}).get("r2", {})
        claims.append(measured(f"head {head}: dimensions and periodic structure of the task means",
                               f"{s['pcs_to_95']} PCs for 95% of task-mean variance (paper: 6); the authors' joint fit of the six "
                               "periodic targets on the top 6 PCs, R^2 " + ", ".join(f"{n} {v:.2f}" for n, v in joint.items())
                               + "; iclab's one-PC-one-feature view, best per PC: "
                               + ", ".join(f"{pc} {name} {v['r2']:.2f}" for pc, (name, v) in best.items()), f"{HU}, section 4"))
        claims.append(Claim(
            f"head {head} takes its signal from the demonstrations' label tokens (paper: 96-99%)",
            Verdict.of(s["signal_label_share"] > t.min_label_share),
            f"{s['signal_label_share']:.0%} of its extracted signal and {s['attention_label_share']:.0%} of its attention from label "
            f"tokens; aggregation/extraction identity holds to relative error {s['identity_relative_error']:.1e}",
            f"{HU}, section 5", {"thresholds.min_label_share": t.min_label_share}))
        sr = s.get("signal_routing")
        if sr:
            claims.append(measured(
                f"head {head}: the authors' section-5 readings of its per-demonstration signals s_i = O V z at the labels",
                f"label peaking ratio {sr['peaking_ratio']:.1f}x; signal cosine with h_k in its 6-D subspace "
                f"{_ci(sr['signal_cosine'])}, in the full stream {_ci(sr['ondemo_cosine'])}; routing Pearson(alpha_i, cos(s_i, h_k)) "
                f"{_ci(sr['routing'])} vs shuffled {_ci(sr['routing_null'])}; weighting gain {_ci(sr['weighting_gain'], '+.3f')} vs "
                f"shuffled {_ci(sr['weighting_gain_null'], '+.3f')}", f"{HU}, section 5 (utils/signals.py)"))
            w = s["wrong_first_demo"]
            claims.append(measured(
                f"head {head}: a wrong first demonstration (label + {cfg.corrupt_offset}) read through the extraction identity",
                f"its signal's cosine with h_k {w['signal_cosine_clean']:.2f} clean -> {w['signal_cosine_wrong']:.2f} wrong; its share "
                f"of the label attention {w['attention_share_clean']:.2f} -> {w['attention_share_wrong']:.2f}; the head's output at "
                f"the final token, cosine with h_k {w['output_cosine_clean']:.2f} -> {w['output_cosine_wrong']:.2f}",
                f"{HU}, section 5 (self-correction)"))
        corr = s["successive_signal_correlation"]
        ok = corr < t.max_successive_correlation and sc["first_wrong"] >= sc["last_wrong"] - t.correction_tolerance
        claims.append(Claim(
            "self-correction: successive demonstrations' signal deviations are negatively correlated and an early wrong "
            "demonstration hurts no more than a late one", Verdict.of(ok),
            f"head {head}: r = {corr:+.2f}; accuracy {sc['first_wrong']:.2f} with the first wrong vs {sc['last_wrong']:.2f} with the last",
            f"{HU}, section 5", {"thresholds.max_successive_correlation": t.max_successive_correlation,
                                 "thresholds.correction_tolerance": t.correction_tolerance}))
    for head, pr in res.get("projection", {}).items():
        acc_p = pr["accuracy"]
        claims.append(measured(
            f"head {head}: projection causal test (zero-shot accuracy of its task-mean result at c* = {pr['c_star']:g}, whole or "
            "projected on its mod-vector subspaces)", ", ".join(f"{arm} {v:.2f}" for arm, v in acc_p.items()),
            f"{HU}, appendix F (run_projection_causal)"))
    claims.append(measured(f"one wrong demonstration (label + {cfg.corrupt_offset}; iclab's own test: self-correction predicts the "
                           "early error hurts less)", f"accuracy {sc['clean']:.2f} clean, {sc['first_wrong']:.2f} with the first wrong, "
                           f"{sc['last_wrong']:.2f} with the last wrong", "iclab"))
    numbers = {
        "model": res["model"],
        "clean_accuracy": clean["train_tasks"],
        "clean_accuracy_held_out": clean["held_out_tasks"],
        "heads": {"selected": loc["selected"], "significant": loc["significant"], "main": loc["main"]},
        "accuracy": {"selected_fv": acc["selected_fv"], "few_shot_clean": acc["few_shot_clean"],
                     "few_shot_main_ablated": acc["few_shot_main_ablated"]},
        "pcs_to_95": {h: s["pcs_to_95"] for h, s in sub.items()},
        "periodic_r2": {h: {pc: max(v["r2"] for v in f.values()) for pc, f in s["periodic"].items()} for h, s in sub.items()},
        "label_token_signal_share": {h: s["signal_label_share"] for h, s in sub.items()},
    }
    return claims, numbers


def scan_findings(cfg: AddKStudySettings, scan: dict[str, Any]) -> list[Claim]:
    """The clean accuracy scan over prompt formats and shots, as a MEASURED claim."""
    best = max(scan.values(), key=lambda r: r["accuracy"])
    table = "; ".join(f"{r['format']} {r['shots']}-shot {r['accuracy']:.2f}" for r in scan.values())
    main = scan.get(f"{cfg.prompt_format}/{max(cfg.scan_shots)}")
    per_k = ", ".join(f"k={k}: {a:.2f}" for k, a in main["per_k"].items()) if main else "-"
    return [measured(f"clean accuracy by prompt format and shots (tasks k = {cfg.scan_ks}, {cfg.scan_per_task} prompts each, "
                     f"answers of {best['answer_tokens']:.1f} tokens on average, greedy with the key/value cache)",
                     f"{table}. Best: {best['format']} {best['shots']}-shot {best['accuracy']:.2f}; by k ({cfg.prompt_format}, "
                     f"{max(cfg.scan_shots)}-shot): {per_k}", f"{HU}; formats from the authors' code (Todd et al.'s prefixes)")]


def not_applicable(cfg: AddKStudySettings, clean: dict[str, Any], name: str) -> list[Claim]:
    """Every localisation claim marked NOT APPLICABLE: below ``min_clean_accuracy`` there is no behaviour to localise."""
    why = (f"{name} solves {cfg.task.shots}-shot add-k in the {cfg.prompt_format} format only {clean['train_tasks']:.2f} of the "
           "time; head sets found on a task the model does not do would mean nothing")
    claims = ("a sparse set of heads carries the task (function vector from a head mask)",
              "with every other head ablated, a few main heads keep few-shot accuracy",
              "the main heads' task means span a ~6-dimensional subspace with base-10 periodic directions",
              "the heads take their signal from the demonstrations' label tokens",
              "self-correction: later demonstrations suppress an early wrong signal")
    return [Claim(claim, Verdict.NOT_APPLICABLE, why, HU, {"min_clean_accuracy": cfg.min_clean_accuracy}) for claim in claims]


def run(preset: str, out: Path, overrides: list[str], device: torch.device, log: Callable[[str], None] = print) -> dict[str, Any]:
    cfg = settings_for(PRESETS, preset, overrides, "addk")
    out = Path(out)
    if cfg.model is not None:  # a wrong --model is refused before the folder is touched
        from iclab.pretrained import check_spec

        check_spec(cfg.model)
    parts = Parts("addk", out, cfg, log)
    model, name = get_model(cfg, out, device, log)
    scan = parts.get("clean_scan", lambda: clean_scan(model, cfg)) if cfg.model is not None else None
    clean = parts.get("clean_accuracy", lambda: clean_accuracy(model, cfg))
    if clean["train_tasks"] < cfg.min_clean_accuracy:
        claims = [measured("clean few-shot exact-match accuracy", f"{cfg.task.shots}-shot, {cfg.prompt_format} format: "
                           f"{clean['train_tasks']:.2f} on training tasks, {clean['held_out_tasks']:.2f} on held-out tasks", HU)]
        claims += (scan_findings(cfg, scan) if scan else []) + not_applicable(cfg, clean, name)
        numbers = {"model": name, "clean_accuracy": clean["train_tasks"], "clean_accuracy_held_out": clean["held_out_tasks"],
                   "clean_scan": scan, "localised": False}
        from iclab.plots.addk import clean_scan_figure

        figures = [clean_scan_figure(scan, out / "figures")] if scan else []
        return finish("addk", cfg.preset, out, numbers, claims, figures, parts, [])
    z_mean = task_means(model, cfg, out, log)
    loc = parts.get("localisation", lambda: localisation(model, cfg, z_mean))
    heads = loc["main"] if loc["main"] else loc["selected"]
    heads = heads[: cfg.max_subspace_heads]
    sub = parts.get("subspaces", lambda: subspaces(model, cfg, z_mean, heads))
    sc = parts.get("self_correction", lambda: self_correction(model, cfg))
    proj = parts.get("projection", lambda: projection(model, cfg, z_mean, loc, heads))
    res = {"model": name, "clean": clean, "localisation": loc, "subspaces": sub, "self_correction": sc, "projection": proj,
           "k": list(range(1, cfg.task.k_max + 1))}
    claims, numbers = findings(cfg, res)
    if scan:
        claims += scan_findings(cfg, scan)
        numbers["clean_scan"] = scan
    from iclab.plots.addk import clean_scan_figure, plot_all

    figures = plot_all(res, cfg, out / "figures") + ([clean_scan_figure(scan, out / "figures")] if scan else [])
    notes = [
        "Function vectors are added to the residual stream after the injection layer's attention (its mid-residual), at the last "
        "prompt token only, as the authors' code does; the mask's NLL is summed over answer tokens and averaged over prompts.",
        "Mean ablation replaces a head's z at the final prompt token (and generated tokens) by its mean over all tasks' task means.",
        "Significant heads: exact McNemar test per selected head (FV with the selected set vs without that head) on the 20% held-out "
        "zero-shot prompts, Benjamini-Hochberg at q.",
        "Main heads: smallest prefix of the selected heads, by mask coefficient, whose few-shot accuracy with all other heads mean-ablated "
        "recovers main_fraction of the selected set's gain over ablating every head.",
        "Periodic fits: each PCA coordinate of the task means (k = 1..k_max) against each feature alone; the best R^2 per direction is in summary.json.",
    ]
    return finish("addk", cfg.preset, out, numbers, claims, figures, parts, notes)
