"""Hu et al.'s whole pipeline, as the addk study runs it, on the hand-set model whose answer is known
(:mod:`iclab.analysis.addk.planted`): heads L1H0 and L1H1 each carry half of a code of k read off the demonstrations'
labels. With the periodic code the study must find those two heads and no other, their function vector must restore
zero-shot addition, and their task means must come out six-dimensional and periodic as planted; with a random code
(the negative control) the same heads carry k but the subspace verdict must be NOT REPRODUCED."""

import numpy as np
import pytest
import torch

from iclab.analysis import addk as A
from iclab.analysis.addk.planted import periodic_code, planted_addk_model
from iclab.results import Head
from iclab.studies import addk
from iclab.studies.addk.settings import PRESETS
from iclab.tasks.addk import PROMPT_FORMATS

# the head-set search as the quick preset runs it (mask_per_task, mask_epochs, lam, ...); fewer prompts elsewhere
SMALL = ["seeds=1", "eval_per_task=8", "mean_per_task=16", "patching_prompts=1", "random_sets=2"]
PLANTED = [str(Head(1, 0)), str(Head(1, 1))]


def verdict(summary, start: str) -> str:
    return next(line for line in summary.findings if start in line).split(":")[0]


@pytest.fixture(scope="module")
def periodic(tmp_path_factory):
    return addk.run("quick", tmp_path_factory.mktemp("planted"), [*SMALL, "planted=periodic"], torch.device("cpu"), log=lambda _: None)


def test_the_planted_model_adds_k_from_its_demonstrations_and_not_zero_shot():
    task = PRESETS["quick"].task
    model = planted_addk_model(task)
    g, fmt = torch.Generator().manual_seed(0), PROMPT_FORMATS["arrow"]
    assert A.correct(model, A.make_prompts(model, task, task.train_tasks, 4, 5, g, fmt)).mean() == 1.0
    assert A.correct(model, A.make_prompts(model, task, list(task.held_out), 4, 5, g, fmt)).mean() == 1.0
    assert A.correct(model, A.make_prompts(model, task, task.train_tasks, 4, 0, g, fmt)).mean() < 0.1


def test_the_pipeline_finds_the_planted_heads_and_their_function_vector(periodic):
    n = periodic.numbers
    assert n["heads"]["selected"] == PLANTED and n["heads"]["main"] == PLANTED and n["heads"]["significant"] == PLANTED
    assert n["accuracy"]["selected_fv"] == 1.0 and n["accuracy"]["few_shot_main_ablated"] < 0.2
    assert verdict(periodic, "a sparse set of heads carries the task") == "REPRODUCED"
    assert verdict(periodic, "the main heads take their signal from the demonstrations' label tokens") == "REPRODUCED"


def test_the_planted_subspace_comes_out_six_dimensional_and_periodic(periodic, tmp_path):
    subspace = next(c for c in periodic.claims if c.statement.startswith("the main heads' task means each span"))
    assert subspace.verdict.value == "REPRODUCED" and "head L1H0:" in subspace.measured and "head L1H1:" in subspace.measured
    fit = A.mod_vector_fit(periodic_code(np.arange(1, 31)) @ np.random.default_rng(0).normal(size=(6, 20)), np.arange(1, 31))
    assert min(fit.r2_centred.values()) > 0.999 and abs(fit.theta["mod50"] - 1.0) < 0.02  # the planted phase
    assert fit.r2["mod50"] < 0.5  # the authors' R^2 keeps the target's mean: a planted feature it cannot score as one


def test_a_random_code_is_localised_but_not_called_periodic(tmp_path):
    summary = addk.run("quick", tmp_path, [*SMALL, "planted=random"], torch.device("cpu"), log=lambda _: None)
    assert summary.numbers["heads"]["selected"] == PLANTED
    assert verdict(summary, "the main heads' task means each span about six dimensions") == "NOT REPRODUCED"


def test_task_vectors_need_the_task_at_the_final_token():
    """Hendel et al.'s patching on the plant: k reaches the final token only through layer 1's attention, so no
    layer's input holds a task vector (the curve stays at the zero-shot floor); the final residual of a few-shot
    prompt with the same k and query does carry the answer, so replacing a zero-shot prompt's with it must give it."""
    from iclab.analysis.addk.task_vectors import final_residuals, patched_accuracy, task_vector_curve

    task = PRESETS["quick"].task
    model = planted_addk_model(task)
    g, tr, held = torch.Generator().manual_seed(1), task.train_tasks, list(task.held_out)
    curve = task_vector_curve(model, A.make_prompts(model, task, tr, 8, 5, g), A.make_prompts(model, task, tr, 8, 0, g),
                              A.make_prompts(model, task, held, 8, 5, g), A.make_prompts(model, task, held, 8, 0, g), tr, held)
    assert curve.few_shot == 1.0 and curve.zero_shot < 0.1
    assert curve.layers == [0, 1] and max(curve.train) < 0.1 and max(curve.held_out) < 0.15
    few = A.make_prompts(model, task, tr, 1, 5, g)  # one prompt per task: its "mean" is itself
    zero = [A.encode_prompt(model, p.k, p.xs[-1:], p.ys[-1:]) for p in few]  # the same query, no demonstrations
    final = model.n_layers  # the residual the unembedding reads
    assert patched_accuracy(model, final_residuals(model, few, tr, layers=[final])[:, 0], tr, zero, final) == 1.0
    assert patched_accuracy(model, final_residuals(model, zero, tr, layers=[final])[:, 0], tr, zero, final) < 0.1
