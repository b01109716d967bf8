"""Checkpoints: safetensors only (never pickle), written atomically.

Every file is written atomically (see :mod:`iclab.io`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from iclab.errors import CheckpointError
from iclab.io import atomic_write


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Save named tensors (contiguous CPU copies) with JSON-able metadata, atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=meta))


def load_tensors(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a safetensors file and its metadata; refuses anything else with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: only .safetensors checkpoints are loaded (never pickle files)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
        meta = {k: json.loads(v) for k, v in raw_meta.items()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({err})") from None
    return tensors, meta


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.state_dict().items()}


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy tensors into ``model``; a clear error if names or shapes do not match."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{source}: does not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{source}: {name} has shape {tuple(value.shape)}, the model needs {tuple(expected[name].shape)}")
    model.load_state_dict(tensors)


def optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Optimiser state keyed by parameter name: ``optim.<param>.<exp_avg|exp_avg_sq|step>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"optim.{names[id(p)]}.{key}"] = value
    return out


def load_optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Restore optimiser state written by :func:`optimizer_tensors`."""
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        _, rest = key.split(".", 1)
        pname, field = rest.rsplit(".", 1)
        if pname not in params:
            raise CheckpointError(f"optimiser state for unknown parameter {pname!r}")
        p = params[pname]
        optimizer.state[p][field] = value.to(p.device) if field != "step" else value.to("cpu")
