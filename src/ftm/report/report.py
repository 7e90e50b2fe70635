"""Report (`ftm report QUARTERS`): a quarter's or a range's outputs in (themes, names, the panel
and its evidence; for a range also `trends/RANGE/`), one self-contained HTML page out
(`reports/LABEL.html`): charts, tables and a firm search that work offline, from a file, with
nothing fetched. content.py reads what the page shows; page.py writes the page.

`ftm report --measure NAME` is the same for a measured subject (`measures/NAME/` in,
`reports/measure-NAME.html` out); measure.py reads what its page shows.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftm import __version__, layout
from ftm.errors import DataError, SettingsError, UsageError
from ftm.prefetch import run_command
from ftm.quarters import Quarter, quarters_label
from ftm.report.content import ContentProgress, gather
from ftm.report.measure import gather_measure, read_subject
from ftm.report.page import render
from ftm.schemas import MeasureSubject, content_hash
from ftm.settings import FtmSettings
from ftm.storage import Store, probe_folder

ReportProgress = ContentProgress


@dataclass(frozen=True)
class ReportResult:
    label: str  # the quarter or range, as the file is named
    quarters: list[str]
    path: str  # the page, relative to the storage root
    out: str | None  # the local copy asked for with --out
    size_bytes: int
    n_themes: int  # of kind theme, over the quarters
    n_reporting: int
    n_firms: int


@dataclass(frozen=True)
class MeasureReportResult:
    name: str  # the measure's, as `ftm measure --name` gave it
    quarters: list[str]
    path: str  # the page, relative to the storage root
    out: str | None  # the local copy asked for with --out
    size_bytes: int
    n_firms: int  # over the quarters
    n_exposed: int  # in the latest quarter: firms with two sentences or more about the subject
    n_evidence: int  # sentences the page quotes, over the quarters


def report_quarters(
    settings: FtmSettings,
    quarters: list[Quarter],
    *,
    out: Path | None = None,
    on_progress: Callable[[ReportProgress], None] = lambda progress: None,
) -> ReportResult:
    """Writes the report of one quarter, or of a range whose trends were computed (`ftm trends`)."""
    store = Store.from_settings(settings.storage)
    quarters = sorted(set(quarters))
    label = quarters_label(quarters)
    _check_inputs(store, quarters, label)
    target = _local_target(out, "report.html") if out is not None else None  # before the work
    document = gather(store, quarters, label, on_progress)
    document["provenance"] = _provenance(settings, store, label, quarters)
    on_progress(ReportProgress("writing"))
    page = render(document)
    path = layout.report(label)
    store.write_bytes(path, page)
    if target is not None:
        _write_local(target, page)
    themes = [page_quarter["themes"]["kind"] for page_quarter in document["quarters"]]
    return ReportResult(
        label=label,
        quarters=[str(quarter) for quarter in quarters],
        path=path,
        out=str(out) if out is not None else None,
        size_bytes=len(page),
        n_themes=sum(kinds.count("theme") for kinds in themes),
        n_reporting=sum(kinds.count("reporting") for kinds in themes),
        n_firms=len(document["firms"]["id"]),
    )


def report_measure(
    settings: FtmSettings,
    name: str,
    quarters: list[Quarter] | None = None,
    *,
    out: Path | None = None,
) -> MeasureReportResult:
    """Writes the page of the subject measured as `name` (`ftm measure --name NAME`), over its own
    quarters or those of them asked for."""
    store = Store.from_settings(settings.storage)
    subject = read_subject(store, name)
    if subject is None:
        raise UsageError(_no_measure(store, name))
    measured = sorted(Quarter.parse(calibration.quarter) for calibration in subject.quarters)
    quarters = sorted(set(quarters)) if quarters else measured
    _check_measured(store, subject, quarters, measured)
    target = _local_target(out, f"measure-{name}.html") if out is not None else None  # before the work
    document = gather_measure(store, subject, quarters)
    document["provenance"] = _provenance(settings, store, name, quarters)
    page = render(document, "measure")
    path = layout.measure_report(name)
    store.write_bytes(path, page)
    if target is not None:
        _write_local(target, page)
    pages = document["quarters"]
    return MeasureReportResult(
        name=name,
        quarters=[str(quarter) for quarter in quarters],
        path=path,
        out=str(out) if out is not None else None,
        size_bytes=len(page),
        n_firms=len(document["firms"]["id"]),
        n_exposed=pages[-1]["n_firms_exposed"],
        n_evidence=sum(len(page_quarter["evidence"]["firm"]) for page_quarter in pages),
    )


def _provenance(settings: FtmSettings, store: Store, label: str, quarters: list[Quarter]) -> dict[str, Any]:
    return {
        "label": label,
        "quarters": [str(quarter) for quarter in quarters],
        "ftm_version": __version__,
        # The settings the page was made with, secrets masked (pydantic dumps them as stars).
        "settings_hash": content_hash(settings.model_dump(mode="json"))[:12],
        "made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "root": store.uri(),
    }


def _no_measure(store: Store, name: str) -> str:
    command = store.command(f'measure "DESCRIPTION" QUARTERS --name {shlex.quote(name)}')
    others = [folder.rsplit("/", 1)[-1] for folder in store.folders(layout.measures_root())]
    found = [other for other in others if other != name and store.exists(layout.measure_subject(other))]
    known = f" (measured here: {', '.join(found)})" if found else ""
    return f"no measure {name!r} in {store.uri()}{known}: run `{command}` first"


def _check_measured(
    store: Store, subject: MeasureSubject, quarters: list[Quarter], measured: list[Quarter]
) -> None:
    """Every quarter asked for is in the measure; else the command that adds it, with the quarters
    measured (a rerun keeps those and writes the range it is given)."""
    missing = [quarter for quarter in quarters if quarter not in measured]
    if not missing:
        return
    every = quarters_label(sorted({*measured, *quarters}))
    if subject.examples:  # from a subjects file: the description alone would be another subject
        command = store.command(f"measure {every} --subjects FILE")
        how = f"`{command}` with the subjects file that holds {subject.name!r}"
    else:
        command = store.command(f"measure {shlex.quote(subject.description)} {every} --name {subject.name}")
        how = f"`{command}`"
    raise UsageError(
        f"{quarters_label(missing)} {'is' if len(missing) == 1 else 'are'} not in the measure "
        f"{subject.name!r} (its quarters: {quarters_label(measured)}): run {how} to add "
        f"{'it' if len(missing) == 1 else 'them'}, or leave QUARTERS out for the measure's own"
    )


def _check_inputs(store: Store, quarters: list[Quarter], label: str) -> None:
    missing = [str(quarter) for quarter in quarters if not store.exists(layout.themes(quarter))]
    if missing:
        raise UsageError(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no themes in {store.uri()}: "
            f"run {run_command(store, quarters)}, or `{store.command('reduce --quarter QUARTER')}` "
            f"for {'it' if len(missing) == 1 else 'each'}"
        )
    if len(quarters) > 1 and not store.exists(layout.trends(label)):
        raise UsageError(
            f"{label} has no trends in {store.uri()}: run `{store.command(f'trends {label}')}` first "
            "(a report of a range shows each theme through time), or report one quarter"
        )


def _local_target(out: Path, default_name: str) -> Path:
    """Where --out puts the page (a file, or `default_name` in a folder), checked before any work:
    its folder exists (else a usage error) and can be written (else a settings error, exit 4)."""
    target = out / default_name if out.is_dir() else out
    if not target.parent.is_dir():
        raise UsageError(
            f"--out {out}: the folder {target.parent} does not exist; create it or choose another"
        )
    try:
        probe_folder(target.parent)
    except OSError as error:
        raise SettingsError(
            f"--out {out}: cannot write to {target.parent} ({error.strerror or error}): choose a folder "
            "you can write, or make this one writable"
        ) from None
    return target


def _write_local(target: Path, page: bytes) -> None:
    """The page at `target`, written whole or not at all."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(page)
        partial.replace(target)
    except OSError as error:
        with contextlib.suppress(OSError):  # on a read-only disk there is nothing to remove
            partial.unlink(missing_ok=True)
        raise DataError(f"could not write {target}: {error.strerror or error}") from None
