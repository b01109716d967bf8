"""Interventions on a forward pass, head by head: the one implementation of zeroing, scaling and replacing a head's
z and of adding a vector to the residual stream, shared by :class:`iclab.heads.HeadModel` (any model) and
:func:`iclab.models.ablate_heads` (iclab's own).

Shapes: z [B, T, H, E]; residual [B, T, D].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Intervention:
    """Changes to a forward pass at absolute positions ``start <= t < stop`` (None: unbounded on that side).

    ``head_scale`` [L, H]: multiplies each head's z (1 keeps it, 0 zero-ablates it).
    ``replace_mask`` [L, H] bool with ``replace_z`` [L, H, E] (one value for every position) or
    [L, T, H, E] (one per absolute position; later positions take the last): those heads' z are
    replaced (mean ablation). ``add_layer`` and ``add_vector`` [D]: added to the residual
    stream of that layer (a function vector; [B, D] for one per sequence): at its input
    (``add_site="pre"``; ``add_layer = L`` is the final residual) or after its attention, before its
    MLP (``"mid"``, TransformerLens' ``blocks.l.hook_resid_mid``). With ``add_mode="replace"`` the vector
    replaces the residual stream entering that layer instead (``"pre"`` only: Hendel et al.'s task-vector patching).
    """

    head_scale: torch.Tensor | None = None
    replace_mask: torch.Tensor | None = None
    replace_z: torch.Tensor | None = None
    add_layer: int | None = None
    add_vector: torch.Tensor | None = None
    start: int | None = None
    stop: int | None = None
    add_site: str = "pre"
    add_mode: str = "add"

    def layers_touched(self) -> set[int]:
        out: set[int] = set()
        if self.head_scale is not None:
            out |= set(range(self.head_scale.shape[0]))
        if self.replace_mask is not None:
            out |= {int(i) for i in torch.nonzero(self.replace_mask.any(-1)).flatten()}
        return out

    def first_layer_changed(self) -> int | None:
        """The first layer whose computation this intervention changes (None: it changes nothing): the layers before
        it run as in a clean pass, so a pass under it may start from a clean pass's residual stream there
        (:meth:`iclab.heads.HeadModel.resumed_at`). A head scale of 1 changes nothing."""
        layers: set[int] = set()
        if self.head_scale is not None:
            layers |= {int(i) for i in torch.nonzero((self.head_scale != 1).any(-1)).flatten()}
        if self.replace_mask is not None:
            layers |= {int(i) for i in torch.nonzero(self.replace_mask.any(-1)).flatten()}
        if self.add_vector is not None and self.add_layer is not None:
            layers.add(self.add_layer)
        return min(layers) if layers else None


def edit_z(iv: Intervention, layer: int, z: torch.Tensor, positions: slice, offset: int = 0) -> torch.Tensor:
    """``iv``'s head edits of one layer applied to z [B, T, H, E] at ``positions`` of this call, whose first token
    is absolute position ``offset``: the one implementation of zeroing, scaling and replacing a head's z, for
    :class:`HeadModel` and for :func:`iclab.models.ablate_heads` alike. Returns a new tensor."""
    z = z.clone()
    if iv.replace_mask is not None and bool(iv.replace_mask[layer].any()):
        m = iv.replace_mask[layer].to(z.device)
        ref = iv.replace_z[layer]
        if ref.dim() == 3:  # [T_ref, H, E]: by absolute position, the last one beyond
            at = torch.arange(positions.start, positions.stop) + offset
            ref = ref[at.clamp(max=ref.shape[0] - 1)][:, m]  # [t, |m|, E]
        else:
            ref = ref[m]  # [|m|, E]
        z[:, positions, m] = ref.to(z)
    if iv.head_scale is not None:
        z[:, positions] = z[:, positions] * iv.head_scale[layer].to(z).view(1, 1, -1, 1)
    return z
