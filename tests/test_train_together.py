"""Seeds trained together (one batched model, one optimiser step) equal the seeds trained alone up to float
rounding; a run trained together resumes bitwise; what cannot share a step trains alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iclab.models import Transformer
from iclab.models.config import ModelConfig
from iclab.models.stacked import StackedTransformer
from iclab.tasks import make_task
from iclab.tasks.base import seeded
from iclab.train import apply_overrides, default_config, train
from iclab.train.checkpoint import load_tensors
from iclab.train.together import can_train_together, train_seeds

SEEDS = (0, 1, 2)


def at_seeds(config, seeds=SEEDS):
    return [replace(config, task=seeded(config.task, s), seed=s) for s in seeds]


def small(task: str, steps: int = 30, extra=()):
    sets = {"linreg": ["model.n_layers=2", "model.d_model=32", "train.batch_size=16", "task.d=4", "task.n_points=9"],
            "addk": ["model.n_layers=2", "model.d_model=32", "train.batch_size=16", "task.min_shots=1", "task.label_noise=0.1"],
            "induction": ["model.n_layers=2", "model.d_model=32", "model.attn_only=true", "model.positional=shortformer",
                          "model.smeared_keys=true", "train.batch_size=8", "task.n_ctx=32", "model.n_ctx=32", "task.span_max=4", "task.n_spans=2"]}[task]
    return apply_overrides(default_config(task), [*sets, f"train.steps={steps}", "train.checkpoint_every=10",
                                                  "train.eval_every=10", "train.snapshots=3", "train.log_every=5", *extra])


def final(run) -> dict[str, torch.Tensor]:
    return load_tensors(run.final_model)[0]


def close(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("attn.b_K"):  # its gradient is 0 exactly (softmax ignores it): its value is AdamW-scaled rounding
            continue
        assert torch.linalg.vector_norm(a[k] - b[k]) <= rtol * torch.linalg.vector_norm(b[k]) + 1e-6, k


@pytest.mark.parametrize("kw", [
    dict(),
    dict(positional="shortformer", attn_only=True, smeared_keys=True),
    dict(positional="none", n_heads=2, d_model=64),
    dict(input="continuous", d_input=5, init="torch", normalization="none"),
])
def test_the_stacked_model_computes_each_seeds_lone_model_and_its_gradient(kw):
    cfg = ModelConfig(**{"n_layers": 2, "d_model": 32, "n_heads": 4, **kw})
    models = [Transformer(cfg, torch.Generator().manual_seed(s)) for s in SEEDS]
    stacked = StackedTransformer(models)
    for T in (10, 40, 90):  # the narrow, plain and fused attention paths
        x = torch.randint(0, cfg.d_vocab, (3, 4, T)) if cfg.input == "tokens" else torch.randn(3, 4, T, cfg.d_input)
        out = stacked(x)
        for s, m in enumerate(models):
            torch.testing.assert_close(out[s], m(x[s]), rtol=1e-5, atol=1e-5)
    out.square().mean(dim=(1, 2, 3)).sum().backward()
    for s, m in enumerate(models):
        m(x[s]).square().mean().backward()
        lone = dict(m.named_parameters())
        for name, p in stacked.named_stacked():
            if name.endswith("attn.b_K"):
                continue
            torch.testing.assert_close(p.grad[s], lone[name].grad, rtol=1e-4, atol=1e-7)
    assert stacked.seed_state(1).keys() == models[1].state_dict().keys()


@pytest.mark.parametrize("task", ["linreg", "addk", "induction"])
def test_seeds_trained_together_equal_lone_runs_up_to_rounding(tmp_path, task):
    configs = at_seeds(small(task))
    if task == "addk":  # the seeds' batches differ in length at some steps: padding on the right is exercised
        tasks = [make_task(c.task) for c in configs]
        assert any(len({t.batch(i, 16, "train").inputs.shape[1] for t in tasks}) > 1 for i in range(30))
    together = train_seeds(configs, [tmp_path / f"t{s}" for s in SEEDS])
    for s, config in zip(SEEDS, configs):
        lone = train(config, tmp_path / f"l{s}", progress=False)
        close(final(together[s].run), final(lone.run), rtol=2e-3)
        assert together[s].summary["trained_with_seeds"] == list(SEEDS)
        assert together[s].summary["n_params"] == lone.summary["n_params"]
        rows, lone_rows = together[s].run.read_metrics(), lone.run.read_metrics()
        assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in lone_rows]
        for r, q in zip(rows, lone_rows):
            if r["split"] == "train":
                assert r["loss"] == pytest.approx(q["loss"], rel=1e-3)
        assert together[s].run.snapshot_steps() == lone.run.snapshot_steps()
    seed1 = final(together[1].run)
    assert any(not torch.allclose(seed1[k], final(together[0].run)[k]) for k in seed1)  # each seed its own model


def test_seeds_trained_together_under_bfloat16_autocast_equal_lone_bfloat16_runs(tmp_path):
    # train.precision=bfloat16 in both paths: the stacked step runs under the same autocast as the lone one (add-k:
    # padded batches too); bfloat16 products round the batched and the lone sums differently, hence the wider band.
    configs = at_seeds(small("addk", extra=["train.precision=bfloat16"]))
    together = train_seeds(configs, [tmp_path / f"t{s}" for s in SEEDS])
    for s, config in zip(SEEDS, configs):
        lone = train(config, tmp_path / f"l{s}", progress=False)
        close(final(together[s].run), final(lone.run), rtol=2e-2)
        for r, q in zip(together[s].run.read_metrics(), lone.run.read_metrics()):
            if r["split"] == "train":
                assert r["loss"] == pytest.approx(q["loss"], rel=1e-3)
    fp32 = train(at_seeds(small("addk"))[0], tmp_path / "fp32", progress=False)  # the autocast did change the steps
    assert any(not torch.allclose(a, b, rtol=1e-4) for a, b in zip(final(fp32.run).values(), final(together[0].run).values()))


def test_a_run_trained_together_resumes_bitwise(tmp_path, monkeypatch):
    configs = at_seeds(small("addk", steps=30))
    full = train_seeds(configs, [tmp_path / f"full{s}" for s in SEEDS])
    from iclab.train import together

    calls = {"n": 0}
    original = together.save_resume_tensors

    def stop_at_step_20(run, tensors, step, config, elapsed):
        original(run, tensors, step, config, elapsed)
        calls["n"] += 1
        if calls["n"] == 2 * len(SEEDS):  # every seed's checkpoint at step 20 written
            raise KeyboardInterrupt

    monkeypatch.setattr(together, "save_resume_tensors", stop_at_step_20)
    outs = [tmp_path / f"part{s}" for s in SEEDS]
    with pytest.raises(KeyboardInterrupt):
        train_seeds(configs, outs)
    monkeypatch.setattr(together, "save_resume_tensors", original)
    assert all(load_tensors(o / "checkpoints" / "resume.safetensors")[1]["step"] == 20 for o in outs)
    resumed = train_seeds(configs, outs)
    for a, b in zip(resumed, full):
        assert a.resumed_from == 20
        wa, wb = final(a.run), final(b.run)
        assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_finished_seeds_are_read_and_a_lone_straggler_continues_alone(tmp_path):
    configs = at_seeds(small("linreg", steps=20))
    outs = [tmp_path / f"r{s}" for s in SEEDS]
    first = train(configs[0], outs[0], progress=False)
    results = train_seeds(configs, outs)
    assert results[0].summary == first.summary  # read, not retrained
    assert results[1].summary["trained_with_seeds"] == [1, 2]


def test_what_cannot_share_a_step_trains_alone(tmp_path):
    linreg = small("linreg")
    assert can_train_together(at_seeds(linreg)) is None
    assert "more than the seed" in can_train_together([linreg, apply_overrides(linreg, ["train.lr=0.01"])])
    assert "compile" in can_train_together(at_seeds(apply_overrides(linreg, ["train.compile=true"])))
    assert "hooks" in can_train_together(at_seeds(apply_overrides(small("addk"), ["task.tvp_layer=1"])))
    results = train_seeds(at_seeds(apply_overrides(linreg, ["train.steps=10", "train.tensorboard=true"]), (0, 1)),
                          [tmp_path / "a", tmp_path / "b"])
    assert all("trained_with_seeds" not in r.summary for r in results)
