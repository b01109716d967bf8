"""The four studies. Each built study is a module ``iclab.studies.<name>`` exposing

    PRESETS: dict[str, Settings]   # "quick", "paper" -> a frozen settings dataclass
    def run(preset: str, out: Path, overrides: list[str], device: torch.device, log=print) -> dict

``run`` writes ``out/config.yaml``, cached parts, figures and, last,
``out/summary.json`` (numbers and a ``findings`` list), and returns the summary.
A study not built yet is listed with ``built=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from iclab.errors import IclabError


@dataclass(frozen=True)
class StudyInfo:
    name: str
    title: str
    paper: str
    built: bool


STUDIES: dict[str, StudyInfo] = {
    info.name: info
    for info in (
        StudyInfo(
            "linreg",
            "Which learning algorithm is in-context linear regression?",
            "Akyürek et al. 2023; Garg et al. 2022",
            built=True,
        ),
        StudyInfo("induction", "Induction heads and the ICL phase change", "Olsson et al. 2022", built=True),
        StudyInfo("spinglass", "Linear attention as a spin glass; ICL from task diversity", "Li, Bai, Huang 2024", built=True),
        StudyInfo("addk", "Few-shot addition localized to a few heads", "Hu et al. 2025", built=True),
    )
}


def study_module(name: str) -> ModuleType:
    """The module of a built study; a clear error for an unknown or unbuilt one."""
    if name not in STUDIES:
        raise IclabError(f"study {name!r} is unknown; studies: {', '.join(STUDIES)}")
    if not STUDIES[name].built:
        built = [n for n, s in STUDIES.items() if s.built]
        raise IclabError(f"study {name!r} is not built yet; built studies: {', '.join(built) or 'none so far'}")
    return LOADERS[name]()


# Each study's module, imported when first asked for (they pull in torch and plotting); explicit imports so that a
# reader and a type checker can follow reproduce -> study.
def _linreg() -> ModuleType:
    from iclab.studies import linreg

    return linreg


def _induction() -> ModuleType:
    from iclab.studies import induction

    return induction


def _spinglass() -> ModuleType:
    from iclab.studies import spinglass

    return spinglass


def _addk() -> ModuleType:
    from iclab.studies import addk

    return addk


LOADERS: dict[str, Callable[[], ModuleType]] = {"linreg": _linreg, "induction": _induction, "spinglass": _spinglass, "addk": _addk}


def run_study(name: str, preset: str = "quick", out=None, overrides: list[str] | None = None, device: str = "cpu") -> dict:
    """Run study ``name`` at ``preset`` into ``out`` (default runs/<name>-<preset>) with ``--set``-style overrides;
    returns its summary (numbers and findings), as ``iclab run`` does."""
    from pathlib import Path

    import torch

    folder = Path(out) if out is not None else Path("runs") / f"{name}-{preset}"
    return study_module(name).run(preset, folder, list(overrides or []), torch.device(device))
