"""Errors a user can act on.

Every error raised for bad input derives from :class:`IclabError`. The command
line prints its message as one line and exits with status 2; a library user
catches it like any exception. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal


class IclabError(Exception):
    """Bad input or state that the user can fix; the message says how."""

    exit_code = 2


class ConfigError(IclabError):
    """A config key, type or value is not allowed."""


class RunDirError(IclabError):
    """A run directory is missing, corrupt, or holds a different config."""


class OlderFormatError(RunDirError):
    """A result file written by an older iclab in a format this one does not read: re-run to bring it up to date."""


class CheckpointError(RunDirError):
    """A checkpoint is missing, corrupt, or not a safetensors file."""


class TrainingDiverged(IclabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class Interrupted(IclabError):
    """Ctrl-C or SIGTERM during training: a checkpoint was saved; re-run the command to resume.

    Exit status 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM). The message starts with the signal's
    name and the command line prints it after "stopped by " (a clean stop, not an error).
    """

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)
