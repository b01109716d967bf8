"""Configs validate with clear errors; task batches are pure functions of (seed, split, step)."""

import dataclasses
from dataclasses import replace

import pytest
import torch

from iclab.errors import ConfigError
from iclab.tasks import Curriculum, LinearRegression, LinRegConfig, derive_seed
from iclab.train import RunConfig, apply_overrides, default_config


def test_unknown_key_suggests_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"train\.stesp: unknown key \(did you mean 'steps'\?\)"):
        apply_overrides(default_config("linreg"), ["train.stesp=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.n_heads=5", "model.n_heads: must divide d_model=64"),
        ("train.steps=-1", "train.steps: must be at least 1"),
        ("train.lr=abc", "train.lr: got 'abc'"),
        ("model.positional=rope", "allowed: 'learned', 'shortformer', 'none'"),
        ("model.n_ctx=10", "model.n_ctx: the task needs at least 80 positions"),
        ("model.d_input=3", "model.d_input: the task 'linreg' needs 8"),
        ("task.sigma=-1", "task.sigma: must be >= 0"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(default_config("linreg"), [override])


@pytest.mark.parametrize("name", ["task", "model", "train"])
@pytest.mark.parametrize("value, kind", [("linreg", "a string"), ([1, 2], "a list"), (3, "a number"), (True, "true / false")])
def test_a_value_where_a_section_belongs_names_the_section_and_a_null_section_is_every_default(name, value, kind):
    data = {"task": {"name": "linreg"}, name: value}
    with pytest.raises(ConfigError, match=f"^{name}: is a section of settings, a mapping .* not {kind}; got"):
        RunConfig.from_dict(data)
    with pytest.raises(ConfigError, match=r"task\.d: got \[3\] \(list\); allowed: int"):  # a level deeper: the key
        RunConfig.from_dict({"task": {"name": "linreg", "d": [3]}})
    defaults = RunConfig.from_dict({"task": {"name": "linreg"}})
    if name != "task":
        assert RunConfig.from_dict({"task": {"name": "linreg"}, name: None, "seed": None}) == defaults


def test_model_fields_follow_the_task_and_configs_round_trip():
    cfg = apply_overrides(default_config("linreg"), ["task.d=5", "task.encoding=akyurek", "model.n_layers=3"])
    assert cfg.model.d_input == 6 and cfg.model.n_ctx == 80 and cfg.model.n_layers == 3
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


def test_batches_are_pure_functions_of_seed_split_and_step():
    task = LinearRegression(LinRegConfig(d=4, n_points=10))
    a, b = task.batch(7, 16, "train"), task.batch(7, 16, "train")
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, task.batch(8, 16, "train").inputs)
    assert not torch.equal(a.inputs, task.batch(7, 16, "eval").inputs)
    train_seeds = {derive_seed(1, "x", "train", s) for s in range(2000)}
    eval_seeds = {derive_seed(1, "x", "eval", s) for s in range(2000)}
    assert not train_seeds & eval_seeds


def test_linreg_labels_are_linear_in_the_inputs_and_the_encoding_interleaves():
    task = LinearRegression(LinRegConfig(d=3, n_points=5))
    batch = task.batch(0, 4, "train")
    xs, ws = batch.extras["xs"], batch.extras["ws"]
    torch.testing.assert_close(batch.targets, torch.einsum("bnd,bd->bn", xs, ws))
    assert batch.inputs.shape == (4, 10, 3)
    torch.testing.assert_close(batch.inputs[:, 0::2], xs)
    torch.testing.assert_close(batch.inputs[:, 1::2, 0], batch.targets)
    assert torch.all(batch.inputs[:, 1::2, 1:] == 0)
    ak = LinearRegression(LinRegConfig(d=3, n_points=5, encoding="akyurek")).batch(0, 4, "train")
    assert ak.inputs.shape == (4, 10, 4) and torch.all(ak.inputs[:, 0::2, 0] == 0)


def test_noise_and_task_streams_are_separate():
    clean = LinearRegression(LinRegConfig(d=4, n_points=8))
    noisy = LinearRegression(LinRegConfig(d=4, n_points=8, sigma=0.5))
    c, n = clean.batch(3, 512, "train"), noisy.batch(3, 512, "train")
    assert torch.equal(c.extras["xs"], n.extras["xs"]) and torch.equal(c.extras["ws"], n.extras["ws"])
    residual = n.targets - c.targets
    assert abs(float(residual.std()) - 0.5) < 0.03


def test_finite_task_pool_is_shared_by_splits_and_gaussian_eval_is_optional():
    task = LinearRegression(LinRegConfig(d=4, n_points=8, task_pool=3))
    pool = task.pool()
    ws = torch.cat([task.batch(s, 32, "train").extras["ws"] for s in range(3)])
    assert torch.unique(ws, dim=0).shape[0] == 3
    assert all(any(torch.equal(w, p) for p in pool) for w in task.batch(0, 8, "eval").extras["ws"])
    gauss = LinearRegression(LinRegConfig(d=4, n_points=8, task_pool=3, eval_tasks="gaussian"))
    assert not any(torch.equal(gauss.batch(0, 8, "eval").extras["ws"][0], p) for p in pool)


def test_curriculum_grows_dimension_and_length():
    cfg = LinRegConfig(d=8, n_points=20, curriculum=Curriculum(d_start=3, d_increment=1, points_start=5, points_increment=2, interval=10))
    task = LinearRegression(cfg)
    assert task.shape_at(0) == (3, 5) and task.shape_at(25) == (5, 9) and task.shape_at(10_000) == (8, 20)
    batch = task.batch(0, 4, "train")
    assert batch.inputs.shape == (4, 10, 8) and torch.all(batch.extras["xs"][..., 3:] == 0)
    assert task.batch(0, 4, "eval").inputs.shape == (4, 40, 8)


def test_a_studys_seed_moves_the_models_and_the_data_in_every_study():
    from iclab.studies import addk, linreg
    from iclab.analysis.linreg.task_diversity import TaskDiversitySettings, _config
    from iclab.tasks.base import seeded
    from iclab.studies.induction import PRESETS as IND

    for seed in (0, 3):
        lr = linreg.run_config(replace(linreg.PRESETS["quick"], seed=seed), 1, 10, 4, 8)
        ak = addk.run_config(replace(addk.PRESETS["quick"], seed=seed))
        br = _config(TaskDiversitySettings(), 4, seed)
        ind = IND["quick"].recipe.task(seed)
        assert lr.seed == ak.seed == br.seed == seed
        assert (lr.task.data_seed, lr.task.task_seed, lr.task.noise_seed) == (1 + seed, 2 + seed, 3 + seed)
        assert ak.task.data_seed == 1 + seed and br.task.task_seed == 2 + seed and ind.data_seed == 1 + seed
    assert seeded(linreg.PRESETS["quick"].recipe, 5) == linreg.PRESETS["quick"].recipe  # nothing to shift: unchanged
