"""`ftm config`: the effective settings and where each value comes from."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ftm.commands import config_file, print_json, stderr
from ftm.settings import explain_settings

EXAMPLES = """\
Examples:

  # every setting, its value and its source
  ftm config

  # one setting, as JSON
  FTM_STORAGE__ROOT=s3://bucket/ftm ftm config --json | jq '."storage.root"'

The table goes to stderr; --json prints one object to stdout, each setting's dotted name to its
value and source. Every setting, with its default and what it does: ftm.toml in ftm's checkout.
"""


def show_config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """Show the effective settings, secrets masked, and which source set each value.

    Sources, strongest first: flag, env (FTM_* variables, __ nests), toml (--config or
    ./ftm.toml), default.
    """
    rows = explain_settings(config_file(ctx))
    if as_json:
        print_json({key: {"value": value, "source": source} for key, value, source in rows})
        return
    table = Table("setting", "value", "source", box=None, pad_edge=False)
    for key, value, source in rows:
        table.add_row(
            escape(key), escape(_show(value)), source, style=None if source == "default" else "bold"
        )
    stderr.print(table)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "[]"
    return "" if value is None else str(value)
