"""`ftm cancel`: stop a run's jobs; what they finished is kept, and `ftm submit` goes on from it."""

from __future__ import annotations

import typer

from ftm.backends import open_backend
from ftm.commands import RootOption, RunIdArgument, settings_from, stderr
from ftm.runs import read_run
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # the latest run
  ftm cancel

  # a run by its id, on S3
  ftm cancel 2023Q1-20240105T101500Z-3f2a --root s3://my-bucket/ftm

Batch backend: terminates the run's array jobs (and so every child) and the reduce and name
jobs after them. Local backend: stops the run's detached workers. Either way each batch keeps
its checkpoint; `ftm submit --quarter Q` later runs only what is unfinished.
"""


def cancel(
    ctx: typer.Context,
    run_id: RunIdArgument = None,
    root: RootOption = None,
) -> None:
    """Stop a run: its batches keep their checkpoints, and submitting the quarter again resumes."""
    settings = settings_from(ctx, storage__root=root)
    store = Store.from_settings(settings.storage)
    run = read_run(store, run_id)
    open_backend(run.backend, settings).cancel(run)
    stderr.print(
        f"cancelled run {run.run_id} ({run.backend} backend); what it finished is kept. "
        f"Go on later: {store.command(f'submit --quarter {run.quarter}')}",
        highlight=False,
    )
