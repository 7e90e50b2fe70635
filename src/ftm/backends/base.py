"""The `Backend` protocol: where a run's batches execute, in three verbs.

A backend only starts, observes and stops workers that each run `ftm map-batch`; what a batch
did is in its checkpoint and progress records, which every backend's workers write the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from ftm.schemas import Batch, RunRecord

# The settings sections `ftm map-batch` reads: every backend hands its workers exactly these from
# the submitter, so that a worker never runs with other settings than the run record shows.
MAP_BATCH_SECTIONS = ("storage", "embedding", "topics", "map")

# How a backend sees one batch's job. "unknown": the backend keeps no per-batch state (the
# local backend: its workers' progress records say it all).
JobState = Literal["queued", "running", "succeeded", "failed", "retrying", "unknown"]


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    attempts: int | None = None
    reason: str | None = None  # why a job failed, is retried or waits, in the backend's words
    cost_usd: float | None = None  # what its instance time cost so far, where the backend knows


@dataclass(frozen=True)
class BackendStatus:
    """What a backend knows of a run."""

    # Whether the backend may still start or run any of the run's batches; None: it cannot tell
    # (a local run started on another machine), and progress heartbeats decide.
    active: bool | None
    jobs: dict[str, JobStatus] = field(default_factory=dict)  # batch id → its job, where known
    # Jobs that follow the map on the backend by themselves ("reduce", "name"), where there are.
    followers: dict[str, JobStatus] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def submit(self, run: RunRecord, batches: list[Batch]) -> RunRecord:
        """Starts `ftm map-batch` for each batch (the unfinished batches of the run's plan) and
        returns the run record with the backend's job ids; the plan is already on storage."""
        ...

    def status(self, run: RunRecord) -> BackendStatus: ...

    def cancel(self, run: RunRecord) -> None:
        """Stops the run's workers cleanly: they keep their checkpoints, and resubmitting goes on."""
        ...
