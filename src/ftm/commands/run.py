"""`ftm run`: a range of quarters from transcripts to trends and their report, every step that is
missing."""

from __future__ import annotations

from typing import Annotated

import typer

from ftm import layout
from ftm.backends.aws_batch import AwsBatchBackend, name_command, name_kind
from ftm.commands import (
    FormatOption,
    InputOption,
    QuartersArgument,
    RootOption,
    SourceOption,
    settings_from,
    stderr,
    writable_store,
)
from ftm.commands.batch_job import wants_batch
from ftm.commands.name import name
from ftm.commands.prefetch import prefetch
from ftm.commands.reduce import reduce
from ftm.commands.report import report
from ftm.commands.submit import submit
from ftm.commands.trends import trends
from ftm.quarters import Quarter, parse_quarters, quarters_label
from ftm.runs import prepare_submission, running_run, start_submission
from ftm.settings import FtmSettings
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # eight quarters from WRDS (one Duo approval), every step on this machine
  ftm run 2020Q1..2021Q4

  # from a file of transcripts, batches of 200 firms
  ftm run 2016Q3..2017Q2 --input transcripts.jsonl.gz --batch-size 200

  # on AWS Batch (after `ftm deploy`): prefetched here, the rest as jobs
  ftm run 2020Q1..2021Q4 --backend batch --batch-size 1000

Each step is skipped where its output is there: a quarter's prefetch (_manifest.json), its map
(every batch finished), its reduce (themes.parquet) and its names; trends are always made anew
from the reduced quarters, and so is the page (reports/RANGE.html). Killed at any point, the
same command goes on where it stopped and ends with the same files. `ftm reduce --quarter Q`
(or `ftm name`) redoes one quarter's step.
"""


def run(
    ctx: typer.Context,
    quarters: QuartersArgument,
    source: SourceOption = None,
    input_path: InputOption = None,
    input_format: FormatOption = None,
    firms: Annotated[
        list[str] | None,
        typer.Option("--firms", help="Only these firm ids (comma-separated, or repeat the option)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Firms per map batch (default 1000).", show_default=False),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="Local map worker processes (0: one per CPU core)."),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="local (this machine) or batch (every quarter's map, reduce and name, then the trends, "
            "as AWS Batch jobs after one another; the prefetch runs here).",
        ),
    ] = "local",
    root: RootOption = None,
) -> None:
    """Run every quarter of a range through prefetch, submit, reduce and name, then trends.

    Prefetches the quarters that are not (from one source: one WRDS connection, one Duo
    approval), then for each quarter, oldest first, maps its firms (`ftm submit`, local
    workers), reduces and names it, each where not done already, and ends with `ftm trends`
    over the range and its page (`ftm report`). A quarter whose map had failed firms (exit 3) is
    reduced without them, and the run ends with exit 3.
    """
    the_quarters = parse_quarters(quarters)
    wants_batch(backend)  # an unknown backend is refused before anything runs
    settings = settings_from(ctx, storage__root=root)
    store = writable_store(settings)
    label = quarters_label(the_quarters)
    if backend == "batch":
        AwsBatchBackend(settings).check_submit()  # a missing stack or a local root, before prefetching
    missing = [q for q in the_quarters if not store.exists(layout.prefetch_manifest(q))]
    # Every refusal before any work: a quarter prefetched already is planned now (writing nothing),
    # so that a --batch-size its unfinished map cannot take stops the run before a prefetch.
    for quarter in the_quarters:
        if quarter not in missing:
            prepare_submission(settings, quarter, batch_size=batch_size)
    if missing:
        _step(f"prefetch {quarters_label(missing)}")
        prefetch(
            ctx,
            quarters_label(missing),
            source=source,
            input_path=input_path,
            input_format=input_format,
            root=root,
            firms=firms,
        )
    if backend == "batch":
        _run_on_batch(settings, store, the_quarters, batch_size)
        return
    partial = []
    for index, quarter in enumerate(the_quarters, 1):
        _step(f"{quarter} ({index} of {len(the_quarters)}): map, reduce, name")
        try:
            submit(ctx, str(quarter), batch_size=batch_size, workers=workers, root=root)
        except typer.Exit as done:
            if done.exit_code != 3:  # failed firms are recorded; the others' themes still count
                raise
            partial.append(str(quarter))
        if not store.exists(layout.themes(quarter)):
            reduce(ctx, str(quarter), root=root)
        if not _named(store, quarter):
            name(ctx, str(quarter), root=root)
    _step(f"trends {label}")
    trends(ctx, label, root=root)
    _step(f"report {label}")
    report(ctx, label, root=root)
    if partial:
        stderr.print(
            f"[yellow]some firms failed in the map of {', '.join(partial)}[/]: they are not in the "
            "themes; `ftm watch` shows why",
            highlight=False,
        )
        raise typer.Exit(3)


def _run_on_batch(
    settings: FtmSettings, store: Store, quarters: list[Quarter], batch_size: int | None
) -> None:
    """Every quarter's map, reduce and name as AWS Batch jobs, each after the one before it, and
    the trends as one job after every quarter's last; prefetched here (above), since a WRDS
    prefetch needs the Duo approval of the person running this. Nothing is done twice: a
    finished map submits no map job, a quarter reduced and named submits none at all."""
    label = quarters_label(quarters)
    backend = AwsBatchBackend(settings, reduce=True, name=True)
    last_jobs: list[str] = []
    for quarter in quarters:
        submission = prepare_submission(settings, quarter, batch_size=batch_size)
        run = start_submission(settings, submission, backend, running_run(settings, quarter))
        jobs = dict(run.follow_jobs)  # the map's arrays, then reduce and name after them
        if not submission.to_run:  # the map was finished before: reduce and name where missing
            if not store.exists(layout.themes(quarter)):
                reduce_command = ["reduce", "--quarter", str(quarter)]
                jobs["reduce"] = backend.submit_command(reduce_command, kind="cpu").job_id
            if "reduce" in jobs or not _named(store, quarter):
                jobs["name"] = backend.submit_command(
                    name_command(settings, quarter), kind=name_kind(settings), depends_on=list(jobs.values())
                ).job_id
        stderr.print(
            f"{quarter}: run {run.run_id}, {len(submission.to_run)} map batch(es)"
            + "".join(f"; {step} job {job}" for step, job in jobs.items()),
            highlight=False,
        )
        last_jobs.extend(jobs.values())
    trends_job = backend.submit_command(["trends", label], kind="cpu", depends_on=last_jobs)
    report_job = backend.submit_command(["report", label], kind="cpu", depends_on=[trends_job.job_id])
    stderr.print(
        f"[green]submitted[/]: trends {label} as job {trends_job.job_id}, after {len(last_jobs)} job(s), "
        f"then its report as job {report_job.job_id} ({store.uri(layout.report(label))}); follow "
        f"the range with `{store.command(f'watch {label}')}`, stop a quarter with `ftm cancel RUN_ID`",
        highlight=False,
    )
    typer.echo(trends_job.job_id)  # stdout: for scripts


def _named(store: Store, quarter: Quarter) -> bool:
    return store.exists(layout.theme_names(quarter)) and store.exists(layout.topic_names(quarter))


def _step(what: str) -> None:
    if stderr.is_terminal:
        stderr.rule(f"[bold]ftm run[/]: {what}", align="left")
    else:  # a log: a plain, short line, not a rule the width of a log line (10,000 columns)
        stderr.print(f"== ftm run: {what}", highlight=False)
