"""One module per command. A command parses its options, builds the settings, calls the library,
and renders what it returns; what every command shares is here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ftm.settings import FtmSettings, load_settings

# The storage-root flag every command that touches storage takes (storage.root).
RootOption = Annotated[
    str | None,
    typer.Option("--root", help="Storage root: a folder or s3://bucket/prefix.", show_default=False),
]

# The run a command is about (watch, cancel): default the latest.
RunIdArgument = Annotated[
    str | None,
    typer.Argument(help="The run, as `ftm submit` printed it; default: the latest run.", show_default=False),
]

# Human output goes to stderr, so that stdout carries only `--json` documents.
stderr = Console(stderr=True)


@dataclass(frozen=True)
class CliContext:
    config: Path | None


def settings_from(ctx: typer.Context, **flags: Any) -> FtmSettings:
    """The settings, with the flags the user gave (dotted keys, None when not given) on top."""
    return load_settings(_context(ctx).config, overrides=_nest(flags))


def config_file(ctx: typer.Context) -> Path | None:
    return _context(ctx).config


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _context(ctx: typer.Context) -> CliContext:
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, CliContext) else CliContext(config=None)


def _nest(flags: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        *sections, key = dotted.split("__")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return nested
