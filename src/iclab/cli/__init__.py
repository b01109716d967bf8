"""The ``iclab`` command line: one module per command group (training and runs, head analyses, studies and
reproduce, models), each command a thin layer over library functions a Python user can call too.

Errors a user can fix print one line (``error: ...``) and exit with status 2;
``iclab --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import signal
import sys

import typer

from iclab.cli.common import STATE, app
from iclab.errors import IclabError, Interrupted

# Each module registers its commands on the app; this order is the order of `iclab --help`.
for _group in ("training", "heads", "studies", "models"):
    importlib.import_module(f"iclab.cli.{_group}")


def _version(value: bool) -> None:
    if value:
        import iclab

        print(f"iclab {iclab.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    STATE.debug = debug


class Stopped(BaseException):
    """Ctrl-C or SIGTERM outside a training loop: unwinds the stack (atomic writes leave no partial file).

    A BaseException, so that no ``except Exception`` (a study failure being recorded, for one) swallows it, and not
    a KeyboardInterrupt, which click would turn into a silent exit before :func:`main` could say what was kept.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame) -> None:
    raise Stopped(signum)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2.

    Ctrl-C and SIGTERM stop the command with exit status 130 / 143; whatever
    was finished (checkpoints, study parts, sweep runs) stays on disk.
    """
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        app()
    except Interrupted as err:  # a clean stop, not an error: the checkpoint is saved
        if STATE.debug:
            raise
        print(f"stopped by {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except IclabError as err:
        if STATE.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, Stopped) as err:
        if STATE.debug:
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"stopped by {signal.Signals(signum).name}; everything finished so far is kept on disk", file=sys.stderr)
        sys.exit(128 + int(signum))
