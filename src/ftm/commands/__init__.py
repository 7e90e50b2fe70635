"""One module per command. A command parses its options, builds the settings, calls the library,
and renders what it returns; what every command shares is here."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import Progress, ProgressColumn
from typer.core import TyperCommand, TyperGroup

from ftm import migrate
from ftm.settings import FtmSettings, load_settings
from ftm.storage import Store

# The storage-root flag every command that touches storage takes (storage.root).
RootOption = Annotated[
    str | None,
    typer.Option("--root", help="Storage root: a folder or s3://bucket/prefix.", show_default=False),
]

# The quarters a command works on (prefetch, run, trends; report has its own, optional with
# --measure), as `ftm.quarters.parse_quarters` reads them.
QuartersArgument = Annotated[
    str,
    typer.Argument(
        help="A quarter, as 2023Q1, or quarters: a range 2020Q1..2021Q4 (both included), or 2020Q1,2020Q3.",
        show_default=False,
    ),
]

# Where a prefetch reads transcripts (prefetch, run).
SourceOption = Annotated[
    str | None, typer.Option("--source", help="Where transcripts come from: wrds (the default) or files.")
]
InputOption = Annotated[
    str | None,
    typer.Option(
        "--input",
        help="A .jsonl(.gz) or .csv(.gz) file of transcripts, a path or s3://…; implies --source files.",
        show_default=False,
    ),
]
FormatOption = Annotated[str | None, typer.Option("--format", help="Files source: auto, jsonl or csv.")]

# The run a command is about (watch, cancel): default the latest.
RunIdArgument = Annotated[
    str | None,
    typer.Argument(help="The run, as `ftm submit` printed it; default: the latest run.", show_default=False),
]


class _HumanConsole(Console):
    """A console that draws at the terminal's width on a terminal, and writes whole lines anywhere
    else (logs, pipes, CI): at rich's default of 80 columns a line was cut mid-path there."""

    # Wide enough for any line ftm writes; whatever reads the log wraps it if it likes.
    LOG_WIDTH = 10_000

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(self.LOG_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# Human output goes to stderr, so that stdout carries only `--json` documents.
stderr = _HumanConsole(stderr=True)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 batch', '2 batches': a count and its noun, as a person writes them."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def reflow(text: str | None) -> str | None:
    """Help text as typer's rich help needs it: the lines of each paragraph joined, so that it
    wraps at the terminal's width rather than where the source broke it (typer keeps a single
    line break in rich help); an indented line, an example, keeps a line of its own."""
    if text is None:
        return None
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.startswith(" ") and not lines[-1].startswith(" "):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


class _ReadableHelp:
    """What every ftm command's help shares: reflowed paragraphs, and no type beside a flag
    (typer shows `<bool>` there, as if a flag took a value)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)
        self.epilog = reflow(self.epilog)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""  # shown instead of the type
        return params


class Command(_ReadableHelp, TyperCommand):
    """The class of every ftm command (`app.command(cls=Command)`)."""


class Group(_ReadableHelp, TyperGroup):
    """The class of ftm and its command groups (`typer.Typer(cls=Group)`)."""


class ProgressDisplay:
    """A command's progress: a rich bar on a terminal, a plain line now and then otherwise
    (container logs, CI). Each command's display names its columns and says what a report means;
    this holds what they share: the bar's life and the pace of plain lines."""

    def __init__(self, *columns: ProgressColumn | str):
        self.live = stderr.is_terminal
        self.progress = Progress(*columns, console=stderr, transient=True)
        self.started = time.monotonic()
        self._last_line = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self):  # the subclass's type, for `with Display(...) as display`
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def line_due(self, every_s: float, now: bool = False) -> bool:
        """Whether a plain line is due: `every_s` after the last one, or `now`."""
        clock = time.monotonic()
        if now or clock - self._last_line >= every_s:
            self._last_line = clock
            return True
        return False


@dataclass(frozen=True)
class CliContext:
    config: Path | None


def settings_from(ctx: typer.Context, **flags: Any) -> FtmSettings:
    """The settings, with the flags the user gave (dotted keys, None when not given) on top."""
    return load_settings(_context(ctx).config, overrides=_nest(flags))


def writable_store(settings: FtmSettings) -> Store:
    """The storage root, checked writable before a command that writes starts any work, and
    moved to the current layout if an earlier ftm wrote it (`ftm.migrate`)."""
    store = Store.from_settings(settings.storage)
    store.check_writable()
    moved = migrate.upgrade(store)
    if moved:
        where = escape(store.uri())
        stderr.print(f"moved {plural(moved, 'file')} of an earlier ftm's layout in {where}", highlight=False)
    return store


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
