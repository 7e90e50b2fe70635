"""`ftm measure`: each firm's exposure to subjects named in plain words, quarter by quarter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ftm import layout
from ftm.commands import RootOption, print_json, settings_from, stderr, writable_store
from ftm.errors import UsageError
from ftm.measures import MeasureProgress, MeasureResult, Subject, measure_subjects, name_from, read_subjects
from ftm.quarters import parse_quarters
from ftm.storage import Store

EXAMPLES = """\
Examples:

  # one subject over a range of mapped quarters
  ftm measure "supply chain disruptions" 2021Q1..2021Q4 --name supply_chain

  # several subjects from a file, a summary as JSON on stdout
  ftm measure 2020Q1..2021Q4 --subjects subjects.toml --json

where subjects.toml holds NAME = "description", or a table with example sentences:

  pandemic = "the coronavirus pandemic and its effects on business"
  [labour]
  description = "shortages of workers and rising wages"
  examples = ["We cannot hire enough drivers."]

Writes measures/NAME/firm_quarter.parquet (every prefetched firm and quarter: PERMNO, GVKEY, the
call date, its sentences about the subject, their share of its sentences, Loughran-McDonald
tone), sentences.parquet (the evidence: each sentence counted, its similarity and text) and
subject.json (the description, the embedding path, each quarter's threshold, the ftm version).
Every quarter must be mapped first (`ftm run`, or prefetch and submit). Only the descriptions are
embedded; a rerun goes on from the quarters done and writes the same files.
"""


def measure(
    ctx: typer.Context,
    arguments: Annotated[
        list[str],
        typer.Argument(
            help="DESCRIPTION QUARTERS, or QUARTERS alone with --subjects. Quarters as 2023Q1, a range "
            "2020Q1..2021Q4 or a list 2020Q1,2020Q3.",
            show_default=False,
            metavar="[DESCRIPTION] QUARTERS",
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="The measure's name (its folder); default: the description's first words."
        ),
    ] = None,
    subjects_file: Annotated[
        Path | None,
        typer.Option(
            "--subjects", help='A TOML file of subjects: NAME = "description", or tables.', show_default=False
        ),
    ] = None,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON to stdout.")] = False,
) -> None:
    """Measure each firm's exposure to a subject described in plain words, quarter by quarter.

    A firm's exposure is the share of its sentences that are about the subject. Those are found
    among the embeddings the map stored, with a threshold calibrated per subject and quarter
    without labels: the query is re-centred on the quarter's sentences nearest the description,
    and a sentence counts when its similarity to that query is at least 0.6 times theirs.
    """
    subjects, quarters = _subjects_and_quarters(arguments, name, subjects_file)
    settings = settings_from(ctx, storage__root=root)
    store = writable_store(settings)
    result = measure_subjects(settings, store, parse_quarters(quarters), subjects, on_progress=_progress)
    if as_json:
        print_json(
            {
                "quarters": result.quarters,
                "reused_quarters": result.reused,
                "subjects": {
                    name: {
                        "location": store.uri(layout.measure_folder(name)),
                        "quarters": [c.model_dump(mode="json") for c in result.calibrations[name]],
                    }
                    for name in result.subjects
                },
            }
        )
    report(result, store)


def _subjects_and_quarters(
    arguments: list[str], name: str | None, subjects_file: Path | None
) -> tuple[list[Subject], str]:
    if subjects_file is not None:
        if len(arguments) != 1 or name is not None:
            raise UsageError(
                "with --subjects, give the quarters alone (and no --name): "
                "ftm measure QUARTERS --subjects FILE"
            )
        return read_subjects(subjects_file), arguments[0]
    if len(arguments) != 2:
        raise UsageError(
            'give a description and quarters, as in: ftm measure "supply chain disruptions" 2021Q1..2021Q4 '
            "--name supply_chain (or quarters alone with --subjects FILE)"
        )
    description, quarters = arguments
    return [Subject(name or name_from(description), description)], quarters


def _progress(state: MeasureProgress) -> None:
    if state.phase == "embedding":
        stderr.print("measure: embedding the descriptions", highlight=False)
    elif state.phase == "reading":
        stderr.print(f"measure: {state.quarter} ({state.done + 1} of {state.total})", highlight=False)


def report(result: MeasureResult, store: Store) -> None:
    reused = f"; {len(result.reused)} quarter(s) already measured were kept" if result.reused else ""
    stderr.print(
        f"[green]measured {len(result.subjects)} subject(s) over {len(result.quarters)} quarter(s)[/]{reused}"
    )
    for name in result.subjects:
        cells = ", ".join(
            f"{c.quarter}: {c.n_firms_exposed:,} of {c.n_firms:,} firms (threshold {c.threshold:.3f})"
            for c in result.calibrations[name]
        )
        location = escape(store.uri(layout.measure_folder(name)))
        stderr.print(
            f"  {escape(name)}: {cells}\n  → {location}/ (firm_quarter, sentences, subject.json)",
            highlight=False,
        )
