"""`--backend batch` for the one-job commands (prefetch, reduce, name): the same command, run as
an AWS Batch job in the same image with this machine's code, followed here until it ends."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from ftm.backends.aws_batch import AwsBatchBackend
from ftm.commands import stderr
from ftm.commands.watch import BATCH_POLL_S, dollars
from ftm.errors import FtmError, UsageError
from ftm.settings import FtmSettings

BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        help="local (this machine) or batch (the same command as an AWS Batch job, after `ftm deploy`).",
    ),
]
DetachOption = Annotated[
    bool, typer.Option("--detach", help="Batch backend: print the job id and leave it running.")
]


def wants_batch(backend: str) -> bool:
    if backend not in ("local", "batch"):
        raise UsageError(f"unknown backend {backend!r}: use local or batch")
    return backend == "batch"


def run_as_job(
    settings: FtmSettings, command: list[str], *, kind: str, detach: bool, poll_s: float = BATCH_POLL_S
) -> None:
    """Submits `ftm <command>` as a job and follows its state until it ends (or prints its id
    with `detach`); a failed job is an error with its reason."""
    backend = AwsBatchBackend(settings)  # one for the whole follow: it keeps the Spot price
    job = backend.submit_command(command, kind=kind)
    stderr.print(
        f"submitted `ftm {escape(' '.join(command))}` to AWS Batch as job {job.job_id}"
        f"{f'; its logs are in {settings.aws.log_group}' if settings.aws.log_group else ''}",
        highlight=False,
    )
    if detach:
        typer.echo(job.job_id)
        return
    last = None
    try:
        while True:
            status = backend.job_status(job.job_id)
            if status is None:
                raise FtmError(f"AWS Batch does not know job {job.job_id} any more")
            seen = (status.state, status.attempts, status.reason)
            if seen != last:
                last = seen
                reason = f": {status.reason}" if status.reason else ""
                stderr.print(
                    f"job {job.job_id} {status.state} (attempt {status.attempts or 1}){reason}",
                    highlight=False,
                    markup=False,
                )
            if status.state in ("succeeded", "failed"):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        stderr.print(f"stopped following; job {job.job_id} goes on in AWS Batch", highlight=False)
        return
    if status.state == "failed":
        raise FtmError(f"job {job.job_id} failed: {status.reason or 'no reason given'}")
    stderr.print(f"[green]job {job.job_id} succeeded[/] (cost ≈ {dollars(status.cost_usd)})", highlight=False)
