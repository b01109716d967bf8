"""Models placed across devices by ``accelerate``'s device map: several GPUs, CPU, or weights read from disk.

A Hugging Face model larger than one GPU is loaded with ``device_map="auto"``: its
blocks are spread over the GPUs there, then CPU memory, then disk, and
``accelerate`` hooks move activations between them during a forward pass. Blocks
that are offloaded (to CPU beside a GPU, or to disk) hold *meta* tensors outside a
forward pass; their weights exist only inside it. Head analyses also read weights
directly (W_O, the QK and OV circuits, the unembedding), so :func:`onloaded` gives
them, for the length of a block, every weight of chosen modules as a real tensor on
one device, and modules called inside it compute there too.

Nothing here runs for a model on one device (:func:`dispatched` is false): its
weights are read as they are, and its numbers are bitwise those of before.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

# Share of a GPU's free memory the weights may take before a model is spread over several devices: the rest is left
# to activations (a head analysis keeps [B, T, V] logits and per-layer captures on the first device).
WEIGHTS_SHARE_OF_FREE = 0.8


def _align_hooks(module: nn.Module) -> list:
    """The ``accelerate`` AlignDevicesHooks on ``module`` (none when it was not dispatched)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    from accelerate.hooks import AlignDevicesHook, SequentialHook

    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


def dispatched(model: nn.Module) -> bool:
    """Whether ``model`` was placed by a device map (``accelerate`` hooks on its modules)."""
    return any(_align_hooks(m) for m in model.modules())


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its hook's execution device when dispatched, else where its first weight is."""
    for hook in _align_hooks(module):
        if hook.execution_device is not None:
            return torch.device(hook.execution_device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def onloaded(modules: Iterable[nn.Module], device: torch.device) -> Iterator[None]:
    """Within the block, every weight of ``modules`` (and of their submodules) is a real tensor on ``device``, and
    those modules compute there when called; on exit they are back where the device map put them (offloaded ones as
    meta tensors). Offloaded weights are loaded once, for the whole block: a module called inside it keeps them
    (its hook's offloading is paused), so a read after a call still sees them. Tensors taken from them inside the
    block stay valid after it. Re-entrant: a module already onloaded by an enclosing block is left to that block."""
    from accelerate.utils import set_module_tensor_to_device

    hook_state: list = []  # (module, hook, execution device, offload)
    moved: list = []  # (module, parameter name, its device before)
    try:
        for module in modules:
            for sub in module.modules():
                if getattr(sub, "_iclab_onloaded", False):
                    continue
                sub._iclab_onloaded = True
                hook_state.append((sub, None, None, False))  # marks the flag for removal
                for hook in _align_hooks(sub):
                    hook_state.append((sub, hook, hook.execution_device, hook.offload))
                    hook.execution_device = device
                    if hook.offload:
                        hook.pre_forward(sub)  # loads its weights onto `device`
                        hook.offload = False  # calls inside the block neither reload nor drop them
                for name, p in list(sub.named_parameters(recurse=False)):
                    if p.device.type != "meta" and p.device != device:  # another GPU of the device map
                        moved.append((sub, name, p.device))
                        set_module_tensor_to_device(sub, name, device)
        yield
    finally:
        for sub, name, was in reversed(moved):
            set_module_tensor_to_device(sub, name, was)
        for sub, hook, was, offload in reversed(hook_state):
            if hook is None:
                del sub._iclab_onloaded
                continue
            hook.execution_device = was
            if offload:
                hook.offload = True
                hook.post_forward(sub, None)  # back to meta tensors


def spread_placement(weights: int, gpu_free: dict[int, int], cpu_free: int, current: int = 0) -> dict | None:
    """The ``from_pretrained`` arguments that spread ``weights`` bytes over every GPU (then CPU, then disk) when they
    take more than :data:`WEIGHTS_SHARE_OF_FREE` of the free memory of GPU ``current``; None when they fit there.
    Each device is offered that share of its free bytes (``gpu_free``: by GPU index)."""
    if weights <= WEIGHTS_SHARE_OF_FREE * gpu_free[current]:
        return None
    room: dict[int | str, int] = {**gpu_free, "cpu": max(cpu_free, 0)}
    return {"device_map": "auto", "max_memory": {where: int(WEIGHTS_SHARE_OF_FREE * free) for where, free in room.items()}}


def _free_memory() -> tuple[dict[int, int], int]:
    """Bytes free on each GPU here (by index) and available on the CPU (0 when unknown)."""
    from iclab.footprint import available

    gpus = {i: available(torch.device("cuda", i)) for i in range(torch.cuda.device_count())}
    return gpus, max(available(torch.device("cpu")), 0)


def spread_over_gpus(folder: Path, dtype: torch.dtype) -> dict | None:
    """:func:`spread_placement` for a model folder's weights in ``dtype`` on the GPUs here (None without safetensors
    headers to size the weights by: such a model goes to one GPU)."""
    from iclab.footprint import count_parameters

    if not any(folder.glob("*.safetensors")):
        return None
    gpu_free, cpu_free = _free_memory()
    return spread_placement(count_parameters(folder) * dtype.itemsize, gpu_free, cpu_free, torch.cuda.current_device())


def spread_room(device: torch.device) -> int | None:
    """Bytes a model may take on ``device`` when a model too large for one GPU is spread (``cuda`` without an index:
    every GPU's free memory and the CPU's available memory together); None for any other device, where a model must
    fit that device alone. What a memory check before loading compares with."""
    if device.type != "cuda" or device.index is not None or torch.cuda.device_count() == 0:
        return None
    gpu_free, cpu_free = _free_memory()
    return sum(gpu_free.values()) + cpu_free


def limit_bytes(size: str) -> int:
    """Bytes of a ``--max-memory`` size ("2GiB", "1.5GB", "500MB"); one line naming the form when it does not parse."""
    from accelerate.utils import convert_file_size_to_int

    from iclab.errors import IclabError

    try:
        limit = convert_file_size_to_int(size.replace(" ", ""))
    except (ValueError, TypeError):
        limit = -1
    if limit <= 0:
        raise IclabError(f"--max-memory {size!r} is not a size: write it as a number with a unit, e.g. 2GiB, 1.5GB or 500MB")
    return limit


def memory_limit(size: str, device: torch.device) -> dict:
    """The ``load_hf`` arguments that keep at most ``size`` (e.g. "2GiB", "500MB") of a model's weights on ``device``:
    on a GPU the rest goes to CPU memory, then disk; on the CPU, to disk (read from the safetensors file in each
    pass). A size that does not parse is one line naming the form."""
    from iclab.errors import IclabError

    limit = limit_bytes(size)
    if device.type == "cpu":
        return {"device_map": "auto", "max_memory": {"cpu": limit}}
    if device.type != "cuda":
        raise IclabError(f"--max-memory places a model on the CPU or CUDA GPUs; this device is {device.type}")
    gpu = torch.cuda.current_device() if device.index is None else device.index
    return {"device_map": "auto", "max_memory": {gpu: limit, "cpu": _free_memory()[1]}}


def reads_weights(method: Callable | None = None, *, ends: bool = True) -> Callable:
    """Runs ``method`` (whose first argument, when an int, is a layer) inside :meth:`~iclab.heads.base.HeadModel.reading_weights` for
    that layer (``ends``: and the model's embedding, final norm and unembedding): on a model placed across devices
    its offloaded weights are loaded for the call; otherwise nothing. ``@reads_weights(ends=False)`` for a method
    that reads one layer's weights only (W_O, the circuits): a vocabulary's unembedding is not moved for it."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not getattr(self, "_dispatched", False):  # a model placed whole: its weights are where it runs
                return method(self, *args, **kwargs)
            layer = args[0] if args and isinstance(args[0], int) else kwargs.get("layer")
            with self.reading_weights(*(() if layer is None else (layer,)), ends=ends):
                return method(self, *args, **kwargs)

        return call

    return wrap if method is None else wrap(method)
