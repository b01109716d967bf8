"""Probe scoring: R^2, the paired R^2 difference with its standard error, and the claim that reads it."""

import torch

from iclab.analysis.linreg.probes import ProbeFit, ProbeTable, r2_difference, score
from iclab.claims import Verdict
from iclab.studies.linreg.claims import _mlp_beats_linear
from iclab.studies.linreg.settings import LinRegStudySettings


def _noisy(target: torch.Tensor, scales: list[float], g: torch.Generator) -> torch.Tensor:
    return torch.stack([target + s * torch.randn(target.shape, generator=g) for s in scales])


def test_the_r2_difference_is_the_difference_of_the_r2s_and_its_error_shrinks_with_more_prompts():
    g = torch.Generator().manual_seed(0)
    errors = []
    for b in (200, 3200):
        target = torch.randn(b, 3, generator=g)
        a, c = score(_noisy(target, [1.0, 0.3], g), target), score(_noisy(target, [0.5, 0.9], g), target)
        diff, se = r2_difference(a, c, 1, 0)
        assert abs(diff - (a.r2[1] - c.r2[0])) < 1e-5
        errors.append(se)
    assert errors[1] < errors[0] / 3  # 16x the prompts: about a quarter of the standard error


def _r2_dict(mlp_scale: float, linear_scale: float, b: int = 512) -> ProbeTable:
    g = torch.Generator().manual_seed(1)
    target = torch.randn(b, 4, generator=g)
    mlp, lin = score(_noisy(target, [2.0, mlp_scale], g), target), score(_noisy(target, [2.0, linear_scale], g), target)
    return ProbeTable({"w_ols": {8: ProbeFit({"mlp": mlp.r2, "linear": lin.r2}, r2_difference(mlp, lin, 1, 1))}})


def test_mlp_beats_linear_needs_more_than_noise():
    cfg = LinRegStudySettings()
    assert _mlp_beats_linear(cfg, _r2_dict(0.3, 0.8), 8).verdict is Verdict.REPRODUCED
    tie = _mlp_beats_linear(cfg, _r2_dict(0.6, 0.6), 8)
    assert tie.verdict is Verdict.NOT_REPRODUCED and "not above 2 standard errors" in tie.measured
    assert _mlp_beats_linear(cfg, _r2_dict(0.8, 0.3), 8).verdict is Verdict.NOT_REPRODUCED
