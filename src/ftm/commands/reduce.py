"""`ftm reduce`: a quarter's firm topics into cross-firm themes and the firm x theme exposure panel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ftm import layout
from ftm.commands import (
    ProgressDisplay,
    RootOption,
    plural,
    print_json,
    settings_from,
    stderr,
    writable_store,
)
from ftm.commands.batch_job import BackendOption, DetachOption, run_as_job, wants_batch
from ftm.commands.ranges import each_quarter
from ftm.quarters import parse_quarters
from ftm.reduce import ReduceProgress, ReduceResult, reduce_quarter
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # after `ftm submit --quarter 2023Q1` finished
  ftm reduce --quarter 2023Q1

  # a summary as JSON on stdout
  ftm reduce --quarter 2023Q1 --json

  # a quarter on S3
  ftm reduce --quarter 2016Q4 --root s3://my-bucket/ftm

  # only the batches done so far (recorded in the files)
  ftm reduce --quarter 2023Q1 --allow-partial

  # as an AWS Batch job on the CPU queue
  ftm reduce --quarter 2023Q1 --backend batch

Writes themes/NAME/quarter=Q/NAME.parquet, one dataset per NAME: themes (kind theme first,
then reporting language), theme_sentences (the evidence: one row per sentence and theme),
theme_topics, firm_theme_exposure (one row per firm and theme, with PERMNO, GVKEY and the share
of the firm's sentences) and firms. Running it again rewrites the same files. Exit codes: 0 done, 2 the map is
incomplete or the quarter was never submitted, 1 the data breaks its contract.
"""

PHASES = {
    "reading": "reading sentence embeddings",
    "words": "counting words",
    "clustering": "clustering sentences",
    "assigning": "assigning sentences to themes",
    "describing": "keywords, sentences and firm topics",
    "writing": "writing",
    "done": "done",
}


def reduce(
    ctx: typer.Context,
    quarter: Annotated[
        str,
        typer.Option(
            "--quarter",
            help="Calendar quarter, as 2023Q1, or quarters: 2020Q1..2021Q4, 2020Q1,2020Q3.",
            show_default=False,
        ),
    ],
    allow_partial: Annotated[
        bool,
        typer.Option(
            "--allow-partial",
            help="Reduce even if some batches are missing or unfinished; the output says so.",
        ),
    ] = False,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON to stdout.")] = False,
    backend: BackendOption = "local",
    detach: DetachOption = False,
) -> None:
    """Find the themes many firms talk about at once, and each firm's exposure to them.

    Clusters every sentence the map embedded (its embedding and its words, less the quarter's
    mean) into micro-clusters, merges them by average linkage (reduce.min_similarity), and gives
    each sentence the themes it is closest to (reduce.memberships). A theme needs
    reduce.min_firms firms talking about it; reporting language (results, boilerplate) is marked
    kind = reporting. Each theme has keywords, representative sentences from several firms and a
    centroid. Refuses a quarter whose map is incomplete, naming the batches, unless
    --allow-partial.
    """
    quarters = parse_quarters(quarter)
    if len(quarters) > 1:
        each_quarter(
            quarters, lambda one: reduce(ctx, str(one), allow_partial, root, as_json, backend, detach)
        )
        return
    the_quarter = quarters[0]
    settings = settings_from(ctx, storage__root=root)
    if wants_batch(backend):
        command = ["reduce", "--quarter", str(the_quarter), *(["--allow-partial"] if allow_partial else [])]
        run_as_job(settings, command, kind="cpu", detach=detach)
        return
    store = writable_store(settings)
    with _ProgressDisplay(str(the_quarter)) as display:
        result = reduce_quarter(
            settings, the_quarter, allow_partial=allow_partial, on_progress=display.update
        )
    if as_json:
        summary = asdict(result)
        summary["location"] = store.uri(layout.themes_root())
        summary["elapsed_s"] = round(display.elapsed, 3)
        print_json(summary)
    _report(result, store, display.elapsed)


def _report(result: ReduceResult, store: Store, elapsed: float) -> None:
    folder = store.uri(layout.themes_root())
    quarter = f"{layout.PARTITION}={result.quarter}"
    if result.partial:
        stderr.print(
            f"[yellow]partial map[/]: of {result.n_batches} batches, "
            f"{len(result.missing_batches)} had no checkpoint and {len(result.unfinished_batches)} were "
            "unfinished; the files record this (Parquet metadata ftm.reduce, partial = true)",
            highlight=False,
        )
    stderr.print(
        f"[green]reduced {result.quarter}[/] in {elapsed:.1f} s: {result.n_sentences:,} sentences of "
        f"{result.n_firms:,} firms → {result.n_themes - result.n_routine - result.n_reporting:,} theme(s), "
        f"{result.n_routine:,} routine and {result.n_reporting:,} of reporting language; "
        f"{result.n_exposed_firms:,} firms exposed, "
        f"{result.n_exposure_rows:,} panel rows\n"
        f"  → {escape(folder)}/NAME/{quarter}/ for NAME themes, theme_sentences, theme_topics, "
        "firm_theme_exposure and firms (every firm and why it is in the panel or not)",
        highlight=False,
    )
    if result.top_themes:
        stderr.print("  first themes, by salience (how far above its ordinary level):", highlight=False)
    for theme in result.top_themes:
        unusual = "" if theme.salience is None else f"salience {theme.salience:+.2f}, "
        more = ", …" if theme.n_firms > len(theme.example_firms) else ""
        stderr.print(
            f"  theme {theme.theme_id} ({theme.kind}, {unusual}{plural(theme.n_firms, 'firm')}): "
            f"{escape(theme.representation)} — "
            f"{escape(', '.join(theme.example_firms))}{more}",
            highlight=False,
        )
    if result.n_themes == 0:
        stderr.print(
            "[yellow]no theme is talked about by reduce.min_firms firms[/]: with few firms, lower "
            "reduce.min_firms, or reduce.min_similarity for broader themes (FTM_REDUCE__MIN_SIMILARITY)",
            highlight=False,
        )
    if result.n_failed_firms:
        stderr.print(
            f"[yellow]{result.n_failed_firms} firm(s) failed in the map[/] and are not in the panel; "
            f"`{store.command('watch')}` shows why",
            highlight=False,
        )


class _ProgressDisplay(ProgressDisplay):
    """A spinner with the phase on a terminal; a line per phase otherwise (logs, CI)."""

    def __init__(self, quarter: str):
        super().__init__(
            SpinnerColumn(),
            TextColumn("[bold]reduce {task.fields[quarter]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.quarter = quarter
        self.task: int | None = None
        self.phase: str | None = None

    def __enter__(self) -> _ProgressDisplay:
        super().__enter__()
        if self.live:
            self.task = self.progress.add_task("", total=None, quarter=self.quarter)
        return self

    def update(self, state: ReduceProgress) -> None:
        description = PHASES[state.phase]
        if self.live and self.task is not None:
            total = state.total or None
            self.progress.update(self.task, description=description, total=total, completed=state.done)
            return
        if state.phase != self.phase and state.phase != "done":
            stderr.print(f"reduce {self.quarter}: {description} ({self.elapsed:.1f} s)", highlight=False)
        self.phase = state.phase
