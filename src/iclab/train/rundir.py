"""The run directory: one training run's config, metrics, checkpoints and summary.

Layout::

    DIR/
      config.yaml                 the RunConfig (the run's identity)
      metrics.jsonl               one JSON object per logged step
      checkpoints/
        resume.safetensors        latest model + optimiser state (metadata: step, ...)
        step_00000000.safetensors weight snapshots (log-spaced and every K steps)
      model.safetensors           final weights (present once complete)
      summary.json                final numbers and status (present once complete)
      tensorboard/                event files (with train.tensorboard: true)

Every file is written atomically, so a run killed at any moment can be resumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclab.config import config_hash, dump_yaml, load_yaml, to_dict
from iclab.errors import ConfigError, RunDirError
from iclab.io import BOOKKEEPING, atomic_write_json, atomic_write_text, lock_folder, output_dir, remove_stale_temporaries
from iclab.train.config import RunConfig


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: {a!r} on disk vs {b!r} asked for"


# Train settings that may change between sessions of one run: the step count
# (a run is extended to more steps) and where metrics are also logged.
NOT_IDENTITY = ("steps", "tensorboard")


def identity(config: RunConfig) -> dict[str, Any]:
    """The config as data without the settings in ``NOT_IDENTITY``."""
    data = to_dict(config)
    data["train"] = {k: v for k, v in data["train"].items() if k not in NOT_IDENTITY}
    return data


def continues(on_disk: RunConfig, asked: RunConfig) -> bool:
    """Whether ``asked`` continues the run of ``on_disk``: the same identity and at least as many steps."""
    return config_hash(identity(on_disk)) == config_hash(identity(asked)) and asked.train.steps >= on_disk.train.steps


def nearest(available: list[int], step: int, k: int = 4) -> list[int]:
    """The ``k`` values of ``available`` closest to ``step``, ascending."""
    return sorted(sorted(available, key=lambda s: (abs(s - step), s))[:k])


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def resume_file(self) -> Path:
        return self.checkpoints / "resume.safetensors"

    @property
    def final_model(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def snapshot_file(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:08d}.safetensors"

    def snapshot_steps(self) -> list[int]:
        """Steps of the weight snapshots on disk, ascending."""
        return sorted(int(p.stem.split("_")[1]) for p in self.checkpoints.glob("step_*.safetensors"))

    def snapshot(self, step: int) -> Path:
        """The snapshot file of ``step``; if there is none, an error naming the nearest steps on disk."""
        path = self.snapshot_file(step)
        if not path.is_file():
            steps = self.snapshot_steps()
            if not steps:
                raise RunDirError(f"{self.path}: has no weight snapshots (train.snapshots / train.checkpoint_every make them)")
            near = ", ".join(str(s) for s in nearest(steps, step))
            raise RunDirError(f"{self.path}: no snapshot at step {step}; nearest: {near} "
                              f"({len(steps)} snapshots from {steps[0]} to {steps[-1]}; `iclab runs {self.path} --snapshots` lists all)")
        return path

    def read_config(self) -> RunConfig:
        if not self.config_file.is_file():
            raise RunDirError(f"{self.path}: not a run directory (no config.yaml)")
        study = self.study()
        if study is not None:
            raise RunDirError(f"{self.path}: holds the {study!r} study, not a training run (its models are runs under "
                              f"{self.path / 'runs'})")
        try:
            return RunConfig.from_dict(load_yaml(self.config_file))
        except ConfigError as err:
            raise RunDirError(f"{self.config_file}: invalid run config ({err})") from None

    def study(self) -> str | None:
        """The study whose folder this is (its ``study.json``), or None."""
        try:
            data = json.loads((self.path / "study.json").read_text())
        except (OSError, ValueError):
            return None
        return data.get("study") if isinstance(data, dict) else None

    def prepare(self, config: RunConfig) -> bool:
        """Create the run directory for ``config``, or check that it holds this config.

        Returns True if the directory already held this run (resume). A
        directory holding another config, or other files, is refused untouched.
        A run asked for with a larger ``train.steps`` and nothing else changed
        is extended: its config is rewritten and training resumes from its end.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path}: is a file, not a folder; give a folder path")
        if self.config_file.is_file():
            on_disk = self.read_config()
            if config_hash(on_disk) == config_hash(config):
                lock_folder(self.path, "training")
                remove_stale_temporaries(self.path)  # a killed writer's leftovers; this process now owns the run
                return True
            if continues(on_disk, config) and (self.resume_file.is_file() or self.read_summary() is None):
                lock_folder(self.path, "training")
                remove_stale_temporaries(self.path)
                if config.train.steps > on_disk.train.steps:
                    self.summary_file.unlink(missing_ok=True)  # the run is unfinished again
                atomic_write_text(self.config_file, dump_yaml(config.to_dict()))
                return True
            diff = _first_difference(to_dict(on_disk), to_dict(config))
            hint = " (a run is extended only to more steps, with nothing else changed)" if diff.startswith("train.steps") else ""
            raise RunDirError(
                f"{self.path} holds a run of a different config ({diff}){hint}; "
                "use another --out, or delete that directory to start over"
            )
        if self.path.exists() and any(p.name not in BOOKKEEPING for p in self.path.iterdir()):
            raise RunDirError(f"{self.path} is not empty and holds no run (no config.yaml); choose an empty or new --out")
        output_dir(self.path)
        lock_folder(self.path, "training")
        atomic_write_text(self.config_file, dump_yaml(config.to_dict()))
        return False

    def read_metrics(self) -> list[dict[str, Any]]:
        """Metrics rows; a torn last line (the process was killed mid-write) is skipped."""
        if not self.metrics_file.is_file():
            return []
        rows = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Keep only rows up to ``step`` (rows after the resume checkpoint are redone)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in rows))

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary_file.is_file():
            return None
        try:
            return json.loads(self.summary_file.read_text())
        except json.JSONDecodeError as err:
            raise RunDirError(f"{self.summary_file}: corrupt summary ({err})") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_file, summary)

    def status(self) -> str:
        """``complete``, ``partial`` (a resumable checkpoint exists), ``new``, or ``diverged``."""
        summary = self.read_summary()
        if summary is not None:
            return str(summary.get("status", "complete"))
        return "partial" if self.resume_file.is_file() else "new"

