"""What the commands that take several quarters share: `reduce`, `name` and `submit` given a range
or a list run the one-quarter command for each quarter in turn, oldest first."""

from __future__ import annotations

from collections.abc import Callable

import typer

from ftm.commands import stderr
from ftm.errors import PartialFailure
from ftm.quarters import Quarter


def each_quarter(quarters: list[Quarter], run_one: Callable[[Quarter], None]) -> None:
    """Runs `run_one` for each quarter. A quarter that ended with recorded failures (exit 3) does
    not stop the next, whose work does not depend on it, and the whole command ends with exit 3;
    any other error stops at its quarter, and the same command goes on from there when run again
    (each stage resumes)."""
    partial = []
    for index, quarter in enumerate(quarters, 1):
        stderr.print(f"[bold]{quarter}[/] ({index} of {len(quarters)})", highlight=False)
        try:
            run_one(quarter)
        except PartialFailure as failure:
            stderr.print(f"[yellow]{quarter}:[/] {failure}", highlight=False)
            partial.append(str(quarter))
        except typer.Exit as done:
            if done.exit_code != PartialFailure.exit_code:
                raise
            partial.append(str(quarter))
    if partial:
        stderr.print(f"[yellow]some firms or batches failed in {', '.join(partial)}[/]", highlight=False)
        raise typer.Exit(PartialFailure.exit_code)
