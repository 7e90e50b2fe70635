"""Runs: a prefetched quarter's plan handed to a backend, recorded as `runs/RUN_ID.json`; and the
state of a run, batch by batch, for `ftm watch`. Start with `record.py` (submitting a run);
`state.py` computes what `watch` shows."""

from ftm.runs.record import Submission, prepare_submission, read_run, running_run, start_submission
from ftm.runs.state import ENDED, BatchView, RunObserver, RunSnapshot

__all__ = [
    "ENDED",
    "BatchView",
    "RunObserver",
    "RunSnapshot",
    "Submission",
    "prepare_submission",
    "read_run",
    "running_run",
    "start_submission",
]
