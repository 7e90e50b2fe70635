"""`ftm map-batch`: one batch of a submitted quarter; the one entrypoint every backend runs."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
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
from ftm.commands import ProgressDisplay, RootOption, print_json, settings_from, stderr
from ftm.errors import DataError, PartialFailure, UsageError
from ftm.map import BatchResult, MapProgress, run_batch
from ftm.quarters import Quarter
from ftm.storage import Store

# AWS Batch gives each child of an array job its index here; the index is the plan's line.
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"

EXAMPLES = """\
Examples:

  # one batch of the quarter's plan, by its id or its number
  ftm map-batch --quarter 2023Q1 --batch-id batch_007
  ftm map-batch --quarter 2023Q1 --batch-id 7 --root s3://my-bucket/ftm --json

  # as an AWS Batch array child: the index picks the batch
  AWS_BATCH_JOB_ARRAY_INDEX=7 ftm map-batch --quarter 2023Q1

  # what the batch backend runs
  AWS_BATCH_JOB_ARRAY_INDEX=7 ftm map-batch --quarter 2023Q1 --partial-ok \\
    --batches manifests/quarter=2023Q1/arrays/RUN-0.json

`ftm submit` runs this for every batch; run it by hand to redo or debug one batch. A killed
batch goes on where its checkpoint stopped when it runs again. Exit codes: 0 every firm done
(with topics, or skipped with a reason), 3 some firms failed (recorded in the batch's
_failures.json) or the circuit breaker stopped the batch, 1 an error, 130 interrupted.
"""


def map_batch(
    ctx: typer.Context,
    quarter: Annotated[
        str, typer.Option("--quarter", help="Calendar quarter, as 2023Q1.", show_default=False)
    ],
    batch_id: Annotated[
        str | None,
        typer.Option(
            "--batch-id",
            help=f"Batch id (batch_007) or index (7); default: the index in ${ARRAY_INDEX_ENV}.",
            show_default=False,
        ),
    ] = None,
    index_offset: Annotated[
        int,
        typer.Option(
            "--index-offset",
            help=f"Added to ${ARRAY_INDEX_ENV}: AWS Batch array jobs hold at most 10,000 children.",
        ),
    ] = 0,
    batches: Annotated[
        str | None,
        typer.Option(
            "--batches",
            help=f"A JSON list of batch ids under the storage root; ${ARRAY_INDEX_ENV} picks one "
            "(how the batch backend's array jobs name their batches).",
            show_default=False,
        ),
    ] = None,
    partial_ok: Annotated[
        bool,
        typer.Option(
            "--partial-ok",
            help="Exit 0 when the batch finished with some firms failed (recorded), so that an "
            "AWS Batch job succeeds and the jobs after it run; a tripped breaker still exits 3.",
        ),
    ] = False,
    root: RootOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the batch's result as JSON to stdout.")
    ] = False,
) -> None:
    """Find the topics of every firm of one batch, from the prefetched quarter.

    Reads the batch's line of the plan (manifests/quarter=Q/batches.jsonl), loads only the
    chunks that hold its firms, embeds a part's firms at once and fits each firm's topics,
    then writes a part file every map.firms_per_part firms and a checkpoint after it. A firm
    that fails is recorded and the batch goes on, within the failure policy (map settings).
    """
    the_quarter = Quarter.parse(quarter)
    settings = settings_from(ctx, storage__root=root)
    batch = _batch(batch_id, index_offset)
    if batches is not None and isinstance(batch, int):
        batch = _listed_batch(Store.from_settings(settings.storage), batches, batch)
    with interrupt_once(), _Display(str(batch)) as display:
        result = run_batch(settings, the_quarter, batch, on_progress=display.update)
    folder = layout.firm_topics_folder(the_quarter)
    if as_json:
        print_json(_summary(result))
    _report(result, folder, partial_ok)


def _batch(batch_id: str | None, offset: int) -> str | int:
    if batch_id is not None:
        return batch_id.strip()
    index = os.environ.get(ARRAY_INDEX_ENV)
    if index is None:
        raise UsageError(f"say which batch: --batch-id batch_007 (or 7), or set {ARRAY_INDEX_ENV}")
    if not index.strip().isdigit():
        raise UsageError(f"{ARRAY_INDEX_ENV}={index!r} is not a batch index")
    return int(index) + offset


def _listed_batch(store: Store, path: str, index: int) -> str:
    listed = store.read_json(path)
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        raise DataError(f"{store.uri(path)} is not a JSON list of batch ids")
    if not 0 <= index < len(listed):
        raise UsageError(f"index {index} is outside {store.uri(path)}, which lists {len(listed)} batches")
    return listed[index]


@contextmanager
def interrupt_once() -> Iterator[None]:
    """Ctrl-C and SIGTERM (AWS Batch stopping a job, the local backend's cancel) become one
    KeyboardInterrupt; later signals are ignored, so that the last records are written even when
    the signal comes twice (a terminal's Ctrl-C and the local backend's stop both reach a worker)."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summary(result: BatchResult) -> dict:
    return {
        "batch_id": result.batch_id,
        "state": result.state,
        "already_finished": result.already_finished,
        "attempt": result.attempt,
        "resumed_at_firm": result.resumed_at,
        "firms_total": result.firms_total,
        "firms_done": result.firms_done,
        "firms_skipped": result.firms_skipped,
        "firms_failed": result.firms_failed,
        "failures": [failure.to_json() for failure in result.failures],
        "part_files": result.part_files,
        "message": result.message,
    }


def _report(result: BatchResult, folder: str, partial_ok: bool = False) -> None:
    name = result.batch_id
    if result.state == "failed":
        raise PartialFailure(f"{name} stopped: {result.message}")
    if result.already_finished:
        stderr.print(f"{name} was already finished; nothing to do.", highlight=False)
    else:
        resumed = f", resumed at firm {result.resumed_at:,}" if result.resumed_at else ""
        stderr.print(
            f"[green]{name} finished[/]: {result.firms_done:,} of {result.firms_total:,} firms done "
            f"({result.firms_skipped:,} without topics), {len(result.part_files)} part file(s) in "
            f"{escape(folder)}/{resumed}",
            highlight=False,
        )
    if result.failures:
        first = result.failures[0]
        if partial_ok:
            stderr.print(
                f"[yellow]{result.firms_failed} firm(s) of {name} failed[/], e.g. {escape(first.firm_id)}: "
                f"{escape(first.error_type)}: {escape(first.message)} (all in {name}_failures.json)",
                highlight=False,
            )
            return
        raise PartialFailure(
            f"{result.firms_failed} firm(s) of {name} failed, e.g. {first.firm_id}: {first.error_type}: "
            f"{first.message} (all in {name}_failures.json)"
        )


class _Display(ProgressDisplay):
    """A progress bar on a terminal; a count line every so often otherwise (container logs)."""

    PLAIN_EVERY_S = 30.0

    def __init__(self, batch: str):
        super().__init__(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[batch]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("firms · {task.fields[failed]} failed · {task.fields[rate]:.1f} firms/min"),
            TimeElapsedColumn(),
        )
        self.batch = batch
        self.task = None

    def update(self, state: MapProgress) -> None:
        self.batch = state.batch_id
        description = "loading the models" if state.phase == "loading" else ""
        if self.live:
            if self.task is None:
                self.task = self.progress.add_task(description, batch=self.batch, failed=0, rate=0.0)
            self.progress.update(
                self.task,
                description=description,
                total=state.firms_total,
                completed=state.firms_done + state.firms_failed,
                failed=state.firms_failed,
                rate=state.rate_per_s * 60,
            )
            return
        if self.line_due(self.PLAIN_EVERY_S, now=state.phase != "processing"):
            stderr.print(
                f"{state.batch_id}: {description or f'{state.firms_done:,}/{state.firms_total:,} firms done'}"
                f", {state.firms_failed} failed, {state.rate_per_s * 60:.1f} firms/min",
                highlight=False,
            )
