"""The elementwise gain of a normalisation layer: the one way every weight-reading analysis folds a norm in."""

from __future__ import annotations

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
