"""The :class:`HeadModel` interface: per-head z, results, interventions and greedy decoding.

Shapes: ids [B, T]; z [B, T, H, E]; residual [B, T, D]; W_O [H, E, D];
patterns [L, B, H, T, S]; values [L, B, S, H, E] (already expanded from the
key / value heads to the query heads under grouped-query attention).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator

import torch

from iclab.errors import IclabError
from iclab.models.intervention import Intervention, edit_z  # noqa: F401 (re-exported: the heads' way to edit z)

ZFn = Callable[[torch.Tensor], torch.Tensor]  # z [B, T, H, E] -> z
ResidFn = Callable[[torch.Tensor], torch.Tensor]  # residual [B, T, D] -> residual


class ZCache:
    """z captured by :meth:`HeadModel.capture_z`: ``z`` [L, B, T, H, E] (T: the captured positions)."""

    def __init__(self, n_layers: int):
        self.parts: list[torch.Tensor | None] = [None] * n_layers

    @property
    def z(self) -> torch.Tensor:
        if any(p is None for p in self.parts):
            raise IclabError("no forward pass ran inside capture_z(), nothing was captured")
        return torch.stack([p.to(self.parts[0].device) for p in self.parts])  # layers may sit on several devices


class HeadModel(ABC):
    """A causal LM seen head by head. Subclasses give shapes, weights and hook registration."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    bos_id: int | None

    model: torch.nn.Module  # the wrapped model; wrapping changes none of its settings

    def __init__(self) -> None:
        self._offset = 0  # absolute position of the first token of the current forward call
        self._layer_output_tuple = False  # whether a layer returns (hidden_states, ...): older transformers; seen when recording

    @contextlib.contextmanager
    def reading_weights(self, *layers: int, ends: bool = True) -> Iterator[None]:
        """Within the block, the weights of ``layers`` and (``ends``) of the model's ends (embedding, final norm,
        unembedding) can be read directly: a no-op for a model on one device; a model placed across devices with weights offloaded
        (:mod:`iclab.heads.placement`) has them loaded for the block. The weight-reading methods enter it themselves;
        an analysis that reads a module's weights on its own (the final norm, frozen at an input) enters it."""
        yield

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode (no dropout) and frozen weights for the duration of a pass; the wrapped model's own training
        flag and ``requires_grad`` flags are restored afterwards, so wrapping a model never changes it."""
        module = self.model
        training = module.training
        flags = [p.requires_grad for p in module.parameters()]
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            module.train(training)
            for p, flag in zip(module.parameters(), flags):
                p.requires_grad_(flag)

    # ------------------------------------------------------------------ what a family provides
    @abstractmethod
    def encode(self, text: str, bos: bool = True) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    def token_id(self, text: str, what: str = "token") -> int:
        """The one token ``text`` is (an answer to patch or read); a one-line error naming ``what`` when it is several."""
        ids = self.encode(text, bos=False)
        if len(ids) != 1:
            raise IclabError(f"{what} {text!r} is {len(ids)} tokens ({ids}); give one token (a leading space often makes one)")
        return ids[0]

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token as text (for axes and tables); ``<id>`` for one the tokenizer cannot spell alone (a byte of a
        multi-byte character)."""
        out = []
        for i in ids:
            try:
                out.append(self.decode([i]))
            except Exception:
                out.append(f"<{i}>")
        return out

    @abstractmethod
    def W_O(self, layer: int) -> torch.Tensor:
        """[H, E, D]: head h's share of the output projection."""

    @abstractmethod
    def b_O(self, layer: int) -> torch.Tensor:
        """[D]: the output projection's bias (zeros when it has none)."""

    @abstractmethod
    def _hook_z(self, layer: int, fn: ZFn) -> Any:
        """Register ``fn`` on the input of the layer's output projection; returns a handle with ``remove()``."""

    @abstractmethod
    def _hook_resid(self, layer: int, fn: ResidFn) -> Any:
        """Register ``fn`` on the residual stream entering ``layer`` (``n_layers``: the final residual)."""

    @abstractmethod
    def _hook_attn_out(self, layer: int, fn: ResidFn) -> Any:
        """Register ``fn`` on what the layer's attention adds to the residual stream (so adding v there adds v to
        the residual after attention, before the MLP: the mid-residual, where :attr:`parallel_blocks` is False)."""

    @abstractmethod
    def _layer_module(self, layer: int) -> torch.nn.Module:
        """The module that runs ``layer`` (a decoder layer / block: residual stream in, residual stream out)."""

    @property
    def parallel_blocks(self) -> bool:
        """Whether attention and MLP read the same layer input in parallel (GPT-NeoX, Phi): no mid-residual."""
        return False

    @property
    def has_mlp(self) -> bool:
        """Whether the layers have MLPs (iclab's attention-only models have none)."""
        return True

    def _hook_mlp_out(self, layer: int, fn: ResidFn) -> Any:
        """Register ``fn`` on what the layer's MLP adds to the residual stream (after any norm on it); a clear error
        where the layer has no MLP."""
        raise IclabError(f"{type(self).__name__} does not expose its MLP outputs yet")

    def _hook_qkv(self, layer: int, which: str, fn: ZFn) -> Any:
        """Register ``fn`` on the layer's per-head queries (``which`` "q", [B, T, H, E]), keys or values ("k" / "v",
        [B, T, H_kv, E]) as the projections make them, before any rotary embedding or query / key norm: patching one
        head's slice there patches that head's query, key or value input and nothing else."""
        raise IclabError(f"{type(self).__name__} does not expose its queries, keys and values yet")

    def final_norm(self) -> torch.nn.Module:
        """The norm before the unembedding (an identity where there is none)."""
        raise IclabError(f"{type(self).__name__} does not give its final norm yet")

    def unembed_rows(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unembedding's rows [K, D] and biases [K] (zeros when none) for ``tokens`` [K]: logit = final_norm(x) . row
        + bias, before any final-logit soft-capping."""
        raise IclabError(f"{type(self).__name__} does not give its unembedding rows yet")

    def head_writes(self, layer: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What each head adds to the residual stream, from z [N, H, E]: (writes [N, H, D], rest [N, D]) that sum to the
        layer's attention output exactly. Without a norm after attention a head writes z W_O[h] and the rest is the
        bias; families with one fold it in with its scale held at this input (a linear map, so the parts still sum)."""
        writes = torch.einsum("nhe,hed->nhd", z.float(), self.W_O(layer).float())
        return writes, self.b_O(layer).float().expand(z.shape[0], -1)

    @abstractmethod
    def _forward(self, ids: torch.Tensor, past: Any = None, use_cache: bool = False, last: bool = False,
                 positions: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """Logits [B, T, V] (float32; with ``last``, [B, 1, V] of the last position only: decoding needs no more, and a
        262k vocabulary's [B, T, V] is most of a step's time; with ``positions`` [P], [B, P, V] at those positions, the
        others never unembedded where the model allows it) and the new cache (None when unsupported)."""

    @abstractmethod
    def patterns(self, ids: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """[L, B, H, T, S] attention patterns, float32. ``fast``: the model's matrix products may run in a faster,
        lower precision where the family and device allow it (scores read off the patterns move by a few thousandths);
        never for patterns that are frozen back into the model or compared with its own computation."""

    @abstractmethod
    def values(self, ids: torch.Tensor) -> torch.Tensor:
        """[L, B, S, H, E] value vectors seen by each query head."""

    @abstractmethod
    def ov_logits(self, layer: int, tokens: torch.Tensor, columns: torch.Tensor | None = None,
                  float32: bool = True) -> torch.Tensor:
        """[H, N, V] float32: the logits each head of ``layer`` writes through its direct OV path when attending to
        a token of ``tokens`` [N] (embedding -> the layer's input norm -> W_V -> W_O -> final norm -> W_U); with
        ``columns`` [V'], only those tokens' logits, [H, N, V'] (never the whole vocabulary's). ``float32=False``: in
        the dtype the product ran in, for a caller that converts a block at a time (the same values once converted)."""

    @abstractmethod
    def ov_factors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The full OV circuit of each head of ``layer`` as factors (float32, biases left out):
        embeddings after the layer's input norm E_n [V, D], W_V [H, D, E] (expanded to query heads),
        W_O [H, E, D], and the unembedding with the final norm's gain folded in U [D, V].
        Head h's token-to-token OV circuit is E_n W_V[h] W_O[h] U  ([V, V], rank <= E)."""

    def ov_core(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The OV circuits of ``layer`` without their [V, D] ends (float32): W_V [H, D, E], W_O [H, E, D] and
        U E_n [D, D], the unembedding (final-norm gain folded in) times the embeddings through the layer's input norm,
        summed over the vocabulary. Head h's circuit E_n W_V W_O U shares its non-zero eigenvalues with
        W_O[h] (U E_n) W_V[h] [E, E]. Subclasses with a large vocabulary sum U E_n in chunks, never holding [V, D] twice."""
        E_n, W_V, W_O, U = self.ov_factors(layer)
        return W_V, W_O, U @ E_n

    def circuit_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every head's W_Q, W_K, W_V [H, D, E] (the layer's input-norm gain folded in; biases, and rotary embeddings where
        a family has them, left out) and W_O [H, E, D], float64: what QK / OV circuits and their composition are read
        off (:mod:`iclab.analysis.circuits`). A family that does not give them says so in one line."""
        raise IclabError(f"QK / OV circuits are read off the weights of iclab's own models; {type(self).__name__} does not "
                         "give per-head query and key weights yet")

    @contextlib.contextmanager
    def frozen_patterns(self, patterns: torch.Tensor) -> Iterator["HeadModel"]:
        """Within the block, every layer attends with the recorded ``patterns`` [L, B, H, T, S] (from
        :meth:`patterns` on the same ids) whatever its queries and keys are: Olsson et al.'s pattern-preserving
        ablation, combined with an :class:`Intervention`. A family that cannot pin its patterns says so in one line."""
        raise IclabError(f"{type(self).__name__} cannot freeze its attention patterns yet (pattern-preserving ablation)")
        yield self  # pragma: no cover

    def embedding(self) -> torch.Tensor:
        """[V, D] float64: the token embedding, as the first layer reads it (circuits' W_E)."""
        raise IclabError(f"{type(self).__name__} does not give its token embedding for circuits yet")

    def unembedding(self) -> torch.Tensor:
        """[D, V] float64: the unembedding with the final norm's gain folded in (circuits' W_U; ``ov_factors``' U)."""
        return self.ov_factors(0)[3].double()

    @abstractmethod
    def probe_vocab(self) -> torch.Tensor:
        """[V'] token ids random probes may draw from (no special tokens, no BOS)."""

    @property
    def n_ctx(self) -> int | None:
        """The longest sequence the model takes (None: no fixed limit that matters here)."""
        return None

    @property
    @abstractmethod
    def d_vocab(self) -> int:
        """V, the number of logits a position gets."""

    @abstractmethod
    def resid_logits(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] (float32) of residual-stream vectors [..., D] read the way the model reads its final residual:
        its own final norm, unembedding (and bias) and, where a family has it, final-logit soft-capping. On the final
        residual this is the model's output (the logit lens's last row; tested for every family)."""

    def direct_ov_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[L, H, N, V]: :meth:`ov_logits` of every layer. For small vocabularies only: on a real model this is
        L * H * N * V floats (10 GB for SmolLM2 at N = 200); scores go layer by layer instead."""
        return torch.stack([self.ov_logits(layer, tokens) for layer in range(self.n_layers)])

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    # ------------------------------------------------------------------ shared behaviour
    def kv_head(self, head: int) -> int:
        """The key / value head query head ``head`` reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    def W_O_all(self) -> torch.Tensor:
        """[L, H, E, D] float32."""
        return torch.stack([self.W_O(layer).float() for layer in range(self.n_layers)])

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, intervention: Intervention | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V] of ``ids`` [B, T] under ``intervention``; with ``positions`` [P], [B, P, V] at those
        positions only (an analysis that reads a few positions skips the rest of the unembedding)."""
        with self.intervene(intervention):
            return self._forward(ids.to(self.device), positions=positions)[0]

    def logits_grad(self, ids: torch.Tensor, intervention: Intervention | None = None, last: bool = False) -> torch.Tensor:
        """Logits with gradients flowing into the intervention's tensors (the model's weights stay frozen); with
        ``last``, [B, 1, V] of the last position only (what patching reads: a real vocabulary's [B, T, V] is most of
        a batch's time and memory)."""
        with self.intervene(intervention):
            return self._forward(ids.to(self.device), last=last)[0]

    def _positions(self, T: int, start: int | None, stop: int | None = None) -> slice:
        """The positions of this forward call (T tokens from absolute position ``_offset``) inside [start, stop)."""
        lo = 0 if start is None else max(0, start - self._offset)
        hi = T if stop is None else min(T, max(0, stop - self._offset))
        return slice(lo, max(lo, hi))

    @contextlib.contextmanager
    def intervene(self, iv: Intervention | None) -> Iterator["HeadModel"]:
        """Within the block, every forward pass runs under ``iv`` (in inference mode); hooks are removed on exit."""
        handles = []
        try:
            with self.inference():
                if iv is not None:
                    for layer in sorted(iv.layers_touched()):
                        handles.append(self._hook_z(layer, self._z_editor(iv, layer)))
                    if iv.add_vector is not None:
                        if iv.add_site not in ("pre", "mid"):
                            raise IclabError(f"add_site must be 'pre' or 'mid', got {iv.add_site!r}")
                        top = self.n_layers if iv.add_site == "pre" else self.n_layers - 1
                        if iv.add_layer is None or not 0 <= iv.add_layer <= top:
                            raise IclabError(f"add_layer must lie in [0, {top}] for add_site={iv.add_site!r}, got {iv.add_layer}")
                        if iv.add_site == "mid" and self.parallel_blocks:
                            raise IclabError(f"{type(self).__name__}: attention and MLP run in parallel on the same input, so "
                                             "there is no residual stream between them (no mid-residual); add at a layer's "
                                             "input instead (add_site='pre')")
                        if iv.add_mode not in ("add", "replace") or (iv.add_mode == "replace" and iv.add_site != "pre"):
                            raise IclabError(f"add_mode must be 'add', or 'replace' with add_site='pre' (the residual stream "
                                             f"entering a layer), got {iv.add_mode!r} at {iv.add_site!r}")
                        hook = self._hook_resid if iv.add_site == "pre" else self._hook_attn_out
                        handles.append(hook(iv.add_layer, self._adder(iv)))
                yield self
        finally:
            for h in handles:
                h.remove()

    def _z_editor(self, iv: Intervention, layer: int) -> ZFn:
        def edit(z: torch.Tensor) -> torch.Tensor:
            return edit_z(iv, layer, z, self._positions(z.shape[1], iv.start, iv.stop), self._offset)

        return edit

    def _adder(self, iv: Intervention) -> ResidFn:
        def add(resid: torch.Tensor) -> torch.Tensor:
            sl = self._positions(resid.shape[1], iv.start, iv.stop)
            vec = iv.add_vector.to(resid)
            vec = vec if vec.dim() == 1 else vec.unsqueeze(1)  # [D] for all, or [B, D] per sequence
            if iv.add_mode == "replace":
                resid = resid.clone()
                resid[:, sl] = vec
                return resid
            bump = torch.zeros_like(resid)
            bump[:, sl] = vec
            return resid + bump

        return add

    @contextlib.contextmanager
    def hooked(self, z: dict[int, ZFn] | None = None, resid: dict[int, ResidFn] | None = None,
               attn_out: dict[int, ResidFn] | None = None, mlp_out: dict[int, ResidFn] | None = None,
               q: dict[int, ZFn] | None = None, k: dict[int, ZFn] | None = None,
               v: dict[int, ZFn] | None = None) -> Iterator["HeadModel"]:
        """Within the block, every forward pass calls ``z[layer]`` on that layer's z [B, T, H, E] (the input of its
        output projection, per query head), ``resid[layer]`` on the residual stream entering ``layer`` [B, T, D]
        (``n_layers``: the final residual), ``attn_out[layer]`` / ``mlp_out[layer]`` on what the layer's attention / MLP
        adds [B, T, D], and ``q`` / ``k`` / ``v`` on its per-head queries [B, T, H, E], keys and values [B, T, H_kv, E];
        each returns the tensor the pass goes on with (the same one to read, another to patch). Weights stay frozen;
        gradients flow into whatever a hook adds (attribution patching)."""
        handles = []
        try:
            with self.inference():
                for layer, fn in (z or {}).items():
                    handles.append(self._hook_z(layer, fn))
                for layer, fn in (resid or {}).items():
                    handles.append(self._hook_resid(layer, fn))
                for layer, fn in (attn_out or {}).items():
                    handles.append(self._hook_attn_out(layer, fn))
                for layer, fn in (mlp_out or {}).items():
                    handles.append(self._hook_mlp_out(layer, fn))
                for which, fns in (("q", q), ("k", k), ("v", v)):
                    for layer, fn in (fns or {}).items():
                        handles.append(self._hook_qkv(layer, which, fn))
                yield self
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def recording_resid(self, layer: int) -> Iterator[list[torch.Tensor]]:
        """Within the block, each forward pass appends the residual stream entering ``layer`` [B, T, D] (detached) to
        the list it yields: what :meth:`resumed_at` starts a later pass of the same ids from."""
        kept: list[torch.Tensor] = []

        def keep(resid: torch.Tensor) -> torch.Tensor:
            kept.append(resid.detach())
            return resid

        def note_format(mod: torch.nn.Module, args: tuple, out: Any) -> None:
            self._layer_output_tuple = isinstance(out, tuple)

        handles = [self._hook_resid(layer, keep), self._layer_module(0).register_forward_hook(note_format)]
        try:
            yield kept
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def resumed_at(self, layer: int, resid: torch.Tensor) -> Iterator["HeadModel"]:
        """Within the block, forward passes skip the layers before ``layer`` and enter it with ``resid`` [B, T, D]: the
        residual stream a clean pass of the same ids recorded there (:meth:`recording_resid`; the ids are still given,
        for the embeddings' positions and the attention masks). Interventions that change nothing before ``layer``
        (:meth:`Intervention.first_layer_changed`) then give the logits of the whole pass, at the cost of the layers
        from ``layer`` on only: how ablations and patching of later layers avoid rerunning the early ones."""
        if not 0 <= layer <= self.n_layers:
            raise IclabError(f"layer {layer} is not in [0, {self.n_layers}]")
        as_tuple = self._layer_output_tuple

        def skip(*args: Any, **kwargs: Any) -> Any:
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden,) if as_tuple else hidden

        def enter(x: torch.Tensor) -> torch.Tensor:
            if x.shape != resid.shape:
                raise IclabError(f"the recorded residual stream has shape {tuple(resid.shape)}, this pass {tuple(x.shape)}")
            return resid

        skipped = [self._layer_module(i) for i in range(layer)]
        # a module placed by a device map already has an instance `forward` (accelerate's wrapper): put it back after
        own = [module.__dict__.get("forward") for module in skipped]
        handle = self._hook_resid(layer, enter)
        try:
            for module in skipped:
                module.forward = skip  # an instance attribute: nn.Module calls it in place of the class's forward
            yield self
        finally:
            handle.remove()
            for module, forward in zip(skipped, own):
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward

    @contextlib.contextmanager
    def capture_z(self, positions: slice | int | None = None) -> Iterator[ZCache]:
        """Within the block, every forward pass stores z at ``positions`` (all when None) into the cache."""
        cache = ZCache(self.n_layers)
        handles = []

        def make(layer: int) -> ZFn:
            def grab(z: torch.Tensor) -> torch.Tensor:
                sel = z if positions is None else z[:, positions]
                cache.parts[layer] = (sel.unsqueeze(1) if isinstance(positions, int) else sel).detach().float()
                return z

            return grab

        try:
            for layer in range(self.n_layers):
                handles.append(self._hook_z(layer, make(layer)))
            yield cache
        finally:
            for h in handles:
                h.remove()

    def head_results(self, z: torch.Tensor) -> torch.Tensor:
        """z [L, ..., H, E] -> per-head results [L, ..., H, D] (z @ W_O[h])."""
        W = self.W_O_all().to(z.device)
        return torch.einsum("l...he,lhed->l...hd", z, W)


@torch.no_grad()
def greedy_generate(model: HeadModel, ids: torch.Tensor, n_new: int, intervention: Intervention | None = None,
                    use_cache: bool = True) -> torch.Tensor:
    """Greedy continuation [B, n_new] of prompts ``ids`` [B, T] (all the same length), under ``intervention``.

    With ``use_cache`` each new token costs one forward pass over that token only (the key / value cache);
    without, the whole sequence is re-run for every token (the baseline the benchmark compares against).
    Interventions with ``start`` apply at absolute positions either way.
    """
    ids = ids.to(model.device)
    out = []
    try:
        with model.intervene(intervention):
            model._offset = 0
            logits, past = model._forward(ids, None, use_cache, last=True)
            seq = ids
            for i in range(n_new):
                nxt = logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
                out.append(nxt)
                if i == n_new - 1:
                    break
                seq = torch.cat([seq, nxt], dim=1)
                if use_cache and past is not None:
                    model._offset = seq.shape[1] - 1
                    logits, past = model._forward(nxt, past, True, last=True)
                else:
                    model._offset = 0
                    logits, _ = model._forward(seq, None, False, last=True)
    finally:
        model._offset = 0  # never left set, even when a pass fails
    return torch.cat(out, dim=1)
