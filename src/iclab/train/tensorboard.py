"""Optional TensorBoard logging of a run's metrics (``train.tensorboard: true``).

Event files go to ``DIR/tensorboard/``; ``tensorboard --logdir DIR`` shows them.
Needs the ``tensorboard`` package (``pip install 'iclab[tensorboard]'``); the
metrics are always in ``metrics.jsonl`` as well.
"""

from __future__ import annotations

from typing import Any

from iclab.errors import IclabError


def require_tensorboard() -> None:
    """A one-line error if TensorBoard logging is asked for but cannot be done."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise IclabError("train.tensorboard: true needs the tensorboard package: pip install 'iclab[tensorboard]'") from None


class TensorBoard:
    """Writes each metrics row as scalars ``<split>/<name>`` at its step; does nothing when off."""

    def __init__(self, run, enabled: bool):
        self.writer = None
        if enabled:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def __enter__(self) -> "TensorBoard":
        return self

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        split = row.get("split", "train")
        for key, value in row.items():
            if key not in ("step", "split") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{split}/{key}", value, row["step"])

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()
