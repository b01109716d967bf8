"""The one decoder-only transformer family iclab trains and dissects.

Axis vocabulary used in every shape comment of :mod:`iclab.models`:

    B  batch            T  positions (query)     S  positions (key)
    H  heads            D  d_model               E  d_head
    M  d_mlp            V  d_vocab               I  d_input    O  d_output
    L  layers
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iclab.config import require

Positional = Literal["learned", "shortformer", "none"]
Normalization = Literal["layernorm", "none"]
InputKind = Literal["tokens", "continuous"]
Init = Literal["gpt2", "torch"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape and options of an :class:`iclab.models.Transformer`.

    ``positional``: ``learned`` adds W_pos to the residual stream (GPT-2);
    ``shortformer`` adds it to the inputs of queries and keys only, never to
    the residual stream (Press et al. 2021, used by Olsson et al. 2022);
    ``none`` uses no positions beyond the causal mask.
    ``smeared_keys``: each head mixes every key with the previous position's
    key through one trainable scalar, k_j <- s k_j + (1 - s) k_(j-1),
    s = sigmoid(a) (Olsson et al. 2022).
    ``input``: ``tokens`` (embedding W_E [V, D] and unembedding W_U [D, V]) or
    ``continuous`` (linear read-in [I -> D] and read-out [D -> O], Garg et al. 2022).
    ``init``: ``gpt2`` draws every weight from N(0, init_std) (output
    projections scaled by 1/sqrt(2 L)), biases zero; ``torch`` uses PyTorch's
    ``nn.Linear`` default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
    biases alike, with positions from N(0, init_std). For small continuous-input
    models the larger ``torch`` scale leaves the predict-zero plateau far sooner.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = None
    attn_only: bool = False
    normalization: Normalization = "layernorm"
    positional: Positional = "learned"
    smeared_keys: bool = False
    n_ctx: int = 128
    input: InputKind = "tokens"
    d_vocab: int = 256
    d_input: int = 1
    d_output: int = 1
    init_std: float = 0.02
    init: Init = "gpt2"

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx"):
            require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        if self.d_head is None:
            require(
                self.d_model % self.n_heads == 0,
                "n_heads",
                f"must divide d_model={self.d_model} when d_head is not set, got {self.n_heads}",
            )
        else:
            require(self.d_head >= 1, "d_head", f"must be at least 1, got {self.d_head}")
        if self.d_mlp is not None:
            require(self.d_mlp >= 1, "d_mlp", f"must be at least 1, got {self.d_mlp}")
        if self.input == "tokens":
            require(self.d_vocab >= 2, "d_vocab", f"must be at least 2, got {self.d_vocab}")
        else:
            require(self.d_input >= 1, "d_input", f"must be at least 1, got {self.d_input}")
            require(self.d_output >= 1, "d_output", f"must be at least 1, got {self.d_output}")
        require(self.init_std > 0, "init_std", f"must be positive, got {self.init_std}")

    @property
    def head_dim(self) -> int:
        """E, the width of one head's query, key and value."""
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def mlp_dim(self) -> int:
        """M, the hidden width of each MLP (4 D unless set)."""
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model
