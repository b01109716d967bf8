"""The elementwise gain of a normalisation layer: the one way every weight-reading analysis folds a norm in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def norm_gain(norm: nn.Module, D: int) -> torch.Tensor:
    """[D]: the elementwise gain of a LayerNorm / RMSNorm (Gemma's 1 + w included; ones for a norm without weights or
    none at all), to fold into the weights that read the norm's output (circuits read off the weights)."""
    if isinstance(norm, nn.LayerNorm) or getattr(norm, "bias", None) is not None:
        return norm.weight.detach().float()
    weight = next((p for p in norm.parameters()), None)
    if weight is None:  # a norm without parameters (OLMo's)
        return torch.ones(D)
    ones = torch.ones(1, D, device=weight.device, dtype=weight.dtype)
    return norm(ones)[0].detach().float()  # RMSNorm(1) = its gain


@dataclass(frozen=True)
class NormAtInput:
    """A norm at its input x [N, D] as a linear map with its scale held at x's: norm(x) ~ g * centre(x) * scale + bias,
    centre the mean's removal where the norm centres (LayerNorm) and the identity where it only rescales (RMSNorm);
    ``error`` the largest deviation of that form from the norm's own output, relative to the output's largest entry
    (float32 rounding for LayerNorm and RMSNorm of every family; large for a norm of another form)."""

    gain: torch.Tensor  # [D]
    bias: torch.Tensor  # [D]
    scale: torch.Tensor  # [N, 1]
    centred: bool
    error: float

    def centre(self, c: torch.Tensor) -> torch.Tensor:
        return _centre(c, self.centred)


def _centre(c: torch.Tensor, centred: bool) -> torch.Tensor:
    """c [..., D] less its mean over D where the norm centres (LayerNorm); c itself where it only rescales."""
    return c - c.mean(-1, keepdim=True) if centred else c


def norm_at_input(norm: nn.Module, x: torch.Tensor) -> NormAtInput:
    """The norm at x [N, D] as :class:`NormAtInput`: the scale is read off the norm's own output, so every family's
    variant (Gemma's 1 + w, epsilons, float32 upcasts) is the module's own."""
    D = x.shape[-1]
    centred = _centres(norm, x)
    b = getattr(norm, "bias", None)
    bias = b.detach().float() if b is not None else torch.zeros(D, device=x.device)
    g = norm_gain(norm, D).to(x.device).float()
    y = norm(x.to(next(iter(norm.parameters()), x).dtype)).float()
    x = x.float()
    gx = g * _centre(x, centred)
    scale = ((y - bias) * gx).sum(-1, keepdim=True) / (gx * gx).sum(-1, keepdim=True).clamp_min(1e-30)  # [N, 1]
    error = float((gx * scale + bias - y).abs().max() / y.abs().max().clamp_min(1e-30))
    return NormAtInput(g, bias, scale, centred, error)


def frozen_norm(norm: nn.Module, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The norm at its input x [N, D] as a linear map, its scale held at x's (the convention of direct logit attribution):
    (f, bias) with f(c) for parts c [N, K, D] of x, so that sum over parts of f(c) + bias = norm(x). Centring (LayerNorm)
    is kept (:func:`norm_at_input`). An identity (no norm) gives f(c) = c."""
    at = norm_at_input(norm, x)

    def apply(c: torch.Tensor) -> torch.Tensor:
        return at.gain * at.centre(c.float()) * at.scale.unsqueeze(-2)

    return apply, at.bias.expand_as(x)


def _centres(norm: nn.Module, x: torch.Tensor) -> bool:
    """Whether the norm subtracts the mean (a LayerNorm) rather than only rescaling (RMSNorm): a LayerNorm's output
    does not move when a constant is added to every coordinate of its input."""
    if isinstance(norm, nn.LayerNorm):
        return True
    probe = torch.linspace(-1.0, 1.0, x.shape[-1], device=x.device).unsqueeze(0)
    dtype = next(iter(norm.parameters()), probe).dtype
    return bool(torch.allclose(norm(probe.to(dtype)).float(), norm((probe + 3.0).to(dtype)).float(), atol=1e-3))
