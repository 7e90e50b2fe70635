"""`ftm submit`: plan a prefetched quarter into batches and run them on a backend."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ftm import layout
from ftm.backends import BACKENDS, open_backend
from ftm.backends.local import STOP_GRACE_S, log_folder
from ftm.commands import RootOption, config_file, plural, print_json, settings_from, stderr, writable_store
from ftm.commands.map_batch import interrupt_once
from ftm.commands.ranges import each_quarter
from ftm.commands.watch import BATCH_POLL_S, CTRL_C_STOPS, dollars, follow, render, report_end
from ftm.errors import UsageError
from ftm.quarters import parse_quarters
from ftm.runs import RunObserver, Submission, prepare_submission, running_run, start_submission
from ftm.schemas import RunRecord
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # local workers; the watch table follows
  ftm submit --quarter 2023Q1 --batch-size 1000

  # the plan: batches, firms, sentences
  ftm submit --quarter 2023Q1 --batch-size 1000 --dry-run

  # two workers in the background, printing the run id; `ftm watch` follows it
  ftm submit --quarter 2016Q4 --batch-size 50 --workers 2 --detach

  # again: resumes, and finished batches are skipped
  ftm submit --quarter 2023Q1

  # start the quarter's map over
  ftm submit --quarter 2023Q1 --batch-size 500 --new

  # AWS Batch on Spot GPUs, after `ftm deploy` and `ftm image build`;
  # reduce and name follow as jobs
  ftm submit --quarter 2023Q1 --batch-size 1000 --backend batch

Local: Ctrl-C stops the workers cleanly (their checkpoints stay, exit 130); the same command
goes on. Batch: Ctrl-C stops following; the jobs go on (`ftm cancel RUN_ID` stops them).

Exit codes: 0 every firm got topics or was skipped with a reason, 3 some firms or batches
failed (the run ended; `ftm watch` shows which, and why), 2 a usage error, 130 interrupted
(`ftm watch` then says 5: the run stopped before the end, nothing failed).
"""


def submit(
    ctx: typer.Context,
    quarter: Annotated[
        str,
        typer.Option(
            "--quarter",
            help="Calendar quarter, as 2023Q1, or quarters: 2020Q1..2021Q4, 2020Q1,2020Q3.",
            show_default=False,
        ),
    ],
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Firms per batch (default 1000; when resuming, the plan's own).",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help=f"Where batches run: {' or '.join(BACKENDS)}.")
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="Local worker processes (0: one per CPU core; map.workers)."),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Print the run id and leave the workers running in the background."),
    ] = False,
    new: Annotated[
        bool,
        typer.Option(
            "--new", help="Start the quarter's map over: deletes its firm topics so far, plans anew."
        ),
    ] = False,
    reduce: Annotated[
        bool,
        typer.Option("--reduce/--no-reduce", help="Batch backend: run `ftm reduce` as a job after the map."),
    ] = True,
    name: Annotated[
        bool,
        typer.Option("--name/--no-name", help="Batch backend: run `ftm name` as a job after reduce."),
    ] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and write nothing.")] = False,
    root: RootOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan (--dry-run) or the run record as JSON to stdout.")
    ] = False,
) -> None:
    """Find every firm's topics in a prefetched quarter, batch by batch.

    Splits the quarter's firms into batches of similar sentence counts (written to
    manifests/quarter=Q/batches.jsonl), records the run (runs/RUN_ID.json), and runs
    `ftm map-batch` for each unfinished batch on the backend, following them in the watch
    table until the run ends. Submitting the quarter again resumes it.
    """
    quarters = parse_quarters(quarter)
    if len(quarters) > 1:
        if detach and backend == "local":
            raise UsageError(
                "--detach with several quarters would run their workers side by side on the same "
                "cores: submit one quarter at a time with --detach, or leave out --detach"
            )
        each_quarter(
            quarters,
            lambda one: submit(
                ctx, str(one), batch_size, backend, workers, detach, new, reduce, name, dry_run, root, as_json
            ),
        )
        return
    the_quarter = quarters[0]
    settings = settings_from(ctx, storage__root=root, map__workers=workers)
    store = Store.from_settings(settings.storage) if dry_run else writable_store(settings)
    # The backend first: an unavailable one is refused before any planning.
    the_backend = open_backend(
        backend,
        settings,
        workers=workers,
        detach=detach,
        config=config_file(ctx),
        reduce=reduce,
        name_after=name,
        submitting=not dry_run,
    )
    submission = prepare_submission(settings, the_quarter, batch_size=batch_size, new=new)
    if dry_run:
        if as_json:
            print_json(_plan_json(submission))
        _show_plan(submission)
        return
    run = start_submission(settings, submission, the_backend, running_run(settings, the_quarter))
    if as_json:
        print_json(run.to_json())
    _announce(submission, store, detach, run)
    if detach and submission.to_run:
        if not as_json:
            typer.echo(run.run_id)  # stdout: for scripts, `RUN=$(ftm submit ... --detach)`
        return
    observer = RunObserver(store, run, the_backend)
    if the_backend.name == "batch":  # the jobs run on AWS: Ctrl-C only stops following them
        try:
            snapshot = follow(observer, BATCH_POLL_S)
        except KeyboardInterrupt:
            stderr.print(
                f"stopped following; the jobs go on. Again: {store.command(f'watch {run.run_id}')}; "
                f"stop them: {store.command(f'cancel {run.run_id}')}",
                highlight=False,
            )
            return
        code = report_end(snapshot, store)
        if code:
            raise typer.Exit(code)
        return
    with interrupt_once():
        try:
            snapshot = follow(observer, ctrl_c=CTRL_C_STOPS)
        except KeyboardInterrupt:
            stderr.print(
                f"stopping the workers (at most {STOP_GRACE_S:.0f} s); what they finished is kept…",
                highlight=False,
            )
            the_backend.cancel(run)
            stderr.print(render(observer.snapshot(), CTRL_C_STOPS))
            raise typer.Exit(130) from None
    code = report_end(snapshot, store)
    if code:
        raise typer.Exit(code)


def _announce(submission: Submission, store: Store, detach: bool, run: RunRecord) -> None:
    root = store.uri()
    quarter = submission.quarter
    plan = submission.plan
    what = "resumes" if submission.resumes else "starts"
    over = " (starting over: earlier firm topics deleted)" if submission.start_over else ""
    stderr.print(
        f"[bold]run {submission.run_id}[/] {what} {quarter}{over}: {len(submission.to_run)} of "
        f"{plural(len(plan.batches), 'batch', 'batches')} to run ({submission.firms_to_run:,} of "
        f"{plural(plan.n_firms, 'firm')}; "
        f"{len(submission.finished)} finished before)",
        highlight=False,
    )
    if not submission.to_run:
        stderr.print("every batch is finished; nothing to run.", highlight=False)
    stderr.print(f"  firm topics → {escape(root)}/{layout.firm_topics_folder(quarter)}/", highlight=False)
    if run.backend == "batch" and submission.to_run:
        jobs = sorted({job.split(":")[0] for job in run.job_ids.values() if job}, key=str)
        estimate = f"≈ {dollars(run.estimated_cost_usd)}" if run.estimated_cost_usd is not None else "unknown"
        stderr.print(
            f"  AWS Batch: {len(jobs)} map job(s) {', '.join(jobs[-3:])}"
            f"{''.join(f'; then {what} {job}' for what, job in run.follow_jobs.items())}\n"
            f"  code: {escape(run.code or '?')}; image: {escape(run.image or '?')}\n"
            f"  estimated Spot cost: {estimate} (aws.firms_per_instance_hour); "
            f"stop it: {store.command(f'cancel {submission.run_id}')}",
            highlight=False,
        )
        if detach:
            stderr.print(f"  follow it: {store.command(f'watch {submission.run_id}')}", highlight=False)
    elif detach and submission.to_run:
        stderr.print(
            "  the workers run in the background; follow them: "
            f"{store.command(f'watch {submission.run_id}')}\n"
            f"  worker logs: {log_folder(submission.run_id)}/",
            highlight=False,
        )


def _plan_json(submission: Submission) -> dict:
    plan = submission.plan
    return {
        "quarter": plan.quarter,
        "run_id": submission.run_id,
        "resumes": submission.resumes,
        "new_plan": submission.write_plan,
        "start_over": submission.start_over,
        "n_batches": len(plan.batches),
        "n_firms": plan.n_firms,
        "n_sentences": plan.n_sentences,
        "batches": [
            {
                "batch_id": batch.batch_id,
                "firms": len(batch.firm_ids),
                "sentences": plan.sentences[batch.batch_id],
                "finished": batch.batch_id in submission.finished,
            }
            for batch in plan.batches
        ],
    }


def _show_plan(submission: Submission, shown: int = 20) -> None:
    plan = submission.plan
    table = Table(title=f"{plan.quarter}: the plan (dry run, nothing written)")
    for name in ("batch", "firms", "sentences", "status"):
        table.add_column(name, justify="left" if name in ("batch", "status") else "right")
    for batch in plan.batches[:shown]:
        status = "finished" if batch.batch_id in submission.finished else "to run"
        table.add_row(
            batch.batch_id, f"{len(batch.firm_ids):,}", f"{plan.sentences[batch.batch_id]:,}", status
        )
    if len(plan.batches) > shown:
        table.add_row(f"… {len(plan.batches) - shown} more", "", "", "")
    stderr.print(table)
    sentences = plan.sentences.values()
    source = "the existing plan" if not submission.write_plan else "a new plan"
    stderr.print(
        f"{plural(len(plan.batches), 'batch', 'batches')}, {plural(plan.n_firms, 'firm')}, "
        f"{plural(plan.n_sentences, 'sentence')} "
        f"({min(sentences):,} to {max(sentences):,} per batch), from {source}; "
        f"{len(submission.to_run)} to run, {len(submission.finished)} finished",
        highlight=False,
    )
