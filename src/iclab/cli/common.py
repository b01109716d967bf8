"""What every command shares: the app, the console, progress lines, tables and the help texts used by several."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table


app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags show as flags (typer's rich panels label them "<bool>")
    help="iclab, the in-context learning laboratory: train, probe and dissect in-context learning in transformers.",
)
console = Console()


class _State:
    debug = False


STATE = _State()

DEVICE_HELP = ("Where to compute: auto (cuda, then mps, then cpu), cpu, cuda or mps. With auto or cuda, a Hugging Face "
               "model larger than one GPU's free memory is spread over every GPU here, then CPU (accelerate's device map).")
MAX_MEMORY_HELP = ("Keep at most this much of a Hugging Face model's weights on the device (e.g. 2GiB); the rest is read "
                   "from CPU memory or disk in each pass (accelerate's device map). The numbers are the same.")
SET_HELP = "Override a config key, e.g. --set model.n_layers=4 --set train.lr=3e-4 (repeatable)."


def say(line: str) -> None:
    """Print a progress line and keep it, with the time, in the iclab.log of the folders this command writes."""
    from iclab.progress import record

    record(line)
    console.print(line, markup=False)


def err_say(line: str) -> None:
    """:func:`say` on stderr (a command printing JSON keeps stdout for it)."""
    from iclab.progress import record

    record(line)
    print(line, file=sys.stderr, flush=True)


def print_table(table: Table) -> None:
    """A table at full width: on a terminal as rich draws it; piped, never cut at 80 columns."""
    if console.is_terminal:
        console.print(table)
    else:
        Console(width=10_000).print(table, crop=False)


