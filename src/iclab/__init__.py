"""iclab, the in-context learning laboratory.

Train, probe and dissect in-context learning in transformers. The names a user
needs are here (imported when first used, so ``import iclab`` stays light):

    import iclab
    run = iclab.load_run("runs/lr1")                 # a training run: config, model, metrics
    model = iclab.load_model("smollm2-135m")         # a HeadModel: catalogue name, HF folder, .gguf file or iclab run
    iclab.run_study("spinglass", "quick", "runs/sg") # a study, as `iclab run` does it
    iclab.learners.Ridge(0.1).predict(xs, ys)        # the reference learners

The layout follows the data flow: ``tasks`` -> ``models`` -> ``train`` ->
``runs`` -> ``heads`` -> ``learners`` / ``analysis`` -> ``studies`` ->
``reproduce`` (see docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.22.0"

# name -> (module, attribute); attribute None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "load_run": ("iclab.runs", "load_run"),
    "list_runs": ("iclab.runs", "list_runs"),
    "load_model": ("iclab.heads", "load_model"),
    "load_hf": ("iclab.heads", "load_hf"),
    "from_run": ("iclab.heads", "from_run"),
    "HeadModel": ("iclab.heads", "HeadModel"),
    "Intervention": ("iclab.heads", "Intervention"),
    "Head": ("iclab.results", "Head"),
    "greedy_generate": ("iclab.heads", "greedy_generate"),
    "run_study": ("iclab.studies", "run_study"),
    "train": ("iclab.train", "train"),
    "default_config": ("iclab.train", "default_config"),
    "learners": ("iclab.learners", None),
    "analysis": ("iclab.analysis", None),
    "studies": ("iclab.studies", None),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iclab' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__() -> list[str]:
    return sorted(__all__)
