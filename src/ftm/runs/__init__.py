"""Runs: a prefetched quarter's plan handed to a backend, recorded as `runs/RUN_ID.json`; and the
state of a run, batch by batch, for `ftm watch`. Start with `record.py` (submitting a run);
`state.py` computes what `watch` shows, for one run or each quarter of a range."""

from ftm.runs.record import Submission, prepare_submission, read_run, running_run, start_submission
from ftm.runs.state import ENDED, BatchView, RangeObserver, RangeSnapshot, RunObserver, RunSnapshot

__all__ = [
    "ENDED",
    "BatchView",
    "RangeObserver",
    "RangeSnapshot",
    "RunObserver",
    "RunSnapshot",
    "Submission",
    "prepare_submission",
    "read_run",
    "running_run",
    "start_submission",
]
