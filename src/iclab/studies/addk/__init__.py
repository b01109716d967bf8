"""Study addk: few-shot "add k" localized to a few heads, and their subspaces (Hu et al. 2025).

On iclab's own model trained here on few-shot add-k prompts (quick), or on any Hugging Face causal LM from a local
folder (``--model PATH``): clean few-shot accuracy (and, for pretrained models, a scan over prompt formats); below
``min_clean_accuracy`` every localisation claim is NOT APPLICABLE and nothing more runs. Otherwise: task-mean head
outputs; the head-set search (mask, selected / significant / main heads, necessity); per-head PCA, periodic fits and
the aggregation / extraction identity; self-correction; the projection causal test. The steps are in
:mod:`iclab.analysis.addk.pipeline`; claims in :mod:`.claims`; settings in :mod:`.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from iclab import footprint as F
from iclab.analysis import addk as A
from iclab.analysis.addk import pipeline as P
from iclab.analysis.addk.task_vectors import TaskVectorCurve, task_vector_curve
from iclab.errors import IclabError
from iclab.heads import HeadModel, from_run, load_model
from iclab.heads.placement import limit_bytes, spread_room
from iclab.models import ModelConfig
from iclab.plots.addk import plot_all
from iclab.results import Head
from iclab.studies.addk.claims import findings
from iclab.studies.addk.settings import PRESETS, AddKRecipe, AddKStudySettings, AddKThresholds
from iclab.studies.common import generator, seeded
from iclab.studies.runner import Context, Entry, Part, Study
from iclab.tasks.addk import PROMPT_FORMATS, prompt_text
from iclab.train import RunConfig, TrainConfig, train
from iclab.train.checkpoint import load_tensors, save_tensors

Ctx = Context[AddKStudySettings]


def run_config(cfg: AddKStudySettings) -> RunConfig:
    r = cfg.recipe
    model = ModelConfig(n_layers=r.n_layers, d_model=r.d_model, n_heads=r.n_heads, **cfg.task.model_io())
    train_cfg = TrainConfig.for_study(r.steps, r.batch_size, r.lr, r.warmup_steps, precision=r.precision)
    return RunConfig(task=seeded(cfg.task, cfg.seed), model=model, train=train_cfg, seed=cfg.seed)


@dataclass
class Subject:
    model: HeadModel
    name: str  # the pretrained model's spec, or "iclab:runs/addk"


def check_footprint(ctx: Ctx, folder: Path) -> None:
    """Print the memory and time the study will need on this device, and stop in one line, before the weights are
    read, when the largest pass cannot fit (:mod:`iclab.footprint`; prompt lengths from the model's own tokenizer)."""
    from transformers import AutoTokenizer

    cfg, device = ctx.settings, ctx.device
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        ctx.log("  footprint: not estimated (it reads a Hugging Face folder's config.json and safetensors headers)")
        return
    fmt, K = PROMPT_FORMATS[cfg.prompt_format], cfg.task.k_max
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    x, y = cfg.task.x_max, cfg.task.apply(cfg.task.x_max, K)
    few = len(tok(prompt_text([x] * (cfg.task.shots + 1), [y] * (cfg.task.shots + 1), fmt))["input_ids"]) + 1
    zero = len(tok(prompt_text([x], [y], fmt))["input_ids"]) + 1
    answer = len(tok(str(y), add_special_tokens=False)["input_ids"])
    passes = {"mask optimisation": F.estimate(folder, cfg.dtype, cfg.mask_batch, zero + answer, True, answer),
              "few-shot passes": F.estimate(folder, cfg.dtype, 64, few, False, 1, answer)}
    stage, largest = max(passes.items(), key=lambda kv: kv[1].total)
    if ctx.max_memory is not None:  # at most that much of the weights on the device, the rest offloaded
        largest = replace(largest, weights=min(largest.weights, limit_bytes(ctx.max_memory)))
    ctx.log(f"  footprint ({cfg.preset} preset, {cfg.dtype}): the largest pass ({stage}) needs {largest.describe()}")
    F.check_fits(largest, device, f"the addk study's {stage} on {folder.name}", free=spread_room(device))
    n_fit = len(cfg.task.train_tasks) * cfg.mask_per_task * cfg.mask_fit_share
    tokens = {"task means": K * cfg.mean_per_task * few, "mask optimisation": 3 * cfg.mask_epochs * n_fit * (zero + answer),
              "recovery scan, per head": (cfg.c_max + 1) * n_fit / 4 * (zero + answer),
              "accuracies": 4 * K * cfg.eval_per_task * (few + answer)}
    floor = F.floor_seconds(largest.parameters, tokens, F.matmul_rate(device, cfg.dtype))
    ctx.log("  time at this device's matrix-product rate (a floor): " + ", ".join(f"{k} {v:.0f} s" for k, v in floor.items()))


def get_model(ctx: Ctx) -> Subject:
    cfg = ctx.settings
    if cfg.model is not None:
        from iclab.pretrained import resolve

        ctx.log(f"  model: pretrained model {cfg.model}")
        folder = resolve(cfg.model, log=ctx.log)
        check_footprint(ctx, folder)
        return Subject(load_model(folder, ctx.device, cfg.dtype, log=ctx.log, max_memory=ctx.max_memory), str(cfg.model))
    if cfg.planted is not None:
        from iclab.analysis.addk.planted import planted_addk_model

        ctx.log(f"  model: the planted add-k model ({cfg.planted} code in task heads L1H0, L1H1; the known answer)")
        return Subject(planted_addk_model(cfg.task, cfg.planted, seed=cfg.seed, device=ctx.device), f"planted:{cfg.planted}")
    config = run_config(cfg)
    tvp = cfg.task.tvp_layer
    variant = "" if tvp is None else f" (TVP loss at layer {tvp}: a known-answer variant, its task vector trained in)"
    ctx.log(f"  model: training iclab decoder ({config.model.n_layers} layers, d_model {config.model.d_model}), {config.train.steps} steps{variant}")
    result = train(config, ctx.out / "runs" / "addk", ctx.device, progress=False, label="addk/model")
    return Subject(from_run(result.run.path, device=ctx.device), "iclab:runs/addk" + variant)


def prompts(ctx: Ctx, ks: list[int], per_task: int, shots: int, part: str) -> list[A.Prompt]:
    cfg = ctx.settings
    return A.make_prompts(ctx.models.model, cfg.task, ks, per_task, shots, generator(cfg.seed, part), PROMPT_FORMATS[cfg.prompt_format])


def few_shot(ctx: Ctx, part: str) -> list[A.Prompt]:
    """The few-shot prompts of the necessity check, the extraction and self-correction (half of ``eval_per_task``)."""
    cfg = ctx.settings
    return prompts(ctx, cfg.task.train_tasks, max(4, cfg.eval_per_task // 2), cfg.task.shots, part)


def corrupted(ctx: Ctx, clean: list[A.Prompt], which: int) -> list[A.Prompt]:
    """The same prompts with demonstration ``which``'s label off by ``corrupt_offset``."""
    cfg = ctx.settings
    return A.wrong_label_prompts(ctx.models.model, clean, which, cfg.corrupt_offset, cfg.task.number_range()[1],
                                 PROMPT_FORMATS[cfg.prompt_format])


def fv_layer(ctx: Ctx) -> int:
    cfg, n_layers = ctx.settings, ctx.models.model.n_layers
    layer = cfg.fv_layer if cfg.fv_layer is not None else max(1, round(n_layers / 3))
    if not 0 <= layer < n_layers:
        raise IclabError(f"fv_layer={layer} is outside [0, {n_layers - 1}] for this model (the FV goes after that layer's attention)")
    return layer


def task_means(ctx: Ctx) -> torch.Tensor:
    """[K, L, H, E] for k = 1..k_max, computed once in batches and cached in the study folder."""
    cfg, model = ctx.settings, ctx.models.model
    path = ctx.out / "parts" / "task_means.safetensors"
    key = f"{cfg.seed}/{cfg.mean_per_task}/{cfg.task}/{cfg.model}/{model.n_layers}x{model.n_heads}"
    if path.is_file():
        tensors, meta = load_tensors(path)
        if meta.get("key") == key:
            ctx.log("  task_means: cached")
            return tensors["z_mean"]
    ks = list(range(1, cfg.task.k_max + 1))
    z = A.task_mean_z(model, prompts(ctx, ks, cfg.mean_per_task, cfg.task.shots, "means"), ks)
    save_tensors(path, {"z_mean": z.contiguous()}, {"key": key})
    return z


def clean_scan(ctx: Ctx) -> P.CleanScan:
    """Clean few-shot accuracy per prompt format, number of shots and task k (answers greedy-decoded, several tokens each)."""
    cfg, model = ctx.settings, ctx.models.model
    return P.CleanScan({
        f"{name}/{shots}": P.format_accuracy(model, name, shots, A.make_prompts(
            model, cfg.task, cfg.scan_ks, cfg.scan_per_task, shots, generator(cfg.seed, f"scan/{shots}"), fmt), cfg.scan_ks)
        for name, fmt in PROMPT_FORMATS.items() for shots in cfg.scan_shots})


def clean_accuracy(ctx: Ctx) -> P.CleanAccuracy:
    cfg, model = ctx.settings, ctx.models.model
    train_p = prompts(ctx, cfg.task.train_tasks, cfg.eval_per_task, cfg.task.shots, "eval_train")
    held_p = prompts(ctx, list(cfg.task.held_out), cfg.eval_per_task, cfg.task.shots, "eval_held")
    return P.CleanAccuracy(float(A.correct(model, train_p).mean()), float(A.correct(model, held_p).mean()))


def task_vectors(ctx: Ctx) -> TaskVectorCurve:
    """Zero-shot accuracy with each task's mean few-shot final-token residual patched in, layer by layer (the property
    the quick subject's recipe is chosen by)."""
    cfg, n, shots = ctx.settings, ctx.settings.tv_per_task, ctx.settings.task.shots
    train_ks, held_ks = cfg.task.train_tasks, list(cfg.task.held_out)
    return task_vector_curve(ctx.models.model, prompts(ctx, train_ks, n, shots, "tv_few"), prompts(ctx, train_ks, n, 0, "tv_zero"),
                             prompts(ctx, held_ks, n, shots, "tv_few_held"), prompts(ctx, held_ks, n, 0, "tv_zero_held"),
                             train_ks, held_ks)


def localisation(ctx: Ctx) -> P.Localisation:
    cfg = ctx.settings
    zero = prompts(ctx, cfg.task.train_tasks, cfg.mask_per_task, 0, "zero_shot")
    return P.localise(ctx.models.model, ctx.results["task_means"], zero, few_shot(ctx, "main"), fv_layer(ctx), cfg.search, cfg.seed)


def subspaces(ctx: Ctx) -> P.Subspaces:
    few = few_shot(ctx, "extraction")
    return P.subspaces(ctx.models.model, ctx.results["task_means"], ctx.results["heads"], few, corrupted(ctx, few, 0), ctx.settings.seed)


def self_correction(ctx: Ctx) -> P.SelfCorrection:
    """Accuracy when the first demonstration's label is wrong by ``corrupt_offset``, vs clean, vs the last one wrong."""
    model, clean = ctx.models.model, few_shot(ctx, "correction")
    return P.SelfCorrection(float(A.correct(model, clean).mean()), float(A.correct(model, corrupted(ctx, clean, 0)).mean()),
                            float(A.correct(model, corrupted(ctx, clean, ctx.settings.task.shots - 1)).mean()))


def projection(ctx: Ctx) -> P.Projection:
    cfg = ctx.settings
    zero = prompts(ctx, cfg.task.train_tasks, cfg.eval_per_task, 0, "projection")
    return P.projection(ctx.models.model, ctx.results["task_means"], ctx.results["localisation"], ctx.results["heads"], zero, fv_layer(ctx))


def demo_patching(ctx: Ctx) -> P.DemoPatching:
    """Denoising patching of the residual stream at each layer and position: the prompt with its demonstrations
    labelled by another k, one site restored from the right prompt (which positions carry k, from which layer)."""
    cfg, model = ctx.settings, ctx.models.model
    few = prompts(ctx, cfg.task.train_tasks, cfg.patching_prompts, cfg.task.shots, "patching")
    return P.demo_patching(model, few, cfg.task.train_tasks, cfg.task.number_range()[1], PROMPT_FORMATS[cfg.prompt_format])


def _behaves(ctx: Ctx) -> bool:
    """Whether the model does the task well enough for its heads to mean anything."""
    return ctx.results["clean_accuracy"].train_tasks >= ctx.settings.min_clean_accuracy


def _curve_wanted(ctx: Ctx) -> bool:
    """The task-vector curve: for every model trained here (it is how a recipe is judged, a weak one included; a few
    seconds), for a pretrained model only when it does the task."""
    return ctx.settings.model is None or _behaves(ctx)


def _analysed_heads(ctx: Ctx) -> list[Head]:
    loc = ctx.results["localisation"]
    return (loc.main or loc.selected)[: ctx.settings.max_subspace_heads]


PARTS = [
    Part("model", lambda ctx: ctx.models.name, cached=False),
    Part("k", lambda ctx: list(range(1, ctx.settings.task.k_max + 1)), cached=False),
    Part("clean_scan", clean_scan, P.CleanScan, when=lambda ctx: ctx.settings.model is not None),
    Part("clean_accuracy", clean_accuracy, P.CleanAccuracy),
    Part("task_vectors", task_vectors, TaskVectorCurve, when=_curve_wanted),
    Part("task_means", task_means, cached=False, when=_behaves),  # cached by itself as a tensor file
    Part("localisation", localisation, P.Localisation, when=_behaves),
    Part("heads", _analysed_heads, cached=False, when=_behaves),
    Part("subspaces", subspaces, P.Subspaces, when=_behaves),
    Part("self_correction", self_correction, P.SelfCorrection, when=_behaves),
    Part("projection", projection, P.Projection, when=_behaves),
    Part("demo_patching", demo_patching, P.DemoPatching, when=_behaves),
]

NOTES = [
    "Function vectors are added to the residual stream after the injection layer's attention (its mid-residual), at the last "
    "prompt token only, as the authors' code does; the mask's NLL is summed over answer tokens and averaged over prompts.",
    "Mean ablation replaces a head's z at the final prompt token (and generated tokens) by its mean over all tasks' task means.",
    "Significant heads: exact McNemar test per selected head (FV with the selected set vs without that head) on the 20% held-out "
    "zero-shot prompts, Benjamini-Hochberg at q.",
    "Main heads: smallest prefix of the selected heads, by mask coefficient, whose few-shot accuracy with all other heads mean-ablated "
    "recovers main_fraction of the selected set's gain over ablating every head.",
    "Periodic fits: each PCA coordinate of the task means (k = 1..k_max) against each feature alone; the best R^2 per direction is in summary.json.",
]


def _refuse_unknown(cfg: AddKStudySettings) -> None:
    if cfg.model is not None:  # a wrong --model is refused before the folder is touched
        from iclab.pretrained import check_spec

        check_spec(cfg.model)


STUDY: Study[AddKStudySettings] = Study(
    "addk", PRESETS, parts=lambda cfg: PARTS, claims=findings, figures=plot_all, models=get_model,
    training=lambda cfg: [("addk", run_config(cfg))] if cfg.model is None and cfg.planted is None else [],
    notes=lambda cfg: NOTES, check=_refuse_unknown, title="Few-shot addition localized to a few heads", paper="Hu et al. 2025",
    minutes=5.8, extra_entries=(Entry("addk-smollm2", ("model=smollm2-135m", "eval_per_task=8", "scan_shots=[1,5]"),
                                     " (SmolLM2-135M, a pretrained LM)", minutes=1.7, pretrained=True),))
run = STUDY.run

__all__ = ["PRESETS", "STUDY", "run", "run_config", "AddKStudySettings", "AddKRecipe", "AddKThresholds"]
