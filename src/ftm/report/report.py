"""Report (`ftm report QUARTERS`): a quarter's or a range's outputs in (themes, names, the panel
and its evidence; for a range also `trends/RANGE/`), one self-contained HTML page out
(`reports/LABEL.html`): charts, tables and a firm search that work offline, from a file, with
nothing fetched. content.py reads what the page shows; page.py writes the page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ftm import __version__, layout
from ftm.errors import DataError, SettingsError, UsageError
from ftm.prefetch import run_command
from ftm.quarters import Quarter, quarters_label
from ftm.report.content import ContentProgress, gather
from ftm.report.page import render
from ftm.schemas import content_hash
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
    target = _local_target(out) if out is not None else None  # before the work, not after it
    document = gather(store, quarters, label, on_progress)
    document["provenance"] = {
        "label": label,
        "quarters": [str(quarter) for quarter in quarters],
        "ftm_version": __version__,
        # The settings the page was made with, secrets masked (pydantic dumps them as stars).
        "settings_hash": content_hash(settings.model_dump(mode="json"))[:12],
        "made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "root": store.uri(),
    }
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


def _local_target(out: Path) -> Path:
    """Where --out puts the page (a file, or report.html in a folder), checked before any work:
    its folder exists (else a usage error) and can be written (else a settings error, exit 4)."""
    target = out / "report.html" if out.is_dir() else out
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
