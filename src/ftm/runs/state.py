"""The state of a run, batch by batch, as `ftm watch` shows it; the library computes, commands draw.

A batch's state comes from its progress record (what its worker last said, with a heartbeat)
and the backend's view (whether it still runs anything of the run, and per-batch job states
where it keeps them). Whether a running batch's worker lives is read from the process where it
ran on this machine (its pid and start time are in the record), so a run killed outright is seen
as ended at once; only a worker on another host is judged by its heartbeat. Polling is cheap:
one small read per unfinished batch, none for a batch once it succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, get_args

from ftm.backends import Backend, BackendStatus, JobStatus
from ftm.errors import PartialFailure, RunStopped
from ftm.map import records
from ftm.plan import read_plan
from ftm.quarters import Quarter
from ftm.schemas import BatchProgress, RunRecord
from ftm.storage import Store

BatchStateName = Literal["pending", "running", "succeeded", "failed", "retrying", "stopped"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
FOLLOWING: frozenset[str] = frozenset({"queued", "running", "retrying"})
# A running batch whose heartbeat is older than this many heartbeat intervals has lost its worker.
STALE_BEATS = 3


@dataclass(frozen=True)
class BatchView:
    batch_id: str
    state: BatchStateName
    firms_total: int
    firms_done: int  # with topics or skipped with a reason
    firms_skipped: int
    firms_failed: int
    last_failure: str | None  # the latest failed firm and its reason
    attempts: int
    rate_per_min: float  # firms per minute of the current (or last) attempt
    elapsed_s: float | None  # of the current (or last) attempt
    eta_s: float | None
    message: str | None  # why a batch failed, stopped, waits or is retried
    heartbeat_age_s: float | None
    cost_usd: float | None = None  # instance time so far × its price, where the backend knows
    # Stopped because the backend is gone before its worker ever ran: not a stop anyone asked for.
    never_started: bool = False

    @property
    def firms_left(self) -> int:
        return max(self.firms_total - self.firms_done - self.firms_failed, 0)


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    quarter: str
    backend: str
    taken_at: datetime
    batches: list[BatchView]
    ended: bool  # no batch runs and none will, nor any job that follows them: `watch` stops here
    # Jobs that follow the map on the backend by themselves ("reduce", "name").
    followers: dict[str, JobStatus] = field(default_factory=dict)
    estimated_cost_usd: float | None = None  # at submission

    @property
    def firms_total(self) -> int:
        return sum(batch.firms_total for batch in self.batches)

    @property
    def firms_done(self) -> int:
        return sum(batch.firms_done for batch in self.batches)

    @property
    def firms_skipped(self) -> int:
        return sum(batch.firms_skipped for batch in self.batches)

    @property
    def firms_failed(self) -> int:
        return sum(batch.firms_failed for batch in self.batches)

    @property
    def cost_usd(self) -> float | None:
        costs = [batch.cost_usd for batch in self.batches if batch.cost_usd is not None]
        costs += [job.cost_usd for job in self.followers.values() if job.cost_usd is not None]
        return sum(costs) if costs else None

    @property
    def rate_per_min(self) -> float:
        return sum(batch.rate_per_min for batch in self.batches if batch.state == "running")

    @property
    def eta_s(self) -> float | None:
        """The time to finish the unfinished batches at the running batches' combined rate."""
        left = sum(batch.firms_left for batch in self.batches if batch.state not in ENDED)
        if not left:
            return 0.0 if self.ended or all(b.state in ENDED for b in self.batches) else None
        return left / self.rate_per_min * 60 if self.rate_per_min > 0 else None

    def count(self, state: BatchStateName) -> int:
        return sum(batch.state == state for batch in self.batches)

    @property
    def succeeded(self) -> bool:
        """Every batch finished and every firm has topics or was skipped with a reason."""
        batches_ok = all(batch.state == "succeeded" for batch in self.batches)
        followers_ok = all(job.state == "succeeded" for job in self.followers.values())
        return batches_ok and followers_ok and self.firms_failed == 0

    @property
    def stopped(self) -> bool:
        """Stopped before the end (Ctrl-C, `ftm cancel`) with nothing failed: not a failure. A
        worker must have said so: batches that never started because the backend ended their jobs
        without running them (an image that never ran ftm) are a failure of the run."""
        failed = (
            self.firms_failed
            or self.count("failed")
            or any(job.state == "failed" for job in self.followers.values())
        )
        asked = any(batch.state == "stopped" and not batch.never_started for batch in self.batches)
        return not self.succeeded and not failed and asked

    @property
    def exit_code(self) -> int:
        if self.succeeded:
            return 0
        return RunStopped.exit_code if self.stopped else PartialFailure.exit_code

    def to_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            "run_id": self.run_id,
            "quarter": self.quarter,
            "backend": self.backend,
            "taken_at": plain(self.taken_at),
            "ended": self.ended,
            "succeeded": self.succeeded,
            "totals": {
                "batches": len(self.batches),
                **{state: self.count(state) for state in get_args(BatchStateName)},
                "firms_total": self.firms_total,
                "firms_done": self.firms_done,
                "firms_skipped": self.firms_skipped,
                "firms_failed": self.firms_failed,
                "rate_per_min": self.rate_per_min,
                "eta_s": self.eta_s,
                "cost_usd": self.cost_usd,
                "estimated_cost_usd": self.estimated_cost_usd,
            },
            "followers": {what: asdict(job) for what, job in self.followers.items()},
            "batches": [
                {key: plain(value) for key, value in asdict(batch).items()} for batch in self.batches
            ],
        }


class RunObserver:
    """Takes snapshots of one run; keep one for the length of a watch, so that it caches."""

    def __init__(self, store: Store, run: RunRecord, backend: Backend, heartbeat_s: float | None = None):
        self.store = store
        self.run = run
        self.backend = backend
        self.quarter = Quarter.parse(run.quarter)
        plan = read_plan(store, self.quarter) or []
        self.sizes = {batch.batch_id: len(batch.firm_ids) for batch in plan}
        beat = heartbeat_s or float(run.settings.get("map", {}).get("heartbeat_s", 10.0))
        self.stale_after_s = STALE_BEATS * beat + 5
        self._final: dict[str, BatchView] = {}

    def snapshot(self) -> RunSnapshot:
        status = self.backend.status(self.run)
        taken = records.now()
        views = []
        for batch_id in self.run.batch_ids:
            view = self._final.get(batch_id) or self._view(batch_id, status, taken)
            if view.state == "succeeded":
                self._final[batch_id] = view
            views.append(view)
        live = any(view.state not in ENDED for view in views)
        stalled = status.active is False and not any(view.state == "running" for view in views)
        if stalled and live:  # the backend is gone: what never started never will
            views = [_stopped(view) if view.state in ("pending", "retrying") else view for view in views]
        following = any(job.state in FOLLOWING for job in status.followers.values())
        ended = (not live or stalled) and not following
        return RunSnapshot(
            self.run.run_id,
            self.run.quarter,
            self.run.backend,
            taken,
            views,
            ended,
            followers=status.followers,
            estimated_cost_usd=self.run.estimated_cost_usd,
        )

    def _view(self, batch_id: str, status: BackendStatus, taken: datetime) -> BatchView:
        progress = records.read_progress(self.store, self.quarter, batch_id)
        total = self.sizes.get(batch_id, progress.firms_total if progress else 0)
        job = status.jobs.get(batch_id)
        if progress is None:
            checkpoint = records.read_checkpoint(self.store, self.quarter, batch_id)
            if checkpoint is not None and checkpoint.finished:
                progress = BatchProgress(
                    batch_id=batch_id,
                    firms_total=total,
                    firms_done=len(checkpoint.completed_firm_ids),
                    firms_skipped=len(checkpoint.skipped_firms),
                    firms_failed=len(checkpoint.failed_firm_ids),
                    attempt=checkpoint.attempt,
                    state="succeeded",
                    heartbeat_at=checkpoint.updated_at,
                )
            else:
                progress = BatchProgress(
                    batch_id=batch_id,
                    firms_total=total,
                    firms_done=0,
                    attempt=0,
                    state="pending",
                    heartbeat_at=taken,
                )
        state, message = _state(progress, status, job, taken, self.stale_after_s)
        age = (taken - progress.heartbeat_at).total_seconds()
        if progress.started_at is None or progress.state == "pending":
            elapsed = None
        else:
            until = taken if state == "running" else progress.heartbeat_at
            elapsed = max((until - progress.started_at).total_seconds(), 0.0)
        rate = progress.rate_per_s * 60
        left = max(total - progress.firms_done - progress.firms_failed, 0)
        eta = (left / rate * 60 if rate > 0 else None) if state == "running" else None
        attempts = max(progress.attempt, job.attempts or 0) if job else progress.attempt
        return BatchView(
            batch_id=batch_id,
            state=state,
            firms_total=total,
            firms_done=progress.firms_done,
            firms_skipped=progress.firms_skipped,
            firms_failed=progress.firms_failed,
            last_failure=progress.last_failure,
            attempts=attempts,
            rate_per_min=rate if state != "pending" else 0.0,
            elapsed_s=elapsed,
            eta_s=eta,
            message=message,
            heartbeat_age_s=age if state == "running" else None,
            cost_usd=job.cost_usd if job else None,
        )


def _state(
    progress: BatchProgress,
    status: BackendStatus,
    job: JobStatus | None,
    taken: datetime,
    stale_after_s: float,
) -> tuple[BatchStateName, str | None]:
    if job is not None and job.state == "retrying":
        return "retrying", job.reason or progress.message
    if progress.state in ("succeeded", "failed", "stopped"):
        return progress.state, progress.message
    if job is not None and job.state == "failed":  # ended without its worker's last word: killed
        return "failed", job.reason or "the backend's job failed"
    if progress.state == "pending":
        if job is not None and job.state == "running":
            return "running", None
        return "pending", job.reason if job else None
    # "running": on the worker's own host its process says whether it runs, at once; a record
    # without the process's start time (an older writer, or no /proc) cannot be trusted so.
    age = (taken - progress.heartbeat_at).total_seconds()
    if progress.host and progress.pid and progress.process_started:
        alive = records.process_alive(progress.host, progress.pid, progress.process_started)
        if alive is False:
            return "failed", f"its worker (pid {progress.pid}) is gone without a word; resubmit to go on"
        if alive:
            return "running", None if age <= stale_after_s else f"no heartbeat for {age:.0f} s"
    # Elsewhere: believe it while the heartbeat is fresh, or while the backend says it runs.
    if age <= stale_after_s or (job is not None and job.state == "running"):
        return "running", None
    if status.active is False or age > 10 * stale_after_s:
        return (
            "failed",
            f"the worker went away without a word (last heartbeat {age:.0f} s ago); resubmit to go on",
        )
    return "running", f"no heartbeat for {age:.0f} s"


def _stopped(view: BatchView) -> BatchView:
    return replace(
        view,
        state="stopped",
        message=view.message or "not started: the run stopped before it",
        never_started=True,
    )


@dataclass(frozen=True)
class RangeSnapshot:
    """Each quarter's latest run at one moment, as `ftm watch RANGE` shows them: None for a
    quarter with no run yet (`ftm run` on this machine submits the quarters one after another)."""

    quarters: list[Quarter]
    runs: list[RunSnapshot | None]
    taken_at: datetime

    @property
    def ended(self) -> bool:
        """No submitted quarter's run goes on: a quarter not submitted yet does not keep a watch
        waiting, since nothing says it ever will be."""
        return all(run is None or run.ended for run in self.runs)

    @property
    def exit_code(self) -> int:
        """3 when a quarter's run had failures, else 5 when one was stopped, else 0."""
        codes = {run.exit_code for run in self.runs if run is not None}
        for code in (PartialFailure.exit_code, RunStopped.exit_code):
            if code in codes:
                return code
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "quarters": [str(quarter) for quarter in self.quarters],
            "taken_at": self.taken_at.isoformat(),
            "ended": self.ended,
            "exit_code": self.exit_code,
            "runs": [
                {"quarter": str(quarter), "run": None if run is None else run.to_json()}
                for quarter, run in zip(self.quarters, self.runs, strict=True)
            ],
        }


class RangeObserver:
    """Takes snapshots of the latest run of each quarter of a range; a quarter submitted again
    (a new run) is followed from its new run on."""

    def __init__(self, store: Store, quarters: list[Quarter], backend_for: Callable[[str], Backend]):
        self.store = store
        self.quarters = quarters
        self.backend_for = backend_for  # a run's backend, by its name ("local", "batch")
        self._observers: dict[Quarter, RunObserver] = {}
        self._records: dict[str, RunRecord] = {}  # run records read so far, by path

    def snapshot(self) -> RangeSnapshot:
        from ftm.runs.record import list_runs  # here: record.py imports this module

        latest = {
            run.quarter: run for run in list_runs(self.store, self._records)
        }  # oldest first: the last stays
        runs: list[RunSnapshot | None] = []
        for quarter in self.quarters:
            run = latest.get(str(quarter))
            if run is None:
                runs.append(None)
                continue
            observer = self._observers.get(quarter)
            if observer is None or observer.run.run_id != run.run_id:
                observer = self._observers[quarter] = RunObserver(
                    self.store, run, self.backend_for(run.backend)
                )
            runs.append(observer.snapshot())
        return RangeSnapshot(self.quarters, runs, records.now())
