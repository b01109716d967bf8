"""Task vectors by layer (Hendel et al. 2023; Yang et al. 2025): where a model's final token holds the task.

For task k and layer l, the task vector theta_k(l) [D] is the residual stream entering layer l at the final token
of k's few-shot prompts, averaged over prompts (their queries differ, so only what the demonstrations share is
left). Patched into zero-shot prompts (BOS, x, arrow) in place of their own residual at that layer and token, it
either makes the model answer x + k or not: zero-shot accuracy by layer is the *task-vector curve*. A model whose
few-shot behaviour runs through a task summary at the final token has a layer where the curve is high; one that
reads the demonstrations only late, token by token, has none. iclab chooses the trained add-k subject by this
curve (docs/addk.md), a property of the model stated before any of Hu et al.'s claims is looked at.

This is not Hu et al.'s function vector (a sum of a few heads' outputs *added* after a layer's attention); the two
are measured side by side. Shapes: K tasks, L layers, D d_model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from iclab.analysis.addk.prompts import Prompt, correct, groups
from iclab.heads.base import HeadModel, Intervention
from iclab.results import Result


@dataclass(frozen=True)
class TaskVectorCurve(Result):
    """Zero-shot accuracy with k's task vector patched in at each layer's input, final token only.

    ``layers`` [L]: the patched layers (0 = the embeddings); ``train`` / ``held_out`` [L]: accuracy on the training
    tasks and on the held-out ones (task vectors from few-shot prompts of those tasks); ``zero_shot``: accuracy
    unpatched (the floor); ``few_shot``: accuracy of the few-shot prompts the vectors come from (the ceiling)."""

    SCHEMA: ClassVar[int] = 1

    layers: list[int]
    train: list[float]
    held_out: list[float]
    zero_shot: float
    few_shot: float

    @property
    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.train))]

    @property
    def best(self) -> float:
        """The curve's peak on the training tasks: the strength of the model's task vector."""
        return max(self.train)


@torch.no_grad()
def final_residuals(model: HeadModel, prompts: list[Prompt], ks: list[int], layers: list[int] | None = None,
                    batch: int = 64) -> torch.Tensor:
    """[K, len(layers), D] float32: the residual stream entering each of ``layers`` (default every layer; ``n_layers``:
    the final residual) at the final prompt token, averaged over each task's prompts (the task vectors theta_k(l))."""
    layers = list(range(model.n_layers)) if layers is None else layers
    sums = torch.zeros(len(ks), len(layers), model.d_model)
    counts = torch.zeros(len(ks))
    index = {k: i for i, k in enumerate(ks)}
    for idx in groups(prompts).values():
        for s in range(0, len(idx), batch):
            chunk = [prompts[i] for i in idx[s : s + batch]]
            grabbed: dict[int, torch.Tensor] = {}

            def grab(layer: int):
                def fn(resid: torch.Tensor) -> torch.Tensor:
                    grabbed[layer] = resid[:, -1].detach().float().cpu()
                    return resid

                return fn

            with model.hooked(resid={layer: grab(layer) for layer in layers}):
                model.logits(torch.tensor([p.ids for p in chunk]))
            stacked = torch.stack([grabbed[layer] for layer in layers], dim=1)  # [B, L, D]
            for j, p in enumerate(chunk):
                sums[index[p.k]] += stacked[j]
                counts[index[p.k]] += 1
    return sums / counts.clamp(min=1).view(-1, 1, 1)


def patched_accuracy(model: HeadModel, vectors: torch.Tensor, ks: list[int], zero: list[Prompt], layer: int) -> float:
    """Accuracy of zero-shot prompts with their task's vector ``vectors`` [K, D] in place of the residual entering
    ``layer`` at the final prompt token (later tokens of a multi-token answer are not touched)."""
    index = {k: i for i, k in enumerate(ks)}

    def make(chunk: list[Prompt], T: int) -> Intervention:
        vec = vectors[[index[p.k] for p in chunk]]
        return Intervention(add_layer=layer, add_vector=vec, add_site="pre", add_mode="replace", start=T - 1, stop=T)

    return float(correct(model, zero, make).mean())


def task_vector_curve(model: HeadModel, few_train: list[Prompt], zero_train: list[Prompt], few_held: list[Prompt],
                      zero_held: list[Prompt], train_ks: list[int], held_ks: list[int]) -> TaskVectorCurve:
    """The curve on training and held-out tasks: task vectors from the few-shot prompts, patched into the zero-shot
    prompts of the same tasks at every layer."""
    theta_train = final_residuals(model, few_train, train_ks)
    theta_held = final_residuals(model, few_held, held_ks) if held_ks else None
    layers = list(range(model.n_layers))
    train = [patched_accuracy(model, theta_train[:, layer], train_ks, zero_train, layer) for layer in layers]
    held = [patched_accuracy(model, theta_held[:, layer], held_ks, zero_held, layer) if theta_held is not None else float("nan")
            for layer in layers]
    return TaskVectorCurve(layers, train, held, float(correct(model, zero_train).mean()), float(correct(model, few_train).mean()))
