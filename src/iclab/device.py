"""Device choice, made once at the edge (CLI or study) and passed down."""

from __future__ import annotations

from typing import Literal

import torch

from iclab.errors import IclabError

DeviceChoice = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    if choice not in DEVICE_CHOICES:
        raise IclabError(f"--device {choice!r} is not one of {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if choice == "cuda" and not cuda:
        raise IclabError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if choice == "mps" and not mps:
        raise IclabError("--device mps: no Apple MPS device is available here; use --device cpu or auto")
    return torch.device(choice)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (a CUDA GPU with bf16, or a CPU with AVX-512 BF16 or
    AMX), where a bf16 product is 2-3x faster than float32; elsewhere it is emulated and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False
