"""The four studies. Each built study is a package ``iclab.studies.<name>`` declaring a
:class:`~iclab.studies.runner.Study` (``STUDY``: presets, models, parts, claims, figures) whose ``run(preset, out,
overrides, device, log=print)`` writes ``out/config.yaml``, cached parts, figures and, last, ``out/summary.json``
(numbers, typed claims and their ``findings`` lines), and returns the summary. ``study(name)`` is the registry.
A study not built yet is listed with ``built=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from iclab.errors import IclabError

if TYPE_CHECKING:
    from iclab.studies.runner import Study


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


def study(name: str) -> "Study":
    """The :class:`~iclab.studies.runner.Study` of a built study; a clear error for an unknown or unbuilt one."""
    if name not in STUDIES:
        raise IclabError(f"study {name!r} is unknown; studies: {', '.join(STUDIES)}")
    if not STUDIES[name].built:
        built = [n for n, s in STUDIES.items() if s.built]
        raise IclabError(f"study {name!r} is not built yet; built studies: {', '.join(built) or 'none so far'}")
    return LOADERS[name]()


# Each study, imported when first asked for (they pull in torch and plotting); explicit imports so that a reader and
# a type checker can follow reproduce -> study.
def _linreg() -> "Study":
    from iclab.studies.linreg import STUDY

    return STUDY


def _induction() -> "Study":
    from iclab.studies.induction import STUDY

    return STUDY


def _spinglass() -> "Study":
    from iclab.studies.spinglass import STUDY

    return STUDY


def _addk() -> "Study":
    from iclab.studies.addk import STUDY

    return STUDY


LOADERS: dict[str, Callable[[], "Study"]] = {"linreg": _linreg, "induction": _induction, "spinglass": _spinglass, "addk": _addk}


def run_study(name: str, preset: str = "quick", out=None, overrides: list[str] | None = None, device: str = "cpu") -> dict:
    """Run study ``name`` at ``preset`` into ``out`` (default runs/<name>-<preset>) with ``--set``-style overrides;
    returns its summary (numbers and findings), as ``iclab run`` does."""
    from pathlib import Path

    import torch

    folder = Path(out) if out is not None else Path("runs") / f"{name}-{preset}"
    return study(name).run(preset, folder, list(overrides or []), torch.device(device))
