"""Akyürek et al.'s constructions: each primitive on its own, then the one-step-GD model against the learner."""

import pytest
import torch

from iclab.constructions import Layout, route, aff, attend, gd_step_model, mov, mul, prefix_mean, ridge_model
from iclab.learners import GD, Ridge
from iclab.models import ModelConfig, Transformer
from iclab.tasks import LinearRegression, LinRegConfig

LAYOUT = Layout((("a", 2), ("b", 2), ("one", 1), ("pos", 1), ("pos_sq", 1), ("out", 2)))


def block(n_ctx: int = 10) -> Transformer:
    cfg = ModelConfig(n_layers=1, d_model=LAYOUT.width, n_heads=1, d_head=LAYOUT.width, d_mlp=16, normalization="none",
                      n_ctx=n_ctx, input="continuous", d_input=LAYOUT.width, d_output=1)
    return Transformer(cfg).double()


def residual(T: int = 10, seed: int = 0) -> torch.Tensor:
    """A residual stream [1, T, D] with random a, b, the constant and the position slots filled."""
    h = torch.zeros(1, T, LAYOUT.width, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    h[0, :, LAYOUT["a"]] = torch.randn(T, 2, generator=g, dtype=torch.float64)
    h[0, :, LAYOUT["b"]] = torch.randn(T, 2, generator=g, dtype=torch.float64)
    h[0, :, LAYOUT["one"]] = 1.0
    h[0, :, LAYOUT["pos"][0]] = torch.arange(T, dtype=torch.float64)
    h[0, :, LAYOUT["pos_sq"][0]] = torch.arange(T, dtype=torch.float64) ** 2
    return h


def test_mov_copies_the_previous_position_exactly():
    model = block()
    mov(model.blocks[0].attn, LAYOUT, "a", "out", "pos", "pos_sq", "one")
    h = residual()
    with torch.no_grad():
        moved = model.blocks[0].attn(h)[0, :, LAYOUT["out"]]
    assert torch.equal(moved[1:], h[0, :-1, LAYOUT["a"]])  # bitwise: the softmax weight is exactly 1
    assert torch.equal(moved[0], h[0, 0, LAYOUT["a"]])


def test_prefix_mean_is_the_causal_running_mean():
    model = block()
    prefix_mean(model.blocks[0].attn, LAYOUT, "b", "out")
    h = residual()
    with torch.no_grad():
        out = model.blocks[0].attn(h)[0, :, LAYOUT["out"]]
    expected = h[0, :, LAYOUT["b"]].cumsum(0) / torch.arange(1, 11, dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


def test_mul_multiplies_linear_forms_to_1e_9():
    model = block()
    mlp = model.blocks[0].mlp
    mul(mlp, LAYOUT, [({"a:0": 1.0}, {"b:0": 1.0}, "out", 0), ({"a:1": 2.0, "one": 1.0}, {"pos": 1.0}, "out", 1)])
    h = residual()
    with torch.no_grad():
        out = mlp(h)[0, :, LAYOUT["out"]]
    a, b, t = h[0, :, LAYOUT["a"]], h[0, :, LAYOUT["b"]], h[0, :, LAYOUT["pos"][0]]
    torch.testing.assert_close(out[:, 0], a[:, 0] * b[:, 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(out[:, 1], (2 * a[:, 1] + 1) * t, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="hidden units"):
        mul(mlp, LAYOUT, [({"a": 1.0}, {"b": 1.0}, "out", 0)] * 5)


def test_aff_is_an_affine_map_to_rounding():
    model = block()
    mlp = model.blocks[0].mlp
    aff(mlp, LAYOUT, [({"a:0": 0.5, "b:1": -0.25}, 0.125, "out", 1)])
    h = residual()
    with torch.no_grad():
        out = mlp(h)[0, :, LAYOUT["out"]]
    expected = 0.5 * h[0, :, LAYOUT["a"][0]] - 0.25 * h[0, :, LAYOUT["b"][1]] + 0.125
    torch.testing.assert_close(out[:, 1], expected, rtol=0, atol=1e-13)
    assert torch.all(out[:, 0] == 0)


@pytest.mark.parametrize("d, n_points, lr", [(4, 9, 0.05), (8, 17, 0.01), (8, 40, 0.02)])
def test_the_constructed_model_is_one_gd_step(d, n_points, lr):
    model = gd_step_model(d, n_points, lr)
    task = LinearRegression(LinRegConfig(d=d, n_points=n_points, encoding="akyurek"))
    xs, ys, _ = task.sample(0, 128, "eval")
    xs, ys = xs.double(), ys.double()
    with torch.no_grad():
        pred = task.predictions(model(task.encode(xs, ys)))
    ref = GD(steps=1, lr=lr).predict(xs, ys)
    assert float((pred - ref).abs().max()) <= 1e-9 * float(ref.abs().max())
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 5 * d + 5
    other = GD(steps=1, lr=2 * lr).predict(xs, ys)
    assert float((pred - other).abs().max()) > 1e-2  # the test can fail: a different step is far off


@pytest.mark.parametrize("d, n_points, lam", [(4, 9, 0.1), (4, 9, 1.0), (4, 9, 0.01), (8, 17, 0.1)])
def test_the_constructed_model_is_ridge_by_sherman_morrison(d, n_points, lam):
    model = ridge_model(d, n_points, lam)
    task = LinearRegression(LinRegConfig(d=d, n_points=n_points, encoding="akyurek"))
    xs, ys, _ = task.sample(1, 32, "eval")
    xs, ys = xs.double(), ys.double()
    with torch.no_grad():
        pred = task.predictions(model(task.encode(xs, ys)))
    ref = Ridge(lam=lam).predict(xs, ys)
    assert float((pred - ref).abs().max()) <= 1e-7 * float(ref.abs().max())
    assert model.cfg.n_layers == 5 * (n_points - 1) + 2 and model.cfg.d_model == d * d + 6 * d + 13
    other = Ridge(lam=2 * lam).predict(xs, ys)
    assert float((pred - other).abs().max()) > 1e-3  # a different lambda is far off


def test_attend_fetches_a_fixed_position_or_the_sink():
    layout = Layout((("a", 2), ("one", 1), ("pos", 1), ("pos_sq", 1), ("first", 1), ("out", 2)))
    cfg = ModelConfig(n_layers=1, d_model=layout.width, n_heads=1, d_head=layout.width, d_mlp=4, normalization="none",
                      n_ctx=10, input="continuous", d_input=1, d_output=1)
    attn = Transformer(cfg).double().blocks[0].attn
    attend(attn, layout, 0, 5, "pos", "pos_sq", "one", first="first")
    route(attn, layout["a"], layout["out"])
    T = 10
    h = torch.zeros(1, T, layout.width, dtype=torch.float64)
    h[0, 1:, layout["a"]] = torch.randn(T - 1, 2, dtype=torch.float64)  # position 0 (the sink) holds zeros
    h[0, :, layout["one"]] = 1.0
    h[0, :, layout["pos"][0]] = torch.arange(T, dtype=torch.float64)
    h[0, :, layout["pos_sq"][0]] = torch.arange(T, dtype=torch.float64) ** 2
    h[0, 0, layout["first"][0]] = 1.0
    with torch.no_grad():
        out = attn(h)[0, :, layout["out"]]
    assert torch.equal(out[:5], torch.zeros(5, 2, dtype=torch.float64))  # before position 5: the sink
    assert torch.equal(out[5:], h[0, 5, layout["a"]].expand(5, 2))  # from position 5 on: exactly position 5
