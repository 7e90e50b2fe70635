"""`ftm report`: a quarter's or a range's themes as one HTML page that opens offline."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ftm.commands import (
    QuartersArgument,
    RootOption,
    plural,
    print_json,
    settings_from,
    stderr,
    writable_store,
)
from ftm.quarters import parse_quarters
from ftm.report import ReportProgress, ReportResult, report_quarters
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # one reduced quarter: reports/2021Q3.html in the storage root
  ftm report 2021Q3

  # a range after `ftm run` (or `ftm trends`): each theme through time
  ftm report 2020Q1..2021Q4

  # a quarter on S3, with a copy on this machine to open
  ftm report 2021Q3 --root s3://my-bucket/ftm --out report.html

The page needs no network: plotly's charts, the data and the search are inside the file. It
shows the themes ranked by firms with their names and keywords, each theme's firms (exposure,
tone) and sentences, a firm search with each firm's themes and evidence, the reporting-language
themes apart, and for a range each theme's share of firms by quarter and the trend table.
"""


def report(
    ctx: typer.Context,
    quarters: QuartersArgument,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the page to this local file (or into this folder, as report.html).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON to stdout.")] = False,
) -> None:
    """Write the themes of a quarter, or of a range, as one self-contained HTML page.

    Every quarter must be reduced (`ftm reduce`; names from `ftm name` are used where there are
    some, keywords elsewhere), and a range must have its trends (`ftm trends`, the last step of
    `ftm run`). The page goes to reports/QUARTERS.html in the storage root.
    """
    the_quarters = parse_quarters(quarters)
    settings = settings_from(ctx, storage__root=root)
    store = writable_store(settings)
    result = report_quarters(settings, the_quarters, out=out, on_progress=_progress)
    if as_json:
        print_json({**asdict(result), "location": store.uri(result.path)})
    _say(result, store)


def _progress(state: ReportProgress) -> None:
    if state.phase == "quarter" and state.total > 1:
        stderr.print(f"report: {state.quarter} ({state.done + 1} of {state.total})", highlight=False)


def _say(result: ReportResult, store: Store) -> None:
    where = store.uri(result.path)
    stderr.print(
        f"[green]report of {escape(result.label)}[/]: {plural(result.n_themes, 'theme')} "
        f"(and {result.n_reporting:,} of reporting language), {plural(result.n_firms, 'firm')}, "
        f"{result.size_bytes / 1e6:.1f} MB\n  → {escape(where)}",
        highlight=False,
    )
    if result.out:
        stderr.print(f"  → {escape(str(Path(result.out).resolve()))}", highlight=False)
    if not store.is_s3:
        stderr.print(f"  open it: {Path(where).resolve().as_uri()}", highlight=False)
    elif not result.out:
        stderr.print("  for a copy on this machine to open, run it again with --out report.html")
