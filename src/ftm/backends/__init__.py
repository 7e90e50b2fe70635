"""Where a run's batches execute: every backend runs the same `ftm map-batch`."""

from __future__ import annotations

from pathlib import Path

from ftm.backends.base import Backend, BackendStatus, JobState, JobStatus
from ftm.errors import UsageError
from ftm.settings import FtmSettings

BACKENDS = ("local", "batch")

__all__ = ["BACKENDS", "Backend", "BackendStatus", "JobState", "JobStatus", "open_backend"]


def open_backend(
    name: str,
    settings: FtmSettings,
    *,
    workers: int | None = None,
    detach: bool = False,
    config: Path | None = None,
    reduce: bool = True,
    name_after: bool = True,
    submitting: bool = False,
) -> Backend:
    """The backend of that name. `workers`, `detach` and `config` matter to the local one;
    `reduce` and `name_after` (jobs that follow the map by themselves) to the batch one.
    `submitting`: refuse now, before any planning, what submitting would refuse."""
    if name == "local":
        from ftm.backends.local import LocalBackend

        return LocalBackend(settings, workers=workers, detach=detach, config=config)
    if name == "batch":
        from ftm.backends.aws_batch import AwsBatchBackend

        backend = AwsBatchBackend(settings, reduce=reduce, name=name_after)
        if submitting:
            backend.check_submit()
        return backend
    raise UsageError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
