"""The one study runner on a toy study: parts keyed by what they depend on, earlier parts' keys, skipped and derived parts,
typed claims in the summary, refusals before the folder is touched."""

import json
from dataclasses import dataclass, field, replace

import pytest
import torch

from iclab.claims import Claim, Verdict, recipe
from iclab.errors import IclabError, RunDirError
from iclab.results import Head, Result, SchemaError, decode, encode
from iclab.studies.common import Summary
from iclab.studies.runner import Part, Study


@dataclass(frozen=True)
class Thresholds:
    least: float = 5.0


@dataclass(frozen=True)
class Toy:
    preset: str = "quick"
    a: int = 2
    b: int = 3
    gate: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class Number(Result):
    value: int


def toy_study(calls: list[str], check=None) -> Study:
    def part(name, value):
        def compute(ctx):
            calls.append(name)
            return value(ctx)
        return compute

    parts = [
        Part("square", part("square", lambda ctx: Number(ctx.settings.a ** 2)), Number, depends=lambda s: s.a),
        Part("plus_b", part("plus_b", lambda ctx: Number(ctx.results["square"].value + ctx.settings.b)), Number,
             depends=lambda s: s.b, needs=("square",)),
        Part("double", part("double", lambda ctx: 2 * ctx.results["plus_b"].value), cached=False),
        Part("gated", part("gated", lambda ctx: Number(1)), Number, when=lambda ctx: ctx.settings.gate),
    ]

    def claims(s, res):
        value = res["double"]
        return [Claim("double is large", Verdict.of(value > s.thresholds.least), f"{value}", "toy",
                      {"thresholds.least": s.thresholds.least}, why=recipe("a toy"))], {"double": value, "gated": "gated" in res}

    return Study("toy", {"quick": Toy()}, parts=lambda s: parts, claims=claims, figures=lambda res, s, folder: [],
                 models=lambda ctx: calls.append("models"), check=check)


def test_parts_recompute_only_when_what_they_read_changes(tmp_path):
    calls: list[str] = []
    study = toy_study(calls)
    summary = study.run("quick", tmp_path, [], torch.device("cpu"), log=lambda s: None)
    assert summary.numbers["double"] == 14 and summary.numbers["gated"] and summary.claims[0].verdict is Verdict.REPRODUCED
    assert calls == ["models", "square", "plus_b", "double", "gated"]
    calls.clear()
    summary = study.run("quick", tmp_path, ["b=4"], torch.device("cpu"), log=lambda s: None)
    # square reads only a: kept; plus_b reads b; gated is keyed by every setting but the thresholds
    assert calls == ["models", "plus_b", "double", "gated"] and summary.numbers["double"] == 16
    calls.clear()
    summary = study.run("quick", tmp_path, ["b=4", "thresholds.least=100"], torch.device("cpu"), log=lambda s: None)
    assert calls == ["models", "double"]  # a threshold re-judges without recomputing
    assert summary.claims[0].verdict is Verdict.NOT_REPRODUCED and summary.claims[0].thresholds == {"thresholds.least": 100.0}
    calls.clear()
    study.run("quick", tmp_path, ["a=3", "b=4"], torch.device("cpu"), log=lambda s: None)
    assert calls == ["models", "square", "plus_b", "double", "gated"]  # plus_b reads square: its key follows square's


def test_a_part_whose_condition_fails_is_skipped(tmp_path):
    calls: list[str] = []
    summary = toy_study(calls).run("quick", tmp_path, ["gate=false"], torch.device("cpu"), log=lambda s: None)
    assert "gated" not in calls and summary.numbers["gated"] is False and not (tmp_path / "parts" / "gated.json").exists()
    assert not (tmp_path / "parts" / "double.json").exists()  # derived, never written


def test_bad_settings_and_a_failed_check_leave_no_folder(tmp_path):
    def refuse(settings):
        raise IclabError("--model nowhere: no such model")

    with pytest.raises(IclabError, match="a: got .x."):
        toy_study([]).run("quick", tmp_path / "a", ["a=x"], torch.device("cpu"), log=lambda s: None)
    with pytest.raises(IclabError, match="no such model"):
        toy_study([], check=refuse).run("quick", tmp_path / "b", [], torch.device("cpu"), log=lambda s: None)
    with pytest.raises(IclabError, match="preset"):
        toy_study([]).run("paper", tmp_path / "c", [], torch.device("cpu"), log=lambda s: None)
    assert not any((tmp_path / n).exists() for n in "abc")


@dataclass(frozen=True)
class Fit(Result):
    """A toy typed result: a head, a float per k, an optional note."""

    SCHEMA = 1
    head: Head
    r2: dict[int, float]
    note: str | None = None


def typed_study(calls: list[str], result_type=Fit) -> Study:
    def compute(ctx):
        calls.append("fit")
        return result_type(Head(1, ctx.settings.a), {1: 0.5, 2: 0.25})

    def claims(s, res):
        fit = res["fit"]
        assert isinstance(fit, result_type) and fit.head == Head(1, s.a)  # the cached value is the typed one
        return [Claim(f"head {fit.head} fits", Verdict.of(fit.r2[1] > 0.4), f"R^2 {fit.r2[1]}", why=recipe("a toy"))], {"head": fit.head}

    return Study("toy", {"quick": Toy()}, parts=lambda s: [Part("fit", compute, result=result_type)], claims=claims,
                 figures=lambda res, s, folder: [])


def test_a_typed_part_is_read_back_as_its_type_and_a_new_schema_recomputes_it(tmp_path):
    calls: list[str] = []
    first = typed_study(calls).run("quick", tmp_path, [], torch.device("cpu"), log=lambda s: None)
    second = typed_study(calls).run("quick", tmp_path, [], torch.device("cpu"), log=lambda s: None)
    assert calls == ["fit"] and first == second and first.numbers["head"] == "L1H2"
    saved = json.loads((tmp_path / "parts" / "fit.json").read_text())
    assert saved["schema"] == Fit.schema() and saved["result"]["head"] == "L1H2"

    @dataclass(frozen=True)
    class Fit2(Fit):  # the same type with its schema bumped: the cache of schema 1 is recomputed, never adapted
        SCHEMA = 2

    Fit2.__qualname__ = Fit.__qualname__
    typed_study(calls, Fit2).run("quick", tmp_path, [], torch.device("cpu"), log=lambda s: None)
    assert calls == ["fit", "fit"]
    assert typed_study(calls).identity(Toy()) != typed_study(calls, Fit2).identity(Toy())


def test_a_part_returning_another_type_than_declared_is_a_bug(tmp_path):
    study = Study("toy", {"quick": Toy()}, parts=lambda s: [Part("fit", lambda ctx: {"r2": 1}, result=Fit)],
                  claims=lambda s, res: ([], {}), figures=lambda res, s, folder: [])
    with pytest.raises(TypeError, match="returned dict, not its declared Fit"):
        study.run("quick", tmp_path, [], torch.device("cpu"), log=lambda s: None)


def test_a_summary_of_an_older_format_asks_for_a_re_run(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"study": "toy", "iclab_version": "0.5.0", "findings": []}))
    with pytest.raises(RunDirError, match=r"written by iclab 0.5.0 in an older format; re-run"):
        Summary.load(tmp_path / "summary.json")


def test_heads_have_one_text_form():
    assert str(Head(3, 1)) == "L3H1" and Head.parse("L3H1") == Head(3, 1) and Head.of([3, 1]) == Head(3, 1)
    layer, head = Head(2, 0)
    assert (layer, head) == (2, 0) and Head(2, 0) == (2, 0) and sorted([Head(1, 2), Head(0, 3)]) == [Head(0, 3), Head(1, 2)]
    for bad in ("3:1", "L3", "l3h1"):
        with pytest.raises(IclabError, match="expected L<layer>H<head>"):
            Head.parse(bad)
    assert decode(dict[Head, list[float]], encode({Head(0, 1): [1.0]})) == {Head(0, 1): [1.0]}
    with pytest.raises(SchemaError):
        decode(Fit, {"head": "L0H1", "r2": {}, "extra": 1})


def test_a_cached_part_must_declare_its_result_type():
    with pytest.raises(TypeError, match="part 'loose' is cached: declare its result type"):
        Part("loose", lambda ctx: {"r2": 1})
    assert Part("derived", lambda ctx: 1, cached=False).schema == "derived"


@dataclass(frozen=True)
class Seeded:
    preset: str = "quick"
    seed: int = 0
    seeds: int = 1
    fail_at: int = -1  # a seed whose part fails (an interruption)


def seeded_study(calls: list[tuple[int, str]]) -> Study:
    """value = 10 * (seed + 1): the claim "value < 15" holds at seed 0 only."""
    def compute(ctx):
        calls.append((ctx.settings.seed, "value"))
        if ctx.settings.seed == ctx.settings.fail_at:
            raise KeyboardInterrupt
        return Number(10 * (ctx.settings.seed + 1))

    def claims(s, res):
        v = res["value"].value
        return ([Claim("value is small", Verdict.of(v < 15), f"{v}", why=recipe("a toy"), values={"value": v}),
                 Claim("value is positive", Verdict.of(v > 0), f"{v}", why=recipe("a toy"))], {"value": v})

    return Study("seeded", {"quick": Seeded()}, parts=lambda s: [Part("value", compute, Number, depends=lambda s: s.seed)],
                 claims=claims, figures=lambda res, s, folder: [])


def test_a_study_at_several_seeds_runs_each_as_a_lone_run_and_judges_over_them(tmp_path):
    calls: list[tuple[int, str]] = []
    study = seeded_study(calls)
    with pytest.raises(KeyboardInterrupt):  # stopped during seed 1: seed 0's run is kept, finished
        study.run("quick", tmp_path / "s", ["seeds=3", "fail_at=1"], torch.device("cpu"), log=lambda s: None)
    assert (tmp_path / "s" / "seeds" / "0" / "summary.json").is_file() and not (tmp_path / "s" / "summary.json").exists()
    calls.clear()
    summary = study.run("quick", tmp_path / "s", ["seeds=3"], torch.device("cpu"), log=lambda s: None)
    assert calls == [(1, "value"), (2, "value")]  # seed 0 was finished: not recomputed
    small, positive = summary.claims
    assert small.verdict is Verdict.INCONCLUSIVE and positive.verdict is Verdict.REPRODUCED
    assert [(a.seed, a.verdict) for a in small.per_seed] == [(0, Verdict.REPRODUCED), (1, Verdict.NOT_REPRODUCED),
                                                             (2, Verdict.NOT_REPRODUCED)]
    assert small.values == {"value": 20.0} and summary.numbers["seeds"] == [0, 1, 2]
    for seed in (1, 2):  # each seed's folder is what a lone run at that seed writes
        lone = study.run("quick", tmp_path / f"lone{seed}", [f"seed={seed}"], torch.device("cpu"), log=lambda s: None)
        there = Summary.load(tmp_path / "s" / "seeds" / str(seed) / "summary.json")
        assert there.claims == lone.claims and there.numbers == lone.numbers and there.identity == lone.identity
    assert Summary.load(tmp_path / "s" / "summary.json") == summary
    assert not (tmp_path / "s" / "parts").exists()  # the parts are each seed's
    calls.clear()
    again = study.run("quick", tmp_path / "s", ["seeds=3"], torch.device("cpu"), log=lambda s: None)
    assert calls == [] and again.claims == summary.claims  # every seed finished: nothing recomputed
    calls.clear()
    shifted = study.run("quick", tmp_path / "t", ["seeds=2", "seed=5"], torch.device("cpu"), log=lambda s: None)
    assert calls == [(5, "value"), (6, "value")] and shifted.numbers["seeds"] == [5, 6]


def test_a_run_over_seeds_that_finished_nothing_leaves_no_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        seeded_study([]).run("quick", tmp_path / "s", ["seeds=2", "fail_at=0"], torch.device("cpu"), log=lambda s: None)
    assert not (tmp_path / "s").exists()


def trained_study(precision: str = "float32") -> Study:
    """A study whose models step trains one small linreg run per seed (``training`` declares it), at ``precision``."""
    from iclab.tasks.base import seeded
    from iclab.train import apply_overrides, default_config, train

    def config(s):
        c = apply_overrides(default_config("linreg"), ["model.n_layers=1", "model.d_model=16", "train.batch_size=8",
                                                       "task.d=2", "task.n_points=5", "train.steps=12",
                                                       f"train.precision={precision}"])
        return replace(c, task=seeded(c.task, s.seed), seed=s.seed)

    def models(ctx):
        return train(config(ctx.settings), ctx.out / "runs" / "m", ctx.device, progress=False)

    def compute(ctx):
        return Number(float(ctx.models.summary["final_loss"]))

    def claims(s, res):
        return [Claim("loss is finite", Verdict.of(res["loss"].value < 1e9), "", why=recipe("a toy"))], {}

    return Study("trained", {"quick": Seeded()}, parts=lambda s: [Part("loss", compute, Number, depends=lambda s: s.seed)],
                 claims=claims, figures=lambda res, s, folder: [], models=models, training=lambda s: [("m", config(s))])


def test_seeds_trained_together_are_each_seeds_runs_and_the_study_reads_them(tmp_path):
    from iclab.train.rundir import RunDir

    study = trained_study()
    settings = study.settings("quick", ["seeds=2"])
    summary = study.run_settings(settings, tmp_path / "s", torch.device("cpu"), log=lambda s: None, together=True)
    assert summary.claims[0].verdict is Verdict.REPRODUCED
    for seed in (0, 1):
        run = RunDir(tmp_path / "s" / "seeds" / str(seed) / "runs" / "m").read_summary()
        assert run["trained_with_seeds"] == [0, 1]
    apart = study.run_settings(settings, tmp_path / "a", torch.device("cpu"), log=lambda s: None)
    assert "trained_with_seeds" not in RunDir(tmp_path / "a" / "seeds" / "0" / "runs" / "m").read_summary()
    assert apart.claims[0].verdict is Verdict.REPRODUCED


def test_a_study_trained_under_bfloat16_autocast_says_so_in_its_summary(tmp_path):
    from iclab.device import fast_bf16
    from iclab.train.rundir import RunDir

    bf16 = trained_study("bfloat16").run("quick", tmp_path / "b", [], torch.device("cpu"), log=lambda s: None)
    assert RunDir(tmp_path / "b" / "runs" / "m").read_config().train.precision == "bfloat16"
    assert any("bfloat16 autocast" in note and "m;" in note for note in bf16.notes)
    fp32 = trained_study().run("quick", tmp_path / "f", [], torch.device("cpu"), log=lambda s: None)
    assert not any("bfloat16" in note for note in fp32.notes)
    auto = trained_study("auto")
    assert auto.precision_notes(auto.settings("quick"), "cpu") == ([bf16.notes[-1]] if fast_bf16("cpu") else [])
