"""Hugging Face causal LMs from a local folder, behind the :class:`HeadModel` interface.

Supported families (by ``config.model_type``), one adapter each in ``families.FAMILIES``:

    llama, mistral, qwen2, qwen3, stablelm, olmo   model.layers[l].self_attn.o_proj (z = its input)
    gemma, gemma2, gemma3_text                     the same, plus a norm after attention (post_attention_layernorm)
    olmo2                                          the same, with no norm before attention (norms after it)
    phi                                            model.layers[l].self_attn.dense
    phi3                                           o_proj; fused query/key/value projection qkv_proj
    gpt2                                           transformer.h[l].attn.c_proj  (Conv1D: y = x W + b)
    gpt_neox                                       gpt_neox.layers[l].attention.dense

Per-head z is the input of the output projection, reshaped [B, T, H, E]; W_O[h] is
the projection's slice for head h. Attention patterns come from the model's own
eager attention (``output_attentions``, soft-capping included); value vectors from
the value projection, expanded to query heads under grouped-query attention.
The direct OV path of a head runs embedding -> input norm -> W_V -> W_O ->
post-attention norm (where the family has one) -> final norm -> unembedding
(-> final-logit soft-capping where the family has it).
Nothing is ever downloaded: only ``local_files_only`` loading.

Modules: ``families`` (the adapters and projection readers: a new family is one entry there), ``frozen`` (attention
with pinned patterns), ``model`` (:class:`HFHeadModel`), ``loading`` (:func:`load_hf`).
"""

from iclab.heads.hf.loading import load_hf
from iclab.heads.hf.model import HFHeadModel

__all__ = ["HFHeadModel", "load_hf"]
