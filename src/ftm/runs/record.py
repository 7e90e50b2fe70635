"""Runs: a quarter's plan handed to a backend, and the record of it (`runs/RUN_ID.json`).

A quarter has one plan at a time, and its part files and batch records belong to the quarter,
not to a run. Submitting a quarter again resumes it: the same plan and run id, and only the
batches without a finished checkpoint run again (a partial one goes on from its checkpoint).
`new` starts the quarter's map over: its firm topics and batch records are deleted first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ftm import __version__, layout
from ftm.backends import Backend
from ftm.errors import DataError, UsageError
from ftm.map import records
from ftm.plan import DEFAULT_BATCH_SIZE, Plan, make_plan, plan_of, read_plan, write_plan
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.runs.state import RunObserver
from ftm.schemas import RunRecord
from ftm.settings import FtmSettings
from ftm.storage import Store


@dataclass(frozen=True)
class Submission:
    """What submitting would do; `prepare_submission` decides it without writing anything."""

    run_id: str
    quarter: Quarter
    plan: Plan
    to_run: list[str]  # batch ids without a finished checkpoint
    finished: list[str]
    resumes: str | None  # the run that goes on, when it does
    write_plan: bool  # a new plan replaces what batches.jsonl holds (or it held nothing)
    start_over: bool  # earlier firm topics and batch records are deleted first

    @property
    def firms_to_run(self) -> int:
        return sum(len(batch.firm_ids) for batch in self.plan.batches if batch.batch_id in self.to_run)


def prepare_submission(
    settings: FtmSettings, quarter: Quarter, *, batch_size: int | None = None, new: bool = False
) -> Submission:
    """Plans the quarter, or finds its plan and what is left of it; writes nothing.

    Refuses a quarter that was not prefetched, and a --batch-size that would change the plan of a
    quarter with work done and left (resuming needs the same batches; `new` starts over); a
    finished map is kept whatever the batch size."""
    store = Store.from_settings(settings.storage)
    manifest = read_manifest(store, quarter)
    existing = read_plan(store, quarter)
    previous = latest_run(store, quarter)
    started = _work_started(store, quarter)
    if existing is None and started and not new:
        raise UsageError(
            f"{quarter} has firm topics or batch checkpoints in {store.uri()} but no plan to resume "
            "them by: add --new to start the quarter over (its firm topics so far are deleted)"
        )
    if new or existing is None:
        plan = make_plan(store, quarter, manifest, batch_size or DEFAULT_BATCH_SIZE)
        return _submission(store, quarter, plan, None, write=True, start_over=new and started)
    current = plan_of(store, quarter, manifest, existing)
    planned = {firm for batch in existing for firm in batch.firm_ids}
    candidate: Plan | None = None
    if planned != set(manifest.firm_to_chunk):
        problem = f"the prefetch of {quarter} has other firms than its plan"
    elif batch_size is not None and all(_finished(store, quarter, b.batch_id) for b in existing):
        problem = None  # a finished map runs no batch again: the batch size cannot matter to it
    elif batch_size is not None:
        candidate = make_plan(store, quarter, manifest, batch_size)
        problem = (
            None if candidate.same_batches(existing) else f"--batch-size {batch_size} makes other batches"
        )
    else:
        problem = None
    if problem is None:
        resumes = previous.run_id if previous and previous.batch_ids == current.batch_ids else None
        return _submission(store, quarter, current, resumes, write=False, start_over=False)
    if started:
        raise UsageError(
            f"{problem} than the plan that {quarter}'s firm topics so far were made under: resubmit "
            "without --batch-size to resume that plan, or add --new to start the quarter over "
            "(its firm topics so far are deleted)"
        )
    plan = candidate or make_plan(store, quarter, manifest, batch_size or DEFAULT_BATCH_SIZE)
    return _submission(store, quarter, plan, None, write=True, start_over=False)


def start_submission(
    settings: FtmSettings, submission: Submission, backend: Backend, running: RunRecord | None = None
) -> RunRecord:
    """Writes the plan and the run record and hands the unfinished batches to the backend.

    `running`: a run of the quarter that its backend says is still going; it is refused, since
    two runs would write the same batches."""
    if running is not None:
        raise UsageError(
            f"run {running.run_id} of {submission.quarter} is still going: follow it with "
            f"`{Store.from_settings(settings.storage).command(f'watch {running.run_id}')}`, or stop it "
            "before submitting again"
        )
    store = Store.from_settings(settings.storage)
    quarter = submission.quarter
    if submission.start_over:
        store.delete_folder(layout.firm_topics_folder(quarter))
        store.delete_folder(layout.sentence_embeddings_folder(quarter))
    if submission.write_plan:
        # Batch records of another plan would describe other firms under the same batch ids.
        # (With no work started, they are only `pending` marks.)
        store.delete_folder(layout.progress_folder(quarter))
        write_plan(store, quarter, submission.plan.batches)
    batches = [batch for batch in submission.plan.batches if batch.batch_id in submission.to_run]
    for batch in batches:
        records.mark_pending(store, quarter, batch.batch_id, len(batch.firm_ids))
    earlier = read_run(store, submission.resumes) if submission.resumes else None
    run = RunRecord(
        run_id=submission.run_id,
        quarter=str(quarter),
        backend=backend.name,
        batch_ids=submission.plan.batch_ids,
        # The jobs of batches finished before stay on record (the batch backend's cost counts them).
        job_ids=earlier.job_ids if earlier and earlier.backend == backend.name else {},
        code=f"ftm {__version__}",
        settings=settings.masked(),
        submitted_at=records.now(),
    )
    write_run(store, run)  # first: `watch` may look for it as soon as a worker starts
    if batches:
        run = backend.submit(run, batches)
        write_run(store, run)
    return run


def running_run(settings: FtmSettings, quarter: Quarter) -> RunRecord | None:
    """The quarter's latest run while any of its batches runs or waits to, else None."""
    from ftm.backends import open_backend

    store = Store.from_settings(settings.storage)
    run = latest_run(store, quarter)
    if run is None:
        return None
    try:
        backend = open_backend(run.backend, settings)
    except UsageError:  # a backend this version cannot open cannot be asked
        return None
    # Not the backend's word alone: a supervisor lingers a moment after its last batch ended.
    return None if RunObserver(store, run, backend).snapshot().ended else run


def latest_run(store: Store, quarter: Quarter | None = None) -> RunRecord | None:
    """The run submitted last (of a quarter, when given)."""
    runs = [run for run in list_runs(store) if quarter is None or run.quarter == str(quarter)]
    return runs[-1] if runs else None


def list_runs(store: Store, read: dict[str, RunRecord] | None = None) -> list[RunRecord]:
    """Every run record under the root, oldest submission first. With `read`, records already in
    it (by path) are not read again and new ones are added: a watch that looks every few
    seconds reads each record once, as it reads a single run's record once."""
    read = {} if read is None else read
    for path in store.list("runs"):
        if path.endswith(".json") and path not in read:
            read[path] = RunRecord.model_validate(store.read_json(path))
    return sorted(read.values(), key=lambda run: (run.submitted_at, run.run_id))


def read_run(store: Store, run_id: str | None) -> RunRecord:
    """A run by id, or the latest run when no id is given."""
    if run_id is None:
        run = latest_run(store)
        if run is None:
            raise UsageError(
                f"no runs in {store.uri()}: start one with `{store.command('submit --quarter 2023Q1')}`"
            )
        return run
    path = layout.run_record(run_id)
    if not store.exists(path):
        known = ", ".join(run.run_id for run in list_runs(store)[-3:]) or "none"
        raise UsageError(f"no run {run_id!r} in {store.uri()} (the latest: {known})")
    try:
        return RunRecord.model_validate(store.read_json(path))
    except ValueError as error:
        raise DataError(f"{store.uri(path)} is not a run record: {error}") from None


def write_run(store: Store, run: RunRecord) -> None:
    store.write_json(layout.run_record(run.run_id), run.to_json())


def new_run_id(quarter: Quarter) -> str:
    """Sorts by submission time; the random tail keeps two submissions in one second apart."""
    return f"{quarter}-{records.now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:4]}"


def _submission(
    store: Store, quarter: Quarter, plan: Plan, resumes: str | None, *, write: bool, start_over: bool
) -> Submission:
    finished = [] if start_over else [b for b in plan.batch_ids if _finished(store, quarter, b)]
    return Submission(
        run_id=resumes or new_run_id(quarter),
        quarter=quarter,
        plan=plan,
        to_run=[batch for batch in plan.batch_ids if batch not in finished],
        finished=finished,
        resumes=resumes,
        write_plan=write,
        start_over=start_over,
    )


def _finished(store: Store, quarter: Quarter, batch_id: str) -> bool:
    checkpoint = records.read_checkpoint(store, quarter, batch_id)
    return checkpoint is not None and checkpoint.finished


def _work_started(store: Store, quarter: Quarter) -> bool:
    """Whether any batch wrote a part file or a checkpoint (`pending` marks are not work)."""
    if store.list(layout.firm_topics_folder(quarter)) or store.list(
        layout.sentence_embeddings_folder(quarter)
    ):
        return True
    return any(path.endswith("_checkpoint.json") for path in store.list(layout.progress_folder(quarter)))
