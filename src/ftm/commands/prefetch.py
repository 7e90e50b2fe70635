"""`ftm prefetch`: one quarter of transcripts into cleaned, chunked sentences."""

from __future__ import annotations

import time
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
    TimeRemainingColumn,
)

from ftm import layout
from ftm.commands import (
    FormatOption,
    InputOption,
    ProgressDisplay,
    QuartersArgument,
    RootOption,
    SourceOption,
    plural,
    print_json,
    settings_from,
    stderr,
    writable_store,
)
from ftm.commands.batch_job import BackendOption, DetachOption, run_as_job, wants_batch
from ftm.errors import UsageError
from ftm.prefetch import (
    PrefetchProgress,
    PrefetchResult,
    PrefetchSurvey,
    linked_firms,
    prefetch_quarter,
    prefetch_quarters,
    survey,
    survey_quarters,
)
from ftm.quarters import Quarter, parse_quarters, quarters_label
from ftm.settings import FtmSettings
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # from WRDS: approve one Duo push on your phone
  ftm prefetch 2023Q1

  # count calls, firms, links and components; write nothing
  ftm prefetch 2023Q1 --dry-run

  # eight quarters over one WRDS connection: one Duo approval
  ftm prefetch 2020Q1..2021Q4

  # from a file (--input means --source files)
  ftm prefetch 2016Q4 --input transcripts.jsonl.gz
  ftm prefetch 2016Q4 --source files --input calls.csv --root s3://bucket/ftm
  ftm prefetch 2016Q4 --input transcripts.jsonl.gz --firms AAPL,MSFT --json

  # as an AWS Batch job, from a file on S3 under the storage prefix
  ftm prefetch 2016Q4 --input s3://bucket/ftm/raw/calls.jsonl --backend batch

An interrupted prefetch resumes where it stopped when the same command runs again;
--overwrite starts the quarter over. WRDS prefetches run here, never on the batch backend:
each container would need its own Duo approval.
"""


def prefetch(
    ctx: typer.Context,
    quarter: QuartersArgument,
    source: SourceOption = None,
    input_path: InputOption = None,
    input_format: FormatOption = None,
    root: RootOption = None,
    firms: Annotated[
        list[str] | None,
        typer.Option("--firms", help="Only these firm ids (comma-separated, or repeat the option)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="spaCy processes (0: one per CPU core).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count the quarter's calls, firms, links and components; write nothing."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete what exists for the quarter and start over.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the manifest summary as JSON to stdout.")
    ] = False,
    backend: BackendOption = "local",
    detach: DetachOption = False,
) -> None:
    """Turn a quarter's (or a range's) earnings calls into cleaned sentence chunks and a manifest.

    From WRDS (the default source): one connection, so one Duo approval; one transcript
    version per call; each call linked to GVKEY and PERMNO as of its UTC call date, the
    quarter being a half-open range of those dates. From files (--input): each call belongs
    to the calendar quarter of its date (files without dates: their fiscal_quarter label).
    Firms are written in chunks of prefetch.firms_per_chunk with a checkpoint every
    prefetch.checkpoint_every firms, so a killed or dropped run loses nothing.
    """
    quarters = parse_quarters(quarter)
    the_quarter = quarters[0]
    settings = settings_from(
        ctx,
        # --input alone means the files source, whatever source.kind says.
        source__kind=source or ("files" if input_path else None),
        source__path=input_path,
        source__format=input_format,
        storage__root=root,
        preprocess__workers=workers,
    )
    wanted = [firm.strip() for item in firms or [] for firm in item.split(",") if firm.strip()]
    if wants_batch(backend):
        _prefetch_as_job(settings, quarters_label(quarters), wanted, overwrite, detach)
        return
    if len(quarters) > 1 and not dry_run:
        _prefetch_range(settings, quarters, wanted, overwrite, as_json)
        return
    if len(quarters) > 1:  # a dry run of each quarter in turn, over one source
        with _RangeDisplay() as display:
            found = survey_quarters(settings, quarters, firms=wanted or None, on_progress=display.update)
        if as_json:
            print_json([asdict(one) for one in found])
        for one in found:
            _report_survey(one)
        return
    if dry_run:
        with _ProgressDisplay(str(the_quarter)) as display:
            found = survey(settings, the_quarter, firms=wanted or None, on_progress=display.update)
        if as_json:
            print_json(asdict(found))
        _report_survey(found)
        return
    store = writable_store(settings)
    with _ProgressDisplay(str(the_quarter)) as display:
        result = prefetch_quarter(
            settings, the_quarter, firms=wanted or None, overwrite=overwrite, on_progress=display.update
        )
    folder = store.uri(layout.prefetch_folder(the_quarter))
    if as_json:
        print_json(_summary(result, folder))
    _report(result, folder, store)


def _prefetch_range(
    settings: FtmSettings, quarters: list[Quarter], firms: list[str], overwrite: bool, as_json: bool
) -> None:
    """Every quarter in turn over one source (one WRDS connection: one Duo approval)."""
    store = writable_store(settings)
    with _RangeDisplay() as display:
        results = prefetch_quarters(
            settings, quarters, firms=firms or None, overwrite=overwrite, on_progress=display.update
        )
    folders = [store.uri(layout.prefetch_folder(Quarter.parse(r.manifest.quarter))) for r in results]
    if as_json:
        print_json([_summary(result, folder) for result, folder in zip(results, folders, strict=True)])
    for result, folder in zip(results, folders, strict=True):
        _report(result, folder, store)


class _RangeDisplay:
    """One quarter's progress display after another, as the range's prefetch moves on."""

    def __init__(self) -> None:
        self.quarter: Quarter | None = None
        self.display: _ProgressDisplay | None = None

    def __enter__(self) -> _RangeDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.display is not None:
            self.display.__exit__(*exc)

    def update(self, quarter: Quarter, state: PrefetchProgress) -> None:
        if quarter != self.quarter:
            if self.display is not None:
                self.display.__exit__(None, None, None)
            self.quarter, self.display = quarter, _ProgressDisplay(str(quarter)).__enter__()
        assert self.display is not None
        self.display.update(state)


def _prefetch_as_job(
    settings: FtmSettings, quarter: str, firms: list[str], overwrite: bool, detach: bool
) -> None:
    if settings.source.kind == "wrds":
        raise UsageError(
            "prefetch from WRDS cannot run on the batch backend: every container would need its own "
            "Duo approval. Run `ftm prefetch` here (one approval; it writes to the S3 root just the "
            "same), or prefetch from files on S3 with --input s3://…"
        )
    path = settings.source.path or ""
    if not path.startswith("s3://"):
        raise UsageError(
            f"the batch backend's container cannot read {path or 'a local file'}: copy the input to "
            "S3 and pass --input s3://BUCKET/KEY"
        )
    # The jobs' role reads only under the stack's prefix (deploy/ftm.yaml, JobRole): anywhere
    # else the job would end in AccessDenied.
    bucket = settings.aws.bucket or Store.from_settings(settings.storage).bucket
    reach = f"s3://{bucket}/{settings.aws.prefix.strip('/')}/"
    if bucket and not path.startswith(reach):  # no bucket: a local root, refused just after
        name = path.rstrip("/").rsplit("/", 1)[-1]
        raise UsageError(
            f"the batch jobs' role reads only {reach}… (the stack's bucket and aws.prefix), not "
            f"{path}: copy the input there (aws s3 cp {path} {reach}raw/{name}) and pass that "
            "--input, or run the prefetch here, which reads it with your own credentials"
        )
    command = ["prefetch", str(quarter), "--source", "files", "--input", path]
    command += [*(["--firms", ",".join(firms)] if firms else []), *(["--overwrite"] if overwrite else [])]
    run_as_job(settings, command, kind="cpu", detach=detach)


def _report_survey(found: PrefetchSurvey) -> None:
    stderr.print(
        f"[bold]{found.quarter}[/] (dry run, nothing written): {plural(found.n_calls, 'call')}, "
        f"{plural(found.n_firms, 'firm')} ({found.n_firms_with_gvkey:,} linked to a GVKEY, "
        f"{found.n_firms_with_permno:,} to a PERMNO), {found.n_components:,} components",
        highlight=False,
    )
    if found.n_input_problems:
        kinds = "; ".join(f"{k.count}× {k.reason} (first at {k.where})" for k in found.common_problems)
        stderr.print(
            f"[yellow]{found.n_input_problems:,} of {found.n_records:,} input records could not be "
            f"used[/]: {escape(kinds)}",
            highlight=False,
        )


def _summary(result: PrefetchResult, folder: str) -> dict:
    manifest = result.manifest
    return {
        "quarter": manifest.quarter,
        "already_done": result.already_done,
        "resumed_at_firm": result.resumed_at,
        "n_firms": manifest.n_firms,
        "n_calls": manifest.n_calls,
        "n_chunks": manifest.n_chunks,
        "n_sentences": manifest.n_sentences,
        "skipped_firms": [skip.to_json() for skip in manifest.skipped_firms],
        "n_input_problems": manifest.n_input_problems,
        "location": folder,
    }


def _report(result: PrefetchResult, folder: str, store: Store | None = None) -> None:
    manifest = result.manifest
    if result.already_done:
        stderr.print(
            f"{manifest.quarter} is already prefetched in {escape(folder)} "
            f"({plural(manifest.n_firms, 'firm')}, "
            f"{plural(manifest.n_sentences, 'sentence')}); nothing changed. Use --overwrite to redo it."
        )
        return
    resumed = f", resumed at firm {result.resumed_at:,}" if result.resumed_at else ""
    stderr.print(
        f"[green]prefetched {manifest.quarter}[/]: {plural(manifest.n_firms, 'firm')}, "
        f"{plural(manifest.n_calls, 'call')}, {plural(manifest.n_sentences, 'sentence')} in "
        f"{plural(manifest.n_chunks, 'chunk')}{resumed}\n"
        f"  → {escape(folder)}/ (chunk_*.parquet, and _manifest.json)",
        highlight=False,
    )
    by_label = int(manifest.source.get("calls_by", {}).get("fiscal_quarter", 0))
    if by_label:
        stderr.print(
            f"[yellow]{by_label} of {plural(manifest.n_calls, 'call')} had no call date[/] and were placed "
            f"by their fiscal_quarter label: for those firms {manifest.quarter} is their own fiscal "
            "quarter, not a calendar quarter, and earnings_call_date is empty",
            highlight=False,
        )
    if store is not None and manifest.n_firms:
        permnos, gvkeys = linked_firms(store, Quarter.parse(manifest.quarter))
        if permnos < manifest.n_firms or gvkeys < manifest.n_firms:
            stderr.print(
                f"[yellow]{permnos} of {plural(manifest.n_firms, 'firm')} have a PERMNO and {gvkeys} a "
                "GVKEY[/]: only those merge with CRSP (PERMNO) or Compustat (GVKEY); the others keep "
                "their firm_id (the README says which merge needs which columns)",
                highlight=False,
            )
    if manifest.skipped_firms:
        shown = ", ".join(f"{s.firm_id} ({s.reason})" for s in manifest.skipped_firms[:5])
        more = f" and {len(manifest.skipped_firms) - 5} more" if len(manifest.skipped_firms) > 5 else ""
        stderr.print(f"[yellow]skipped {len(manifest.skipped_firms)} firm(s)[/]: {escape(shown)}{more}")
    if manifest.n_input_problems:
        shown = "; ".join(f"{p.where}: {p.reason}" for p in manifest.input_problems[:3])
        stderr.print(
            f"[yellow]{manifest.n_input_problems} input record(s) could not be used[/] "
            f"(listed in _manifest.json under input_problems): {escape(shown)}",
            highlight=False,
        )
    stderr.print(
        '  look at it: python -c "import pyarrow.parquet as pq; '
        f"print(pq.read_table('{escape(folder)}/chunk_0000.parquet').to_pandas().head())\"",
        highlight=False,
        soft_wrap=True,
    )


class _ProgressDisplay(ProgressDisplay):
    """A rich progress bar on a terminal; a count line every few seconds otherwise (logs, CI)."""

    PLAIN_EVERY_S = 10.0
    # What the bar says while a source event is under way.
    SOURCE_EVENTS = {
        "connecting": "waiting for the login (approve the Duo push)",
        "connected": "reading the quarter's calls",
        "reconnecting": "reconnecting (approve the Duo push if one comes)",
    }

    def __init__(self, quarter: str):
        super().__init__(
            SpinnerColumn(),
            TextColumn("[bold]prefetch {task.fields[quarter]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("firms · {task.fields[sentences]:,} sentences · {task.fields[rate]:.1f} firms/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.quarter = quarter
        self.task = None
        self.first_done: int | None = None

    def update(self, state: PrefetchProgress) -> None:
        now = time.monotonic()
        if state.phase in self.SOURCE_EVENTS:
            # Printed above the bar, so that "approve the Duo push" stays on the screen.
            style = "yellow" if state.phase == "reconnecting" else "cyan"
            stderr.print(f"[{style}]{escape(state.message)}[/]", highlight=False)
            if self.live and self.task is not None:
                self.progress.update(self.task, description=self.SOURCE_EVENTS[state.phase])
            return
        if state.phase == "scanning":
            if self.live:
                self.task = self.progress.add_task(
                    "finding the quarter's calls", total=None, quarter=self.quarter, sentences=0, rate=0.0
                )
            else:
                stderr.print(f"prefetch {self.quarter}: finding the quarter's calls", highlight=False)
            return
        if self.first_done is None:
            self.first_done, self.started = state.firms_done, now
        elapsed = max(now - self.started, 1e-6)
        rate = (state.firms_done - self.first_done) / elapsed
        if self.live:
            if self.task is None:
                self.task = self.progress.add_task("", quarter=self.quarter, sentences=0, rate=0.0)
            self.progress.update(
                self.task,
                description="",
                total=state.firms_total,
                completed=state.firms_done,
                sentences=state.sentences,
                rate=rate,
            )
        elif self.line_due(self.PLAIN_EVERY_S, now=state.phase == "done"):
            stderr.print(
                f"prefetch {self.quarter}: {state.firms_done:,}/{state.firms_total:,} firms, "
                f"{state.sentences:,} sentences, {rate:.1f} firms/s",
                highlight=False,
            )
