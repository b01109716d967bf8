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


# The command-line parser's errors (typer ships its own copy of click; older releases use click itself): a wrong
# option or argument (UsageError) and any error click reports (ClickException).
UsageError = typer.BadParameter.__mro__[1]
ClickException = UsageError.__mro__[1]
assert (UsageError.__name__, ClickException.__name__) == ("UsageError", "ClickException")


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
        code = app(standalone_mode=False)
    except UsageError as err:  # a wrong option or argument: one line, like every other user error
        if STATE.debug:
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare `iclab`: its help
            print(err.format_message())
            sys.exit(0)
        where = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
        print(f"error: {err.format_message().rstrip('.')}{where}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Interrupted as err:  # a clean stop, not an error: the checkpoint is saved
        if STATE.debug:
            raise
        print(f"stopped by {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (IclabError, ClickException) as err:
        if STATE.debug:
            raise
        print(f"error: {err.format_message() if isinstance(err, ClickException) else err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, typer.Abort, Stopped) as err:
        if STATE.debug:
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"stopped by {signal.Signals(signum).name}; everything finished so far is kept on disk", file=sys.stderr)
        sys.exit(128 + int(signum))
    sys.exit(code if isinstance(code, int) else 0)
