"""The four studies. Each is a package ``iclab.studies.<name>`` declaring a :class:`~iclab.studies.runner.Study`
(``STUDY``: title, paper, presets, models, parts, claims, figures, its entries in ``iclab reproduce``) whose
``run(preset, out, overrides, device, log=print)`` writes ``out/config.yaml``, cached parts, figures and, last,
``out/summary.json``, and returns the typed :class:`~iclab.studies.common.Summary`. ``study(name)`` is the registry:
adding a study is adding its name to ``NAMES`` and its package (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from iclab.errors import IclabError

if TYPE_CHECKING:
    from iclab.studies.common import Summary
    from iclab.studies.runner import Study

NAMES: tuple[str, ...] = ("linreg", "induction", "spinglass", "addk")


def study(name: str) -> "Study":
    """The declared :class:`~iclab.studies.runner.Study` ``name`` (imported when first asked for: studies pull in torch
    and plotting); a one-line error for an unknown name."""
    if name not in NAMES:
        raise IclabError(f"study {name!r} is unknown; studies: {', '.join(NAMES)}")
    return importlib.import_module(f"iclab.studies.{name}").STUDY


def all_studies() -> list["Study"]:
    return [study(name) for name in NAMES]


def run_study(name: str, preset: str = "quick", out=None, overrides: list[str] | None = None, device: str = "cpu") -> "Summary":
    """Run study ``name`` at ``preset`` into ``out`` (default :func:`~iclab.studies.common.default_folder`) with
    ``--set``-style overrides;
    returns its summary, as ``iclab run`` does."""
    from pathlib import Path

    import torch

    from iclab.studies.common import default_folder

    declared = study(name)
    model = getattr(declared.settings(preset, list(overrides or [])), "model", None)
    folder = Path(out) if out is not None else default_folder(name, preset, model)
    return declared.run(preset, folder, list(overrides or []), torch.device(device))
