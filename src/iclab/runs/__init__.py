"""Loading and listing run directories (see :mod:`iclab.train.rundir` for the layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from iclab.errors import RunDirError
from iclab.models import Transformer
from iclab.train.rundir import RunDir
from iclab.train.checkpoint import load_model_tensors, load_tensors
from iclab.train.config import RunConfig


@dataclass
class Run:
    """A run loaded from disk: typed config, model with weights, metrics table."""

    path: Path
    config: RunConfig
    model: Transformer
    metrics: pd.DataFrame
    summary: dict[str, Any] | None
    step: int
    status: str


@dataclass(frozen=True)
class TrainCurve:
    """A run's training loss at the logged steps."""

    step: list[int]
    loss: list[float]


def train_curve(run: RunDir) -> TrainCurve:
    rows = [r for r in run.read_metrics() if r.get("split") == "train"]
    return TrainCurve([r["step"] for r in rows], [float(r["loss"]) for r in rows])


def load_model(run: RunDir, config: RunConfig, step: int | None = None, device: torch.device | str = "cpu") -> tuple[Transformer, int]:
    """The model's weights at ``step`` (a snapshot), or the latest available: final, else resume checkpoint."""
    model = Transformer(config.model).to(device)
    if step is not None:
        source = run.snapshot(step)
        tensors, _ = load_tensors(source, device)
    elif run.final_model.is_file():
        source = run.final_model
        tensors, _ = load_tensors(source, device)
        step = config.train.steps
    elif run.resume_file.is_file():
        source = run.resume_file
        raw, meta = load_tensors(source, device)
        tensors = {k[6:]: v for k, v in raw.items() if k.startswith("model.")}
        step = int(meta.get("step", 0))
    else:
        raise RunDirError(f"{run.path}: holds no weights yet (no model.safetensors or checkpoint)")
    load_model_tensors(model, tensors, source)
    model.eval()
    return model, step


def load_run(path: Path | str, step: int | None = None, device: torch.device | str = "cpu") -> Run:
    """Load a run directory: ``run.config``, ``run.model`` (eval mode), ``run.metrics`` (DataFrame)."""
    run = RunDir(Path(path))
    config = run.read_config()
    model, at = load_model(run, config, step, device)
    metrics = pd.DataFrame(run.read_metrics())
    return Run(run.path, config, model, metrics, run.read_summary(), at, run.status())


def _is_study_folder(folder: Path) -> bool:
    return (folder / "study.json").is_file() or (folder / "parts").is_dir() or (folder / "sweep_point.json").is_file()


def list_runs(root: Path | str) -> list[dict[str, Any]]:
    """One row per run directory found at or below ``root`` (depth-first, sorted by path).

    A folder whose config.yaml cannot be read as a run config is listed with
    status ``corrupt config: ...``; study folders (their config.yaml holds a
    study's settings) are not runs and are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise RunDirError(f"{root}: no such directory")
    rows = []
    for config_file in sorted(root.rglob("config.yaml")):
        run = RunDir(config_file.parent)
        if _is_study_folder(run.path):
            continue
        try:
            config = run.read_config()
        except RunDirError as err:
            reason = str(err).splitlines()[0].removeprefix(f"{run.config_file}: ")
            rows.append({"path": str(run.path), "task": "-", "model": "-", "steps": "-", "final_loss": None,
                         "status": f"corrupt config: {reason}"})
            continue
        metrics = run.read_metrics()
        train_rows = [r for r in metrics if r.get("split") == "train"]
        m = config.model
        rows.append(
            {
                "path": str(run.path),
                "task": config.task.name,
                "model": f"L{m.n_layers} D{m.d_model} H{m.n_heads}" + (" attn-only" if m.attn_only else ""),
                "steps": f"{train_rows[-1]['step'] if train_rows else 0}/{config.train.steps}",
                "final_loss": train_rows[-1]["loss"] if train_rows else None,
                "status": _status(run),
            }
        )
    return rows


def _status(run: RunDir) -> str:
    try:
        return run.status()
    except RunDirError:
        return "corrupt summary"


def list_snapshots(path: Path | str) -> list[dict[str, Any]]:
    """The weight snapshots of one run: step and file, ascending."""
    run = RunDir(path)
    run.read_config()
    return [{"step": step, "file": str(run.snapshot_file(step))} for step in run.snapshot_steps()]


__all__ = ["Run", "RunDir", "list_runs", "list_snapshots", "load_model", "load_run"]
