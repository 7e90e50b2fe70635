"""`ftm trends`: a range of reduced quarters into themes followed through time, with tone."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape

from ftm import layout
from ftm.commands import QuartersArgument, RootOption, print_json, settings_from, stderr, writable_store
from ftm.quarters import parse_quarters
from ftm.storage import Store
from ftm.trends import TrendsProgress, TrendsResult, trends_range

EXAMPLES = """\
Examples:

  # after every quarter of the range was reduced (`ftm run` does all of it)
  ftm trends 2020Q1..2021Q4

  # a list of quarters, and a summary as JSON on stdout
  ftm trends 2020Q1,2020Q3,2021Q1 --json

  # flags against the one quarter before (the default compares with two)
  FTM_TRENDS__WINDOW=1 ftm trends 2021Q3..2021Q4

Writes trends/RANGE/lineages.parquet (each theme's lineage and its parent),
firm_theme_quarter.parquet (the long panel: firm x theme x quarter with PERMNO, GVKEY, the call
date, exposure and Loughran-McDonald tone) and trends.parquet (lineage x quarter: the measured
share of firms talking about the lineage's subject, whether or not a theme of that quarter
joined it; the theme it had, with its salience; tone and its change; momentum and the emerging
or fading flag). Lineage ids are kept in trends/_lineages.json: a quarter added later never
renumbers the others. Running it again rewrites the same files.
"""


def trends(
    ctx: typer.Context,
    quarters: QuartersArgument,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON to stdout.")] = False,
) -> None:
    """Follow the themes of a range of quarters through time: lineages, a panel with tone, trends.

    A theme joins the lineage of an earlier quarter's theme when their centroids, each less its
    quarter's mean, have a cosine of at least trends.min_similarity (one theme per lineage and
    quarter); the others start lineages, with a parent at trends.parent_similarity. Each lineage
    is then measured in every quarter from the sentence embeddings the map stored: the firms with
    at least reduce.firm_min_sentences sentences about its subject. It is emerging in a quarter
    when, among firms with calls in the trends.window quarters before, its share is at least
    trends.change_ratio times theirs then and the rise is significant (McNemar), fading the other
    way round; a quarter is flagged only when all of those quarters are in the range. Every
    quarter must be reduced first.
    """
    the_quarters = parse_quarters(quarters)
    settings = settings_from(ctx, storage__root=root)
    store = writable_store(settings)
    result = trends_range(settings, the_quarters, on_progress=_progress)
    if as_json:
        print_json({**asdict(result), "location": store.uri(layout.trends_folder(result.label))})
    report(result, store)


def _progress(state: TrendsProgress) -> None:
    if state.phase in ("calibrating", "measuring"):
        stderr.print(
            f"trends: {state.phase} {state.quarter} ({state.done + 1} of {state.total})", highlight=False
        )


def report(result: TrendsResult, store: Store) -> None:
    """What `ftm trends` (and `ftm run` at its end) says when done."""
    newly = f"; newly matched: {', '.join(result.newly_matched)}" if result.newly_matched else ""
    stderr.print(
        f"[green]trends of {escape(result.label)}[/]: {result.n_lineages:,} lineages, "
        f"{result.n_continuing:,} of them in two quarters or more{newly}; "
        f"{result.n_panel_rows:,} panel rows\n"
        f"  → {escape(store.uri(layout.trends_folder(result.label)))}/ "
        "(lineages, firm_theme_quarter, trends)",
        highlight=False,
    )
    flagged = [
        f"{quarter}: {result.emerging[quarter]} emerging, {result.fading[quarter]} fading"
        for quarter in result.quarters
        if result.emerging[quarter] or result.fading[quarter]
    ]
    if flagged:
        stderr.print(f"  investment themes: {'; '.join(flagged)}", highlight=False)
    if result.rising:
        stderr.print(
            f"  rising most in {result.rising[0]['quarter']} (share of firms, momentum):", highlight=False
        )
        for row in result.rising[:5]:
            salience = "" if row["salience"] is None else f", salience {row['salience']:.2f}"
            stderr.print(
                f"    lineage {row['lineage_id']}: {escape(', '.join(row['keywords']))} "
                f"{row['share_of_firms']:.1%}, {row['momentum']:+.1%}{salience} ({row['trend']})",
                highlight=False,
            )
    if result.unflagged_reason:
        stderr.print(f"  {result.unflagged_reason}", highlight=False)
