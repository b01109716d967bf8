"""One per-head interface over iclab's own models and Hugging Face causal LMs.

Every analysis that works on heads (function vectors, head masks, subspaces,
head scores) takes a :class:`HeadModel`:

    from iclab.heads import from_run, load_hf, load_model
    model = load_model("smollm2-135m")              # a catalogue name, a local HF folder, a .gguf file, or an iclab run
    model = load_hf("/path/to/local/folder")        # or from_run("runs/addk")
    with model.capture_z() as cache: model.logits(ids)
    cache.z                                          # [L, B, T, H, E] input of each layer's output projection

A head's *z* is its slice of the input of the attention output projection
(o_proj / c_proj / dense), shape [E]; its *result* is z @ W_O[h], shape [D];
the sum of all heads' results plus the projection's bias is the layer's
attention output. Grouped-query attention: query head h reads key / value
head h // (H / H_kv).
"""

from iclab.heads.base import HeadModel, Intervention, ZCache, greedy_generate
from iclab.heads.hf import HFHeadModel, load_hf
from iclab.heads.own import IclabHeadModel, from_run
from iclab.heads.placement import memory_limit


def load_model(spec, device="cpu", dtype: str = "float32", log=print, max_memory: str | None = None) -> HeadModel:
    """Any model iclab can analyse: an iclab run directory (config.yaml), a name from ``iclab models``
    (fetched the first time), a local Hugging Face folder, or a ``.gguf`` file. ``max_memory`` (e.g. "2GiB"): keep
    at most that much of a Hugging Face model's weights on the device, the rest offloaded
    (:func:`iclab.heads.placement.memory_limit`)."""
    from pathlib import Path

    import torch

    from iclab.errors import IclabError
    from iclab.pretrained import resolve

    if (Path(spec) / "config.yaml").is_file() and not (Path(spec) / "config.json").is_file():
        if max_memory is not None:
            raise IclabError("--max-memory places Hugging Face models; an iclab run's model is loaded whole")
        return from_run(spec, device=device)
    placement = {} if max_memory is None else memory_limit(max_memory, torch.device(device))
    return load_hf(resolve(spec, log=log), device, dtype, **placement)


__all__ = ["HeadModel", "HFHeadModel", "IclabHeadModel", "Intervention", "ZCache", "from_run", "greedy_generate", "load_hf",
           "load_model"]
