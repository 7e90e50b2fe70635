"""`ftm report`: a quarter's or a range's themes, or a measured subject, as one HTML page that
opens offline."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ftm.commands import (
    RootOption,
    plural,
    print_json,
    settings_from,
    stderr,
    writable_store,
)
from ftm.errors import UsageError
from ftm.quarters import parse_quarters
from ftm.report import MeasureReportResult, ReportProgress, ReportResult, report_measure, report_quarters
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # one reduced quarter: reports/2021Q3.html in the storage root
  ftm report 2021Q3

  # a range after `ftm run` (or `ftm trends`): each theme through time
  ftm report 2020Q1..2021Q4

  # a quarter on S3, with a copy on this machine to open
  ftm report 2021Q3 --root s3://my-bucket/ftm --out report.html

  # a subject measured by `ftm measure ... --name supply_chain`, as a page:
  # reports/measure-supply_chain.html
  ftm report --measure supply_chain

  # the same, for two of its quarters only
  ftm report --measure supply_chain 2021Q1..2021Q2

The page needs no network: plotly's charts, the data and the search are inside the file. It
shows the themes ranked by firms with their names and keywords, each theme's firms (exposure,
tone) and sentences, a firm search with each firm's themes and evidence, the reporting-language
themes apart, and for a range each theme's share of firms by quarter and the trend table. A
measure's page shows the subject and how it was measured (model, embedding path, each quarter's
threshold), the share of firms exposed and the mean share by quarter, the firms ranked by
exposure with PERMNO, GVKEY and tone, and a firm search with each firm's sentences about it.
"""


def report(
    ctx: typer.Context,
    quarters: Annotated[
        str | None,
        typer.Argument(
            help="A quarter, as 2023Q1, or quarters: a range 2020Q1..2021Q4 (both included), or "
            "2020Q1,2020Q3. With --measure: some of the measure's quarters (default: all of them).",
            show_default=False,
            metavar="QUARTERS",
        ),
    ] = None,
    measure: Annotated[
        str | None,
        typer.Option(
            "--measure",
            help="The page of a subject measured with `ftm measure ... --name NAME`, not of themes.",
            show_default=False,
            metavar="NAME",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the page to this local file (or into this folder, as report.html, "
            "or measure-NAME.html).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON to stdout.")] = False,
) -> None:
    """Write the themes of a quarter, or of a range, or a measured subject, as one self-contained
    HTML page.

    Every quarter must be reduced (`ftm reduce`; names from `ftm name` are used where there are
    some, keywords elsewhere), and a range must have its trends (`ftm trends`, the last step of
    `ftm run`). The page goes to reports/QUARTERS.html in the storage root; with --measure NAME,
    from measures/NAME/ (`ftm measure`) to reports/measure-NAME.html.
    """
    if measure is None and quarters is None:
        raise UsageError("give QUARTERS, as in: ftm report 2021Q3 (or a measure: ftm report --measure NAME)")
    the_quarters = parse_quarters(quarters) if quarters is not None else None
    settings = settings_from(ctx, storage__root=root)
    store = writable_store(settings)
    result: ReportResult | MeasureReportResult
    if measure is not None:
        result = report_measure(settings, measure, the_quarters, out=out)
    else:
        assert the_quarters is not None
        result = report_quarters(settings, the_quarters, out=out, on_progress=_progress)
    if as_json:
        print_json({**asdict(result), "location": store.uri(result.path)})
    _say(result, store)


def _progress(state: ReportProgress) -> None:
    if state.phase == "quarter" and state.total > 1:
        stderr.print(f"report: {state.quarter} ({state.done + 1} of {state.total})", highlight=False)


def _say(result: ReportResult | MeasureReportResult, store: Store) -> None:
    where = store.uri(result.path)
    if isinstance(result, MeasureReportResult):
        what = (
            f"[green]report of the measure {escape(result.name)}[/]: "
            f"{plural(len(result.quarters), 'quarter')}, {plural(result.n_firms, 'firm')} "
            f"({result.n_exposed:,} exposed in {result.quarters[-1]}), "
            f"{plural(result.n_evidence, 'sentence')} quoted"
        )
    else:
        what = (
            f"[green]report of {escape(result.label)}[/]: {plural(result.n_themes, 'theme')} "
            f"(and {result.n_reporting:,} of reporting language), {plural(result.n_firms, 'firm')}"
        )
    stderr.print(f"{what}, {result.size_bytes / 1e6:.1f} MB\n  → {escape(where)}", highlight=False)
    if result.out:
        stderr.print(f"  → {escape(str(Path(result.out).resolve()))}", highlight=False)
    if not store.is_s3:
        stderr.print(f"  open it: {Path(where).resolve().as_uri()}", highlight=False)
    elif not result.out:
        stderr.print("  for a copy on this machine to open, run it again with --out report.html")
