"""Memory and time a pretrained model's analysis will need, estimated before the model is loaded, so a run that
cannot fit its device fails at once in one line instead of after minutes of loading.

Parameters are counted exactly from the safetensors headers (no weights read); shapes come from ``config.json``.
The estimate is an approximation stated as one: weights at the run's dtype; for passes with a backward (the addk
mask's gradient flows through every layer after the injection) the activations each layer keeps, per token about
12 d_model + 3 d_ff values plus two [heads, tokens] attention rows; the key / value cache of greedy decoding; the
float32 logits of the positions read. Time: the passes' matrix-product FLOPs (2 per parameter per token, 3x with a
backward) at the matrix-product rate measured on the device in the same dtype: a floor, since no pass reaches it.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from iclab.errors import IclabError

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GiB = 2**30


def count_parameters(folder: Path) -> int:
    """Parameters stored in a folder's ``*.safetensors`` files, from their headers alone."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise IclabError(f"{folder}: no *.safetensors files to count parameters from (the estimate reads their headers)")
    total = 0
    for path in files:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                numel = 1
                for d in entry["shape"]:
                    numel *= d
                total += numel
    return total


@dataclass(frozen=True)
class Shapes:
    """What the estimate needs from ``config.json`` (the text model's, for multimodal configs)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    vocab: int

    @classmethod
    def of(cls, folder: Path) -> "Shapes":
        try:
            raw = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise IclabError(f"{folder}: cannot read config.json for the memory estimate ({e})") from None
        cfg = raw.get("text_config", raw)

        def get(*names: str, default=None):
            for name in names:
                if cfg.get(name) is not None:
                    return int(cfg[name])
            if default is None:
                raise IclabError(f"{folder}/config.json: none of {', '.join(names)} is set; the memory estimate needs it")
            return default

        d = get("hidden_size", "n_embd", "d_model")
        h = get("num_attention_heads", "n_head")
        return cls(n_layers=get("num_hidden_layers", "n_layer"), d_model=d, n_heads=h,
                   n_kv_heads=get("num_key_value_heads", default=h), d_head=get("head_dim", default=d // h),
                   d_ff=get("intermediate_size", "n_inner", default=4 * d), vocab=get("vocab_size"))


@dataclass(frozen=True)
class Footprint:
    """Estimated peak bytes of the largest pass, by part, and the parameters counted."""

    parameters: int
    weights: int
    activations: int
    kv_cache: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.kv_cache + self.logits

    def describe(self) -> str:
        n = self.parameters
        count = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"
        return (f"about {size(self.total)}: weights {size(self.weights)} ({count} parameters), activations {size(self.activations)}, "
                f"key/value cache {size(self.kv_cache)}, logits {size(self.logits)}")


def size(n: int) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def estimate(folder: Path, dtype: str, batch: int, tokens: int, backward: bool, read_positions: int = 1,
             new_tokens: int = 0) -> Footprint:
    """The largest pass of ``batch`` sequences of ``tokens`` tokens (``backward``: gradients flow through every layer),
    reading the logits of ``read_positions`` positions and decoding ``new_tokens`` more with the cache."""
    if dtype not in BYTES:
        raise IclabError(f"dtype {dtype!r} is not one of {', '.join(BYTES)}")
    s, b = Shapes.of(folder), BYTES[dtype]
    params = count_parameters(folder)
    T = tokens + new_tokens
    per_layer = batch * T * (12 * s.d_model + 3 * s.d_ff + 2 * s.n_heads * T) * b
    layers_kept = s.n_layers if backward else 1
    kv = 2 * s.n_layers * batch * T * s.n_kv_heads * s.d_head * b
    logits = batch * read_positions * s.vocab * 4 * (2 if backward else 1)
    return Footprint(params, params * b, per_layer * layers_kept, kv, logits)


def available(device: torch.device) -> int:
    """Bytes free on the device now (CUDA: the driver's count; CPU: the system's available memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
    return -1  # unknown (e.g. MPS): never refuse on a guess


def check_fits(footprint: Footprint, device: torch.device, what: str, free: int | None = None) -> None:
    """A one-line error when the estimate exceeds what the device has free (``free``: bytes, default measured)."""
    free = available(device) if free is None else free
    if 0 <= free < footprint.total:
        raise IclabError(f"{what} needs {footprint.describe()} on {device}, which has {size(free)} free: use a device "
                         "with more memory, a smaller batch or bfloat16 (--set dtype=bfloat16)")


def matmul_rate(device: torch.device, dtype: str, seconds: float = 0.3, n: int = 1024) -> float:
    """FLOP/s of square matrix products on the device in ``dtype``, measured for about ``seconds``."""
    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    (a @ b).sum().item()  # warm-up, and a synchronisation point on any device
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        c = a @ b
        reps += 1
    c.sum().item()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def floor_seconds(parameters: int, tokens: dict[str, float], rate: float) -> dict[str, float]:
    """Seconds each stage needs at least: ``tokens`` maps a stage to its token-passes (forward 1, with backward 3)."""
    return {stage: 2 * parameters * n / rate for stage, n in tokens.items()}
