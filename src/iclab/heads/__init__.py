"""One per-head interface over iclab's own models and Hugging Face causal LMs.

Every analysis that works on heads (function vectors, head masks, subspaces,
head scores) takes a :class:`HeadModel`:

    from iclab.heads import from_run, load_hf
    model = load_hf("/path/to/local/folder")       # or from_run("runs/addk")
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

__all__ = ["HeadModel", "HFHeadModel", "IclabHeadModel", "Intervention", "ZCache", "from_run", "greedy_generate", "load_hf"]
