"""Where a run's batches execute (DESIGN §6): every backend runs the same `ftm map-batch`."""

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
) -> Backend:
    """The backend of that name; `workers`, `detach` and `config` matter to the local one."""
    if name == "local":
        from ftm.backends.local import LocalBackend

        return LocalBackend(settings, workers=workers, detach=detach, config=config)
    if name == "batch":
        raise UsageError(
            "the batch backend (AWS Batch) is not built yet (issue 7): use --backend local, which "
            "runs the same map-batch on this machine"
        )
    raise UsageError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
