"""`ftm watch`: a run's batches, live. The drawing is here; the state comes from `ftm.runs.state`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ftm import layout
from ftm.backends import Backend, open_backend
from ftm.commands import RootOption, plural, print_json, settings_from, stderr
from ftm.errors import UsageError
from ftm.quarters import RANGE_SEPARATOR, Quarter, parse_quarters, quarters_label
from ftm.runs import ENDED, BatchView, RangeObserver, RangeSnapshot, RunObserver, RunSnapshot, read_run
from ftm.settings import FtmSettings
from ftm.storage import Store

POLL_S = 2.0
# AWS Batch is polled less often than local progress files: its API is rate-limited.
BATCH_POLL_S = 15.0
STATE_STYLES = {
    "pending": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "retrying": "yellow",
    "stopped": "magenta",
}
COLUMNS = ("batch", "state", "firms done", "failed (last reason)", "attempts", "firms/min", "elapsed", "ETA")

EXAMPLES = """\
Examples:

  # the latest run
  ftm watch

  # a run by its id, on S3
  ftm watch 2023Q1-20240105T101500Z-3f2a --root s3://my-bucket/ftm

  # one snapshot as JSON, then exit
  ftm watch --json | jq '.totals'

  # a range, a row per quarter (each one's latest run)
  ftm watch 2020Q1..2021Q4

Ends by itself when the run ends: exit 0 if every firm got topics or was skipped with a
reason, 3 if some firms or batches failed, 5 if the run was stopped (Ctrl-C in `ftm submit`,
`ftm cancel`) with none failed. Ctrl-C stops watching; the run goes on.
"""


def watch(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN_ID|QUARTERS]",
            help="The run, as `ftm submit` printed it (default: the latest run); or quarters "
            "(2020Q1..2021Q4, 2020Q1,2020Q3): each quarter's latest run, a row per quarter.",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one snapshot of the run as JSON to stdout and exit.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            help=f"Seconds between looks (default {POLL_S:g}; {BATCH_POLL_S:g} on the batch backend).",
            min=0.2,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show a run's batches as a live table until the run ends.

    One row per batch: state (pending, running, succeeded, failed, retrying, stopped), firms
    done of the batch's firms, failed firms with the last reason, attempts, firms per minute,
    elapsed time and ETA; the footer holds the totals and the run's ETA. Given quarters, one
    row per quarter instead, until every submitted quarter's run has ended. Without a terminal,
    one line per change.
    """
    settings = settings_from(ctx, storage__root=root)
    store = Store.from_settings(settings.storage)
    if target is not None and _names_quarters(target):
        code = watch_quarters(settings, store, parse_quarters(target), as_json, interval)
        if code:
            raise typer.Exit(code)
        return
    run = read_run(store, target)
    observer = RunObserver(store, run, open_backend(run.backend, settings))
    if as_json:
        print_json(observer.snapshot().to_json())
        return
    try:
        snapshot = follow(observer, interval or (BATCH_POLL_S if run.backend == "batch" else POLL_S))
    except KeyboardInterrupt:
        stderr.print(
            f"stopped watching; the run goes on. Again: {store.command(f'watch {run.run_id}')}",
            highlight=False,
        )
        return
    code = report_end(snapshot, store)
    if code:
        raise typer.Exit(code)


# What Ctrl-C does, as the table's caption says it: `watch` and a Batch run's `submit` only stop
# following; a local run's `submit` stops its workers (they are threads and children of it).
CTRL_C_DETACHES = "Ctrl-C stops watching; the run goes on"
CTRL_C_STOPS = "Ctrl-C stops the workers (what they finished is kept)"


def follow(observer: RunObserver, interval: float = POLL_S, ctrl_c: str = CTRL_C_DETACHES) -> RunSnapshot:
    """Draws the run until it ends, and returns its last snapshot; Ctrl-C is the caller's, and
    `ctrl_c` says in the caption what it does."""
    return _poll(observer, interval, lambda snapshot: render(snapshot, ctrl_c), _PlainLines().show)


def _poll(observer: Any, interval: float, draw: Callable[[Any], Table], show: Callable[[Any], None]) -> Any:
    """Takes `observer`'s snapshots until one has ended, and returns it: drawn by `draw` as a live
    table on a terminal, else handed to `show`, which prints what changed (logs, pipes)."""
    snapshot = observer.snapshot()
    if stderr.is_terminal:
        with Live(draw(snapshot), console=stderr, refresh_per_second=4, transient=False) as live:
            while not snapshot.ended:
                time.sleep(interval)
                snapshot = observer.snapshot()
                live.update(draw(snapshot))
        return snapshot
    show(snapshot)
    while not snapshot.ended:
        time.sleep(interval)
        snapshot = observer.snapshot()
        show(snapshot)
    return snapshot


def render(snapshot: RunSnapshot, ctrl_c: str = CTRL_C_DETACHES, width: int | None = None) -> Table:
    """The run as a table: one row per batch, totals in the footer."""
    states = _states(snapshot)
    caption = "ended" if snapshot.ended else f"updated {snapshot.taken_at:%H:%M:%S} UTC · {ctrl_c}"
    if snapshot.followers:
        caption = f"then {_followers(snapshot)} · {caption}"
    table = Table(
        title=f"run {escape(snapshot.run_id)} · {snapshot.quarter} · {snapshot.backend} backend",
        caption=caption,
        show_footer=True,
        expand=False,
    )
    costs = snapshot.cost_usd is not None or snapshot.estimated_cost_usd is not None
    ended = snapshot.ended
    footer = {
        "batch": plural(len(snapshot.batches), "batch", "batches"),
        "state": states,
        "firms done": f"{snapshot.firms_done:,}/{snapshot.firms_total:,}",
        "failed (last reason)": f"{snapshot.firms_failed:,}",
        "attempts": "",
        # An ended run has no pace and nothing left: a dash, not "0.0" and "0:00".
        "firms/min": "–" if ended else f"{snapshot.rate_per_min:.1f}",
        "elapsed": "",
        "ETA": "–" if ended else duration(snapshot.eta_s),
        "cost": _cost_footer(snapshot),
    }
    shown = _columns_that_fit(COLUMNS + (("cost",) if costs else ()), width or stderr.width)
    for name in shown:
        numeric = name in ("firms done", "attempts", "firms/min", "elapsed", "ETA", "cost")
        table.add_column(
            name,
            footer=footer[name],
            justify="right" if numeric else "left",
            # The states' footer ("1 succeeded, 1 failed") may wrap; a state itself fits its minimum.
            no_wrap=name not in ("failed (last reason)", "state"),
            min_width=COLUMN_MIN_WIDTH.get(name),
            max_width=60 if name == "failed (last reason)" else None,
            overflow="fold" if name == "failed (last reason)" else "ellipsis",
        )
    for batch in snapshot.batches:
        cells = {
            "batch": batch.batch_id,
            "state": Text(batch.state, style=STATE_STYLES[batch.state]),
            "firms done": f"{batch.firms_done:,}/{batch.firms_total:,}",
            "failed (last reason)": Text(_failed(batch)),
            "attempts": str(batch.attempts),
            "firms/min": f"{batch.rate_per_min:.1f}",
            "elapsed": duration(batch.elapsed_s),
            "ETA": "–" if batch.state in ENDED else duration(batch.eta_s),
            "cost": dollars(batch.cost_usd),
        }
        table.add_row(*(cells[name] for name in shown))
    return table


# The narrowest each column may be, so that a narrow terminal never cuts a state to "succeed…"
# or squeezes the reasons to nothing; the other columns give way instead (COLUMNS_DROPPED).
COLUMN_MIN_WIDTH = {"batch": 9, "state": 9, "firms done": 9, "failed (last reason)": 16}
# Columns left out when the terminal is too narrow for all, the first first.
COLUMNS_DROPPED = ("attempts", "elapsed", "cost", "firms/min", "ETA")


def _columns_that_fit(columns: tuple[str, ...], width: int) -> tuple[str, ...]:
    def needed(kept: tuple[str, ...]) -> int:  # each column's width and its borders and padding
        return 1 + sum(max(COLUMN_MIN_WIDTH.get(name, 0), len(name)) + 3 for name in kept)

    kept = columns
    for name in COLUMNS_DROPPED:
        if needed(kept) <= width:
            break
        kept = tuple(column for column in kept if column != name)
    return kept


def dollars(amount: float | None) -> str:
    return "–" if amount is None else f"${amount:,.2f}"


def _cost_footer(snapshot: RunSnapshot) -> str:
    spent = dollars(snapshot.cost_usd)
    if snapshot.estimated_cost_usd is None:
        return spent
    return f"{spent} (est. {dollars(snapshot.estimated_cost_usd)})"


def _followers(snapshot: RunSnapshot) -> str:
    parts = []
    for what, job in snapshot.followers.items():
        reason = f" ({job.reason})" if job.reason and job.state in ("failed", "retrying") else ""
        parts.append(f"{what}: {job.state}{reason}")
    return ", then ".join(parts)


def report_end(snapshot: RunSnapshot, store: Store) -> int:
    """Says how the run ended and returns the exit code: 0, 3 when firms or batches failed, 5
    when it was stopped before the end with nothing failed."""
    done = snapshot.count("succeeded")
    how = "was stopped before the end" if snapshot.stopped else "ended"
    with_topics = snapshot.firms_done - snapshot.firms_skipped  # a skipped firm is done, not mapped
    stderr.print(
        f"run {snapshot.run_id} {how}: {done} of {plural(len(snapshot.batches), 'batch', 'batches')} "
        f"succeeded; of {plural(snapshot.firms_total, 'firm')}, {with_topics:,} got topics, "
        f"{snapshot.firms_skipped:,} were skipped with a reason, {snapshot.firms_failed:,} failed",
        highlight=False,
        style="green" if snapshot.succeeded else "yellow",
    )
    if snapshot.followers:
        stderr.print(f"  then {_followers(snapshot)}", highlight=False, markup=False)
    if snapshot.cost_usd is not None:
        stderr.print(f"  cost so far ≈ {dollars(snapshot.cost_usd)} of Spot instance time", highlight=False)
    quarter = Quarter.parse(snapshot.quarter)
    if snapshot.firms_failed:
        stderr.print(
            f"  failed firms and their reasons: {layout.progress_folder(quarter)}/batch_NNN_failures.json",
            highlight=False,
        )
    if not snapshot.succeeded and (snapshot.count("failed") or snapshot.count("stopped")):
        stderr.print(
            "  resubmit to go on (finished batches are skipped): "
            f"{store.command(f'submit --quarter {quarter}')}",
            highlight=False,
        )
    return snapshot.exit_code


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _failed(batch: BatchView) -> str:
    if batch.state in ("failed", "stopped") and batch.message:
        reason = batch.message
    else:
        reason = batch.last_failure or batch.message or ""
    if not batch.firms_failed:  # why a batch failed, stopped, waits for capacity or is retried
        return batch.message or ""
    return f"{batch.firms_failed:,} · {reason}" if reason else f"{batch.firms_failed:,}"


class _PlainLines:
    """One line per batch whose state or counts changed, for logs and pipes."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple] = {}

    def show(self, snapshot: RunSnapshot) -> None:
        for batch in snapshot.batches:
            key = (batch.state, batch.firms_done, batch.firms_failed, batch.attempts, batch.message)
            if self.seen.get(batch.batch_id) == key:
                continue
            self.seen[batch.batch_id] = key
            failed = _failed(batch)
            stderr.print(
                f"{batch.batch_id} {batch.state}: {batch.firms_done:,}/{batch.firms_total:,} firms done, "
                f"{batch.firms_failed:,} failed{f' ({failed})' if batch.firms_failed and failed else ''}"
                f"{f' ({batch.message})' if not batch.firms_failed and batch.message else ''}, "
                f"attempt {batch.attempts}, {batch.rate_per_min:.1f} firms/min, "
                f"elapsed {duration(batch.elapsed_s)}, ETA {duration(batch.eta_s)}"
                f"{f', cost {dollars(batch.cost_usd)}' if batch.cost_usd is not None else ''}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        for what, job in snapshot.followers.items():
            key = (job.state, job.reason)
            if self.seen.get(what) != key:
                self.seen[what] = key
                reason = f" ({job.reason})" if job.reason else ""
                stderr.print(f"{what} {job.state}{reason}", highlight=False, markup=False, soft_wrap=True)


def _names_quarters(target: str) -> bool:
    """Whether `watch`'s argument is quarters rather than a run id ("2023Q1-20240105T101500Z-3f2a"
    begins with its quarter, so a quarter alone, a range or a list decides)."""
    return RANGE_SEPARATOR in target or "," in target or Quarter.is_label(target)


def watch_quarters(
    settings: FtmSettings, store: Store, quarters: list[Quarter], as_json: bool, interval: float | None
) -> int:
    """`ftm watch QUARTERS`: each quarter's latest run, a row per quarter; returns the exit code."""
    backends: dict[str, Backend] = {}

    def backend_for(name: str) -> Backend:  # one backend per kind, shared by the quarters' runs
        if name not in backends:
            backends[name] = open_backend(name, settings)
        return backends[name]

    observer = RangeObserver(store, quarters, backend_for)
    snapshot = observer.snapshot()  # the first look, to refuse a range with no runs before drawing
    label = quarters_label(quarters)
    if as_json:
        print_json(snapshot.to_json())
        return 0
    if all(run is None for run in snapshot.runs):
        raise UsageError(
            f"no runs of {label} in {store.uri()}: start one with `{store.command(f'run {label}')}`"
        )
    batch = any(run is not None and run.backend == "batch" for run in snapshot.runs)
    pause = interval or (BATCH_POLL_S if batch else POLL_S)
    seen: dict[str, str] = {}
    try:
        snapshot = _poll(observer, pause, render_range, lambda snapshot: _range_lines(snapshot, seen))
    except KeyboardInterrupt:
        stderr.print(
            f"stopped watching; the runs go on. Again: {store.command(f'watch {label}')}", highlight=False
        )
        return 0
    waiting = [str(q) for q, run in zip(snapshot.quarters, snapshot.runs, strict=True) if run is None]
    stderr.print(
        f"{label}: every submitted quarter's run has ended"
        + (f"; not submitted: {', '.join(waiting)}" if waiting else "")
        + (
            ""
            if snapshot.exit_code == 0
            else f"; `{store.command('watch RUN_ID')}` shows a quarter's batches"
        ),
        highlight=False,
        style="green" if snapshot.exit_code == 0 and not waiting else "yellow",
    )
    return snapshot.exit_code


RANGE_COLUMNS = ("quarter", "run", "state", "firms done", "failed", "firms/min", "ETA")


def render_range(snapshot: RangeSnapshot) -> Table:
    """Each quarter of a range as one row: its latest run's batch states and what follows them."""
    costs = any(run is not None and run.cost_usd is not None for run in snapshot.runs)
    table = Table(
        title=f"quarters {quarters_label(snapshot.quarters)}",
        caption="ended"
        if snapshot.ended
        else f"updated {snapshot.taken_at:%H:%M:%S} UTC · {CTRL_C_DETACHES}",
        expand=False,
    )
    for name in RANGE_COLUMNS + (("cost",) if costs else ()):
        table.add_column(
            name, justify="right" if name in ("firms done", "failed", "firms/min", "ETA", "cost") else "left"
        )
    for quarter, run in zip(snapshot.quarters, snapshot.runs, strict=True):
        if run is None:
            table.add_row(
                str(quarter), "–", Text("not submitted", style="dim"), *[""] * (len(table.columns) - 3)
            )
            continue
        cells = [
            str(quarter),
            escape(run.run_id),
            Text(_run_state(run)),
            f"{run.firms_done:,}/{run.firms_total:,}",
            f"{run.firms_failed:,}",
            "–" if run.ended else f"{run.rate_per_min:.1f}",
            "–" if run.ended else duration(run.eta_s),
        ]
        if costs:
            cells.append(dollars(run.cost_usd))
        table.add_row(*cells)
    return table


def _states(run: RunSnapshot) -> str:
    """'2 succeeded, 1 running': how many of a run's batches are in each state."""
    return ", ".join(f"{run.count(state)} {state}" for state in STATE_STYLES if run.count(state))  # type: ignore[arg-type]


def _run_state(run: RunSnapshot) -> str:
    """'2 succeeded, 1 running; then reduce: queued': a run's batch states and its followers'."""
    return f"{_states(run)}; then {_followers(run)}" if run.followers else _states(run)


def _range_lines(snapshot: RangeSnapshot, seen: dict[str, str]) -> None:
    """One line per quarter whose run changed, for logs and pipes."""
    for quarter, run in zip(snapshot.quarters, snapshot.runs, strict=True):
        if run is None:
            line = f"{quarter} not submitted"
        else:
            line = (
                f"{quarter} run {run.run_id}: {_run_state(run)}; "
                f"{run.firms_done:,}/{run.firms_total:,} firms done, {run.firms_failed:,} failed"
            )
            if not run.ended:
                line += f", ETA {duration(run.eta_s)}"
        if seen.get(str(quarter)) != line:
            seen[str(quarter)] = line
            stderr.print(line, highlight=False, markup=False, soft_wrap=True)
