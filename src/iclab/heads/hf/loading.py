"""Loading a Hugging Face causal LM and its tokenizer from a local folder (never from the hub), placed whole on a
device or spread by accelerate's device map."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from iclab.errors import IclabError
from iclab.heads.hf.model import HFHeadModel
from iclab.heads.placement import spread_over_gpus


def load_hf(path: Path | str, device: torch.device | str = "cpu", dtype: str = "float32", device_map: str | dict | None = None,
            max_memory: dict | None = None) -> HFHeadModel:
    """Load a causal LM and its tokenizer from a local folder (never from the hub).

    ``device``: where the model goes whole; ``cuda`` without an index (what ``--device auto`` and ``--device cuda``
    give) spreads a model whose weights do not fit the GPU's free memory over every GPU here, then CPU and disk
    (:func:`iclab.heads.placement.spread_over_gpus`); ``cuda:N`` keeps it on that GPU. ``device_map`` / ``max_memory``:
    ``accelerate``'s placement, given explicitly (e.g. ``device_map="auto", max_memory={"cpu": "2GiB"}``: the blocks
    past 2 GiB are read from disk during each pass); every head analysis runs on a model so placed."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise IclabError("Hugging Face models need the 'hf' extra: pip install 'iclab[hf]'") from e
    folder = Path(path)
    if not folder.is_dir():
        raise IclabError(f"{folder}: no such folder (iclab loads models from local folders only, never from the hub)")
    if not (folder / "config.json").is_file():
        raise IclabError(f"{folder}: no config.json; a Hugging Face model folder holds config.json, weights and tokenizer files")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise IclabError(f"{folder}: no weights (*.safetensors or *.bin) in the folder")
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not any((folder / name).is_file() for name in tokenizer_files):
        raise IclabError(f"{folder}: no tokenizer files (one of {', '.join(tokenizer_files)})")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise IclabError(f"dtype {dtype!r} is not one of {', '.join(dtypes)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = torch.device(device)
    placement = {} if device_map is None else {"device_map": device_map, "max_memory": max_memory}
    if device_map is None and device.type == "cuda" and device.index is None and torch.cuda.device_count() > 0:
        placement = spread_over_gpus(folder, dtypes[dtype]) or {}
    verbosity, placing = hf_logging.get_verbosity(), logging.getLogger("accelerate.big_modeling")
    level = placing.level
    if placement:  # "some parameters are on the meta device ...": the offloading asked for
        hf_logging.set_verbosity_error()
        placing.setLevel(logging.ERROR)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtypes[dtype], **placement).eval()
        for p in model.parameters():  # iclab owns this copy: analyses never train its weights
            p.requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except pickle.UnpicklingError as e:
        raise IclabError(f"{folder}: its pickled weights (*.bin) hold objects that torch's restricted loader "
                         f"(weights_only) refuses to unpickle; iclab never runs pickled code: convert them to safetensors "
                         f"(torch: {str(e).split('.')[0]})") from None
    except (OSError, ValueError) as e:
        raise IclabError(f"{folder}: could not load it as a causal LM with a tokenizer: {str(e).splitlines()[0]}") from None
    except Exception as e:  # safetensors' own error type (a truncated or damaged file) is not an OSError
        if type(e).__name__ != "SafetensorError":
            raise
        raise IclabError(f"{folder}: its safetensors weights are damaged or incomplete ({str(e).splitlines()[0]}); "
                         "copy or fetch them again (a catalogue model: iclab models get NAME --force)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        placing.setLevel(level)
    return HFHeadModel(model if placement else model.to(device), tokenizer)
