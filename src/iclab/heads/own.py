"""iclab's own :class:`~iclab.models.Transformer` behind the :class:`HeadModel` interface.

Token models only. The tokenizer is any object with ``encode(text, bos)`` and
``decode(ids)`` (the add-k study's number tokenizer; bytes by default). iclab
models re-run the whole sequence for each generated token (they are small and
their prompts short); Hugging Face models decode with a key / value cache.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from iclab.errors import IclabError
from iclab.heads.base import HeadModel, ResidFn, ZFn
from iclab.models import Transformer, frozen_patterns, run_with_cache
from iclab.models.norms import norm_gain


class Tokenizer(Protocol):
    bos_id: int | None

    def encode(self, text: str, bos: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """Bytes as tokens (the induction task's vocabulary); no BOS."""

    bos_id = None

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


@torch.no_grad()
def transformer_ov_logits(model: Transformer, layer: int, tokens: torch.Tensor,
                          columns: torch.Tensor | None = None) -> torch.Tensor:
    """[H, N, V] (or [H, N, V'] for ``columns`` [V']): the logits each head of ``layer`` of an iclab Transformer writes
    through its direct path when attending to a token of ``tokens`` [N] (embedding -> ln1 -> W_V, W_O -> final norm ->
    W_U; the value and output biases left out: they do not depend on the token). The model is not changed."""
    x = model.W_E[tokens]  # [N, D]
    block = model.blocks[layer]
    v = torch.einsum("nd,hde->hne", block.ln1(x), block.attn.W_V)  # [H, N, E]
    result = torch.einsum("hne,hed->hnd", v, block.attn.W_O)  # [H, N, D]
    W_U = model.W_U if columns is None else model.W_U[:, columns.to(model.W_U.device)]
    return (model.ln_final(result) @ W_U).float()  # [H, N, V]


class IclabHeadModel(HeadModel):
    def __init__(self, model: Transformer, tokenizer: Tokenizer | None = None):
        super().__init__()
        if model.cfg.input != "tokens":
            raise IclabError("per-head analyses need a token model (model.input = 'tokens')")
        self.model = model  # left as the caller had it: passes run in inference() mode
        self.tokenizer = tokenizer or ByteTokenizer()
        cfg = model.cfg
        self.n_layers, self.n_heads, self.n_kv_heads = cfg.n_layers, cfg.n_heads, cfg.n_heads
        self.d_head, self.d_model = cfg.head_dim, cfg.d_model
        self.bos_id = self.tokenizer.bos_id

    @property
    def device(self) -> torch.device:
        return self.model.W_E.device

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return self.tokenizer.encode(text, bos)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def _layer_module(self, layer: int) -> torch.nn.Module:
        return self.model.blocks[layer]

    def W_O(self, layer: int) -> torch.Tensor:
        return self.model.blocks[layer].attn.W_O.detach()

    def b_O(self, layer: int) -> torch.Tensor:
        return self.model.blocks[layer].attn.b_O.detach()

    def _hook_z(self, layer: int, fn: ZFn) -> Any:
        return self.model.blocks[layer].attn.hook_z.register_forward_hook(lambda mod, inp, out: fn(out))

    def _hook_resid(self, layer: int, fn: ResidFn) -> Any:
        if layer == self.n_layers:
            return self.model.ln_final.register_forward_pre_hook(lambda mod, args: (fn(args[0]),))
        return self.model.blocks[layer].hook_resid_pre.register_forward_hook(lambda mod, inp, out: fn(out))

    def _hook_attn_out(self, layer: int, fn: ResidFn) -> Any:
        return self.model.blocks[layer].hook_attn_out.register_forward_hook(lambda mod, inp, out: fn(out))

    @property
    def has_mlp(self) -> bool:
        return not self.model.cfg.attn_only

    def _hook_mlp_out(self, layer: int, fn: ResidFn) -> Any:
        if self.model.blocks[layer].mlp is None:
            raise IclabError("this model is attention-only: its layers have no MLP output to hook")
        return self.model.blocks[layer].hook_mlp_out.register_forward_hook(lambda mod, inp, out: fn(out))

    def _hook_qkv(self, layer: int, which: str, fn: ZFn) -> Any:
        point = getattr(self.model.blocks[layer].attn, f"hook_{which}")  # k: after smearing, where the model has it
        return point.register_forward_hook(lambda mod, inp, out: fn(out))

    def final_norm(self) -> nn.Module:
        return self.model.ln_final

    def unembed_rows(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = tokens.to(self.device)
        return self.model.W_U.detach()[:, tokens].T.float(), self.model.b_U.detach()[tokens].float()

    def _forward(self, ids: torch.Tensor, past: Any = None, use_cache: bool = False, last: bool = False,
                 positions: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        if past is not None:
            raise IclabError("iclab models have no key / value cache; call without past")
        if ids.shape[1] > self.model.cfg.n_ctx:
            raise IclabError(f"sequence of {ids.shape[1]} tokens exceeds the model's context of {self.model.cfg.n_ctx}")
        logits = self.model(ids).float()  # small vocabularies: every position unembedded, then the ones read kept
        if positions is not None:
            logits = logits[:, positions.to(logits.device)]
        return (logits[:, -1:] if last else logits), None

    @torch.no_grad()
    def patterns(self, ids: torch.Tensor, fast: bool = False) -> torch.Tensor:
        with self.inference():  # small models: float32 always
            _, cache = run_with_cache(self.model, ids.to(self.device), names=lambda n: n.endswith("attn.hook_pattern"))
        return cache.stack("attn.hook_pattern")

    def ov_logits(self, layer: int, tokens: torch.Tensor, columns: torch.Tensor | None = None,
                  float32: bool = True) -> torch.Tensor:
        return transformer_ov_logits(self.model, layer, tokens.to(self.device), columns)

    @torch.no_grad()
    def ov_factors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        block = m.blocks[layer]
        gain = norm_gain(m.ln_final, m.cfg.d_model).to(self.device)
        return (block.ln1(m.W_E).float(), block.attn.W_V.float(), block.attn.W_O.float(), (gain.unsqueeze(1) * m.W_U).float())

    @torch.no_grad()
    def circuit_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        a = self.model.blocks[layer].attn
        g = norm_gain(self.model.blocks[layer].ln1, self.d_model).to(a.W_Q.device).double().view(1, -1, 1)
        return g * a.W_Q.double(), g * a.W_K.double(), g * a.W_V.double(), a.W_O.double()

    @contextlib.contextmanager
    def frozen_patterns(self, patterns: torch.Tensor) -> Iterator["IclabHeadModel"]:
        with frozen_patterns(self.model, patterns.to(self.device)):
            yield self

    def embedding(self) -> torch.Tensor:
        return self.model.W_E.detach().double()

    def probe_vocab(self) -> torch.Tensor:
        """Every token but the task's special ones (ids below 2, and 2 when there is a BOS)."""
        return torch.arange(2 if self.bos_id is None else 3, self.model.cfg.d_vocab)

    @property
    def n_ctx(self) -> int:
        return self.model.cfg.n_ctx

    @property
    def d_vocab(self) -> int:
        return self.model.cfg.d_vocab

    @torch.no_grad()
    def resid_logits(self, resid: torch.Tensor) -> torch.Tensor:
        m = self.model
        return (m.ln_final(resid.to(m.W_U)) @ m.W_U + m.b_U).float()

    @torch.no_grad()
    def values(self, ids: torch.Tensor) -> torch.Tensor:
        with self.inference():
            _, cache = run_with_cache(self.model, ids.to(self.device), names=lambda n: n.endswith("attn.hook_v"))
        return cache.stack("attn.hook_v")


def from_run(path: Path | str, tokenizer: Tokenizer | None = None, device: torch.device | str = "cpu") -> IclabHeadModel:
    """An iclab run directory's final model as a :class:`HeadModel` (the task's tokenizer when it has one)."""
    from iclab.runs import load_run

    run = load_run(path, device=device)
    if run.model.cfg.input != "tokens":
        raise IclabError(f"{path}: a {run.config.task.name} run reads vectors, not tokens; per-head analyses need a token "
                         f"model (a run of a token task: induction, addk; a name from `iclab models`, a Hugging Face "
                         f"folder or a .gguf file)")
    if tokenizer is None:
        make = getattr(run.config.task, "tokenizer", None)
        tokenizer = make() if callable(make) else None
    return IclabHeadModel(run.model, tokenizer)
