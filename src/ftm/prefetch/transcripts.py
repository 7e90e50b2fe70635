"""Prefetch: a source's calls for one quarter become chunks of cleaned sentences and a manifest.

Firms are processed in sorted order. Every `prefetch.checkpoint_every` firms the rows since the
last checkpoint are written as a staged part, then the checkpoint; when a chunk has
`prefetch.firms_per_chunk` firms, its staged parts become `chunk_NNNN.parquet`, then the
checkpoint, then the parts are removed. The manifest is written last. A kill at any point leaves a
checkpoint that describes only files that exist, so a re-run carries on from there and writes
byte-identical chunks. Memory holds one chunk at most, whatever the quarter's size.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ftm import __version__, layout
from ftm.errors import DataError, UsageError
from ftm.prefetch.sources import DATE_FORMATS, Call, CallList, Source, open_source
from ftm.prefetch.text import CallText, Preprocessor
from ftm.quarters import Quarter, quarters_label
from ftm.schemas import (
    SENTENCES,
    ChunkInfo,
    InputProblem,
    PrefetchCheckpoint,
    PrefetchManifest,
    SkippedFirm,
    content_hash,
)
from ftm.settings import FtmSettings, PrefetchSettings
from ftm.storage import Store


@dataclass(frozen=True)
class PrefetchProgress:
    """What a progress callback is told: after the scan, then after every firm."""

    # "scanning", "preprocessing" or "done"; or a source's event, with a message for the user:
    # "connecting" (waiting for a login, perhaps a Duo approval), "connected", "reconnecting"
    phase: str
    firms_done: int = 0
    firms_total: int = 0
    sentences: int = 0
    words: int = 0
    message: str = ""


@dataclass(frozen=True)
class PrefetchSurvey:
    """What a dry run found for the quarter; nothing was written."""

    quarter: str
    n_calls: int
    n_firms: int
    n_firms_with_gvkey: int
    n_firms_with_permno: int
    n_components: int
    source: dict[str, Any]
    n_records: int = 0
    n_input_problems: int = 0
    common_problems: list[ProblemKind] = field(default_factory=list)


@dataclass(frozen=True)
class ProblemKind:
    """Input problems of one kind (their reasons alike but for quoted values and numbers)."""

    count: int  # among the problems listed in full (the first MAX_LISTED_PROBLEMS)
    where: str  # the first of them, as an example
    reason: str


@dataclass(frozen=True)
class PrefetchResult:
    manifest: PrefetchManifest
    already_done: bool  # the quarter was prefetched before; nothing was changed
    resumed_at: int  # firms found done by an earlier, interrupted run


def prefetch_quarter(
    settings: FtmSettings,
    quarter: Quarter,
    *,
    firms: Collection[str] | None = None,
    overwrite: bool = False,
    on_progress: Callable[[PrefetchProgress], None] = lambda progress: None,
    source: Source | None = None,
) -> PrefetchResult:
    """Prefetches one quarter into the storage root; see the module docstring. With `source`,
    reads from that open source and leaves it open (`prefetch_quarters`)."""
    store = Store.from_settings(settings.storage)
    manifest_path = layout.prefetch_manifest(quarter)
    if overwrite:
        store.delete(manifest_path)  # first, so a crash never leaves a manifest of old chunks
        store.delete_folder(layout.prefetch_folder(quarter))
    elif store.exists(manifest_path):
        manifest = read_manifest(store, quarter)
        _check_same_request(manifest, _request(settings, firms), store.uri(layout.prefetch_folder(quarter)))
        return PrefetchResult(manifest, already_done=True, resumed_at=0)

    on_progress(PrefetchProgress("scanning"))
    own_source = source is None
    source = source or _open_source(settings, on_progress)
    preprocessor = Preprocessor(settings.preprocess)
    try:
        found = source.calls(quarter)
        firms = _resolve_firms(found, quarter, firms)
        plan = _plan(found, quarter, firms)
        _check_problem_share(found, quarter, settings.prefetch.max_problem_share)
        plan_hash = content_hash(
            {
                "quarter": str(quarter),
                "calls": [[c.firm_id, c.transcript_id] for c in plan],
                "preprocess": settings.preprocess.fingerprint(),
                "prefetch": settings.prefetch.model_dump(),
            }
        )
        writer = _ChunkWriter(store, quarter, settings.prefetch, plan_hash)
        firm_calls = [(firm, list(calls)) for firm, calls in groupby(plan, key=lambda c: c.firm_id)]
        done = writer.checkpoint.firms_done
        remaining = [call for _, calls in firm_calls[done:] for call in calls]
        progress = PrefetchProgress("preprocessing", done, len(firm_calls), writer.checkpoint.n_sentences)
        on_progress(progress)

        texts = preprocessor.process(
            ((c, comps) for c, comps in source.components(remaining)), firm_name=lambda call: call.firm_name
        )
        for firm_id, results in _by_firm(texts):
            columns = _firm_columns(firm_id, quarter, results)
            writer.add_firm(firm_id, columns, sum(t.n_empty_components for _, t in results))
            progress = PrefetchProgress(
                "preprocessing",
                progress.firms_done + 1,
                progress.firms_total,
                progress.sentences + len(columns["sentence_id"]),
                progress.words + sum(len(text.split()) for text in columns["raw_text"]),
            )
            on_progress(progress)
        writer.finish()
        if not writer.checkpoint.firm_to_chunk:
            # No manifest, and no checkpoint that a fixed input with the same calls would resume.
            writer.clean_up()
            raise DataError(_no_firm_left(quarter, writer.checkpoint.skipped_firms, found))

        manifest = PrefetchManifest(
            quarter=str(quarter),
            source={**found.description, **_request(settings, firms)},
            created_at=datetime.now(timezone.utc),
            ftm_version=__version__,
            n_firms=len(writer.checkpoint.firm_to_chunk),
            n_calls=len(plan),
            n_chunks=len(writer.checkpoint.chunks),
            n_sentences=writer.checkpoint.n_sentences,
            preprocess={
                **settings.preprocess.model_dump(exclude={"workers", "batch_size"}),
                "spacy_model_loaded": preprocessor.model_info(),
            },
            preprocess_hash=settings.preprocess.fingerprint(),
            firm_to_chunk=writer.checkpoint.firm_to_chunk,
            chunks=writer.checkpoint.chunks,
            skipped_firms=writer.checkpoint.skipped_firms,
            input_problems=found.problems,
            n_input_problems=found.n_problems,
            n_empty_components=writer.checkpoint.n_empty_components,
        )
        store.write_json(manifest_path, manifest.to_json())
        writer.clean_up()
        on_progress(
            PrefetchProgress(
                "done", progress.firms_total, progress.firms_total, manifest.n_sentences, progress.words
            )
        )
        return PrefetchResult(manifest, already_done=False, resumed_at=done)
    finally:
        preprocessor.close()
        if own_source:
            source.close()


def prefetch_quarters(
    settings: FtmSettings,
    quarters: list[Quarter],
    *,
    firms: Collection[str] | None = None,
    overwrite: bool = False,
    on_progress: Callable[[Quarter, PrefetchProgress], None] = lambda quarter, progress: None,
) -> list[PrefetchResult]:
    """Prefetches each quarter in turn, oldest first, from one source: from WRDS one connection,
    so one Duo approval, for the whole range (it connects at the first query, so a range already
    prefetched never connects). Each quarter is its own resumable prefetch with its own chunks
    and manifest; a finished quarter is left alone. A failure stops at its quarter, and the same
    call goes on from there.

    `firms` filters every quarter to the listed firms it has calls of: a firm that held no call
    in one quarter of a range is no mistake, but one in none of them is, as is a quarter with
    none of them."""
    current = list(quarters[:1])  # the quarter being read, whom the source's events are about

    def notify(event: str, message: str) -> None:
        on_progress(current[0], PrefetchProgress(event, message=message))

    source = open_source(settings.source, notify=notify, storage=settings.storage)
    results = []
    try:
        wanted = (
            _firms_by_quarter(source, quarters, firms, _recorded_firms(settings, quarters, overwrite))
            if firms
            else {}
        )
        for quarter in quarters:
            current[:] = [quarter]
            results.append(
                prefetch_quarter(
                    settings,
                    quarter,
                    firms=wanted.get(quarter),
                    overwrite=overwrite,
                    on_progress=lambda progress, quarter=quarter: on_progress(quarter, progress),
                    source=source,
                )
            )
    finally:
        source.close()
    return results


def _recorded_firms(
    settings: FtmSettings, quarters: list[Quarter], overwrite: bool
) -> dict[Quarter, list[str]]:
    """The firms each finished quarter was prefetched for, as its manifest records them: a finished
    quarter is not asked of the source again, so a range already prefetched never connects."""
    if overwrite:
        return {}
    store = Store.from_settings(settings.storage)
    recorded = {}
    for quarter in quarters:
        if store.exists(layout.prefetch_manifest(quarter)):
            firms = read_manifest(store, quarter).source.get("firms")
            if firms:  # one prefetched for all firms is refused by its own check, with its reason
                recorded[quarter] = list(firms)
    return recorded


def _firms_by_quarter(
    source: Source,
    quarters: list[Quarter],
    firms: Collection[str],
    recorded: dict[Quarter, list[str]] | None = None,
) -> dict[Quarter, list[str]]:
    """The listed firms each quarter has calls of (from the calls' metadata, no text), or, for a
    finished quarter, those its manifest records (`recorded`)."""
    wanted = set(firms)
    recorded = recorded or {}
    found = {
        q: recorded[q] if q in recorded else sorted(wanted & {c.firm_id for c in source.calls(q).calls})
        for q in quarters
    }
    unknown = sorted(wanted - {firm for present in found.values() for firm in present})
    if unknown:
        raise UsageError(f"no calls in {', '.join(map(str, quarters))} for firm(s) {', '.join(unknown)}")
    empty = [str(q) for q, present in found.items() if not present]
    if empty:
        raise UsageError(
            f"none of the firms {', '.join(sorted(wanted))} has a call in {', '.join(empty)}: leave "
            "those quarters out of the range, or list a firm that has"
        )
    return found


def survey(
    settings: FtmSettings,
    quarter: Quarter,
    *,
    firms: Collection[str] | None = None,
    on_progress: Callable[[PrefetchProgress], None] = lambda progress: None,
    source: Source | None = None,
) -> PrefetchSurvey:
    """Counts the quarter's calls, firms, linked firms and components; writes nothing. With
    `source`, reads from that open source and leaves it open (`survey_quarters`)."""
    on_progress(PrefetchProgress("scanning"))
    own_source = source is None
    source = source or _open_source(settings, on_progress)
    try:
        found = source.calls(quarter)
        plan = _plan(found, quarter, _resolve_firms(found, quarter, firms))
        return PrefetchSurvey(
            quarter=str(quarter),
            n_calls=len(plan),
            n_firms=len({c.firm_id for c in plan}),
            n_firms_with_gvkey=len({c.firm_id for c in plan if c.gvkey}),
            n_firms_with_permno=len({c.firm_id for c in plan if c.permno is not None}),
            n_components=source.count_components(plan),
            source=found.description,
            n_records=found.n_records,
            n_input_problems=found.n_problems,
            common_problems=common_problems(found.problems),
        )
    finally:
        if own_source:
            source.close()


def survey_quarters(
    settings: FtmSettings,
    quarters: list[Quarter],
    *,
    firms: Collection[str] | None = None,
    on_progress: Callable[[Quarter, PrefetchProgress], None] = lambda quarter, progress: None,
) -> list[PrefetchSurvey]:
    """A dry run of each quarter over one source, as `prefetch_quarters` reads them."""
    current = list(quarters[:1])

    def notify(event: str, message: str) -> None:
        on_progress(current[0], PrefetchProgress(event, message=message))

    source = open_source(settings.source, notify=notify, storage=settings.storage)
    try:
        wanted = _firms_by_quarter(source, quarters, firms) if firms else {}
        found = []
        for quarter in quarters:
            current[:] = [quarter]
            found.append(
                survey(
                    settings,
                    quarter,
                    firms=wanted.get(quarter),
                    on_progress=lambda progress, quarter=quarter: on_progress(quarter, progress),
                    source=source,
                )
            )
        return found
    finally:
        source.close()


def read_manifest(store: Store, quarter: Quarter) -> PrefetchManifest:
    """The quarter's manifest, or a clear error if the quarter was never prefetched."""
    path = layout.prefetch_manifest(quarter)
    if not store.exists(path):
        raise UsageError(
            f"{quarter} is not prefetched in {store.uri()}: "
            f"run `{store.command(f'prefetch {quarter}')}` first"
        )
    return PrefetchManifest.model_validate(store.read_json(path))


def sentence_rows(
    store: Store, quarter: Quarter, sentence_ids: Collection[str], columns: list[str]
) -> pa.Table:
    """The prefetched rows of the sentences asked for, with `columns` (sentence_id first): one
    chunk at a time and only those columns, so that a few thousand sentences of a 2,000,000-sentence
    quarter cost a scan of their columns, not the quarter in memory."""
    wanted = pa.array(sorted(set(sentence_ids)), pa.string())
    columns = ["sentence_id", *(column for column in columns if column != "sentence_id")]
    schema = pa.schema([SENTENCES.field(column) for column in columns])
    if len(wanted) == 0:
        return schema.empty_table()
    parts = []
    for chunk in sorted(set(read_manifest(store, quarter).firm_to_chunk.values())):
        table = store.read_table(f"{layout.prefetch_folder(quarter)}/{chunk}", SENTENCES, columns=columns)
        parts.append(table.filter(pc.is_in(table.column("sentence_id"), value_set=wanted)))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def run_command(store: Store, quarters: list[Quarter]) -> str:
    """The `ftm run` that makes these quarters from the source they were prefetched from: with
    --input where a quarter came from a file; for both sources where none was prefetched, since
    `ftm run` without --input reads WRDS."""
    label = quarters_label(quarters)
    inputs = set()
    for quarter in quarters:
        if store.exists(layout.prefetch_manifest(quarter)):
            source = read_manifest(store, quarter).source
            if source.get("kind") == "files" and source.get("path"):
                inputs.add(str(source["path"]))
            elif source.get("kind"):
                inputs.add("")
    if len(inputs) == 1:
        (path,) = inputs
        return f"`{store.command(f'run {label}' + (f' --input {shlex.quote(path)}' if path else ''))}`"
    return (
        f"`{store.command(f'run {label} --input FILE')}` for transcript files (or "
        f"`{store.command(f'run {label}')}` for WRDS)"
    )


def linked_firms(store: Store, quarter: Quarter) -> tuple[int, int]:
    """How many of the quarter's firms have a PERMNO and how many a GVKEY (the panel's keys for
    CRSP and Compustat), from those two columns of the chunks alone."""
    permnos, gvkeys = set(), set()
    for chunk in sorted(set(read_manifest(store, quarter).firm_to_chunk.values())):
        columns = ["firm_id", "permno", "gvkey"]
        table = store.read_table(f"{layout.prefetch_folder(quarter)}/{chunk}", SENTENCES, columns=columns)
        firms = table.column("firm_id")
        permnos.update(firms.filter(pc.is_valid(table.column("permno"))).unique().to_pylist())
        gvkeys.update(firms.filter(pc.is_valid(table.column("gvkey"))).unique().to_pylist())
    return len(permnos), len(gvkeys)


def _open_source(settings: FtmSettings, on_progress: Callable[[PrefetchProgress], None]) -> Source:
    return open_source(
        settings.source,
        notify=lambda event, message: on_progress(PrefetchProgress(event, message=message)),
        storage=settings.storage,
    )


def common_problems(problems: list[InputProblem], most: int = 3) -> list[ProblemKind]:
    """The most common kinds of problem, each with its first instance as an example."""
    kinds: dict[str, list[InputProblem]] = {}
    for problem in problems:
        kinds.setdefault(_problem_kind(problem.reason), []).append(problem)
    counted = Counter({kind: len(found) for kind, found in kinds.items()})
    return [
        ProblemKind(count, kinds[kind][0].where, kinds[kind][0].reason)
        for kind, count in counted.most_common(most)
    ]


def _problem_kind(reason: str) -> str:
    # "'1234.0' is not a GVKEY" and "'77.5' is not a GVKEY" are one kind; so are columns and bytes.
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason))


def _describe_problems(kinds: list[ProblemKind]) -> str:
    return "; ".join(f"{kind.count}× {kind.reason} (first at {kind.where})" for kind in kinds)


def _check_problem_share(found: CallList, quarter: Quarter, most: float) -> None:
    """Refuses an input most of whose records cannot be used: what is left is not the quarter."""
    total = found.n_records or len(found.calls) + found.n_problems
    if not found.n_problems or found.n_problems <= most * total:
        return
    raise DataError(
        f"{found.n_problems:,} of the input's {total:,} records could not be used, more than "
        f"prefetch.max_problem_share ({most:.0%}), so nothing of {quarter} was written. Most common: "
        f"{_describe_problems(common_problems(found.problems))}. Fix the input and run the same "
        "command, or raise prefetch.max_problem_share to keep what can be used"
    )


def _no_firm_left(quarter: Quarter, skipped: list[SkippedFirm], found: CallList) -> str:
    reasons = Counter(skip.reason for skip in skipped)
    shown = "; ".join(f"{count} firm(s): {reason}" for reason, count in reasons.most_common(3))
    problems = (
        f" The input also had {found.n_problems:,} unusable record(s): "
        f"{_describe_problems(common_problems(found.problems))}."
        if found.n_problems
        else ""
    )
    return (
        f"no firm of {quarter} has a usable sentence ({shown}), so no manifest was written.{problems} "
        "Fix the input and run the same command"
    )


def _request(settings: FtmSettings, firms: Collection[str] | None) -> dict[str, Any]:
    """What a prefetch was asked to read, as the manifest records it: the source, the input file
    (resolved, so that a relative path names the same file from anywhere) and the firms."""
    request: dict[str, Any] = {"kind": settings.source.kind}
    if settings.source.kind == "files" and settings.source.path:
        path = settings.source.path
        request["path"] = path if path.startswith("s3://") else str(Path(path).expanduser().resolve())
    request["firms"] = sorted(firms) if firms else None
    return request


def _check_same_request(manifest: PrefetchManifest, request: dict[str, Any], folder: str) -> None:
    """Refuses to call a finished quarter done when this run asks for another input or firms.
    A manifest of an earlier ftm, without `firms`, is compared on what it has."""
    recorded = manifest.source

    def same(key: str) -> bool:
        if key == "firms":  # as the user may type them: `hmst` is the HMST recorded
            folded = [sorted(firm.casefold() for firm in side[key] or []) for side in (recorded, request)]
            return folded[0] == folded[1]
        return recorded[key] == request[key]

    differs = [key for key in request if key in recorded and not same(key)]
    if not differs:
        return

    def said(source: dict[str, Any]) -> str:
        firms = source.get("firms")
        chosen = f"firms {','.join(firms)}" if firms else "all firms"
        return f"{source.get('path') or source.get('kind')} ({chosen})"

    raise UsageError(
        f"{manifest.quarter} in {folder} was prefetched from {said(recorded)}, not from {said(request)}: "
        "pass --overwrite to prefetch it again from this input, or another --root to keep both"
    )


def _resolve_firms(found: CallList, quarter: Quarter, firms: Collection[str] | None) -> list[str] | None:
    """The firm ids of the input that `--firms` names. Tickers are matched whatever their case
    (`hmst` is HMST) when that names one firm; an unknown one is refused with the close matches."""
    if not firms or not found.calls:  # no calls at all: `_plan` says why
        return sorted(firms) if firms else None
    present = sorted({call.firm_id for call in found.calls})
    by_fold: dict[str, list[str]] = {}
    for firm in present:
        by_fold.setdefault(firm.casefold(), []).append(firm)
    resolved: set[str] = set()
    unknown: list[str] = []
    for firm in firms:
        if firm in by_fold.get(firm.casefold(), ()):
            resolved.add(firm)
        elif len(by_fold.get(firm.casefold(), ())) == 1:
            resolved.update(by_fold[firm.casefold()])
        else:
            unknown.append(firm)
    if unknown:
        upper = {firm.upper(): firm for firm in present}
        hints = []
        for firm in sorted(unknown):
            close = by_fold.get(firm.casefold()) or [
                upper[match] for match in difflib.get_close_matches(firm.upper(), list(upper), n=3)
            ]
            if close:
                hints.append(f"{firm}: did you mean {' or '.join(close)}?")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise UsageError(f"no calls in {quarter} for firm(s) {', '.join(sorted(unknown))}{hint}")
    return sorted(resolved)


def _plan(found: CallList, quarter: Quarter, firms: Collection[str] | None) -> list[Call]:
    """The calls to process, sorted by firm, then date, then transcript id: a stable order."""
    calls = found.calls
    if not calls and found.n_unreadable_dates:
        raise UsageError(
            f"no call of the input could be placed in {quarter}: {found.n_unreadable_dates:,} call "
            f"date(s) or fiscal_quarter label(s) could not be read, such as {found.unreadable_date}. "
            f"Accepted: {DATE_FORMATS}"
        )
    if firms:
        wanted = set(firms)
        calls = [call for call in calls if call.firm_id in wanted]
    if not calls:
        raise DataError(
            f"the input has no calls in {quarter}: check the quarter, the input, and "
            "source.quarter_rule (a call's quarter comes from its call_date, else its fiscal_quarter)"
        )
    return sorted(calls, key=lambda c: (c.firm_id, c.call_date or date.min, c.transcript_id))


def _by_firm(
    texts: Iterator[tuple[Call, CallText]],
) -> Iterator[tuple[str, list[tuple[Call, CallText]]]]:
    for firm_id, results in groupby(texts, key=lambda item: item[0].firm_id):
        yield firm_id, list(results)


def _firm_columns(
    firm_id: str, quarter: Quarter, results: list[tuple[Call, CallText]]
) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name in SENTENCES.names}
    position = 0
    for call, text in results:
        for sentence in text.sentences:
            columns["firm_id"].append(firm_id)
            columns["firm_name"].append(call.firm_name)
            columns["permno"].append(call.permno)
            columns["gvkey"].append(call.gvkey)
            columns["transcript_id"].append(call.transcript_id)
            columns["transcript_collection"].append(call.collection_type)
            columns["earnings_call_date"].append(call.call_date)
            columns["quarter"].append(str(quarter))
            columns["sentence_id"].append(f"{call.transcript_id}/{sentence.key}")
            columns["raw_text"].append(sentence.raw_text)
            columns["cleaned_text"].append(sentence.cleaned_text)
            columns["speaker_type"].append(sentence.speaker_type)
            columns["position"].append(position)
            position += 1
    return columns


class _ChunkWriter:
    """Writes staged parts, chunks and checkpoints in the one order that survives a kill."""

    def __init__(self, store: Store, quarter: Quarter, settings: PrefetchSettings, plan_hash: str):
        self.store = store
        self.quarter = quarter
        self.settings = settings
        path = layout.prefetch_checkpoint(quarter)
        if store.exists(path):
            self.checkpoint = PrefetchCheckpoint.model_validate(store.read_json(path))
            if self.checkpoint.plan_hash != plan_hash:
                raise UsageError(
                    f"an unfinished prefetch of {quarter} in {store.uri()} was started with other "
                    "input, firms or settings: run again with --overwrite to start over"
                )
        else:
            self.checkpoint = PrefetchCheckpoint(
                quarter=str(quarter), plan_hash=plan_hash, firms_done=0, updated_at=_now()
            )
        self._rows: dict[str, list[Any]] = {name: [] for name in SENTENCES.names}
        self._pending_firms = 0
        self._pending_empty = 0
        self._pending_skips: list[SkippedFirm] = []
        self._pending_chunk_firms: list[str] = []

    def add_firm(self, firm_id: str, columns: dict[str, list[Any]], n_empty_components: int) -> None:
        self._pending_firms += 1
        self._pending_empty += n_empty_components
        if not columns["sentence_id"]:
            self._pending_skips.append(
                SkippedFirm(firm_id=firm_id, reason="no sentences left after preprocessing")
            )
        else:
            for name, values in columns.items():
                self._rows[name].extend(values)
            self._pending_chunk_firms.append(firm_id)
        chunk_size = len(self.checkpoint.chunk_firms) + len(self._pending_chunk_firms)
        if chunk_size >= self.settings.firms_per_chunk:
            self._write_chunk()
        elif self._pending_firms >= self.settings.checkpoint_every:
            self._stage_part()

    def finish(self) -> None:
        if self.checkpoint.chunk_firms or self._pending_chunk_firms:
            self._write_chunk()
        elif self._pending_firms:
            self._commit()

    def clean_up(self) -> None:
        self.store.delete(layout.prefetch_checkpoint(self.quarter))
        self.store.delete_folder(layout.prefetch_staging(self.quarter))

    def _stage_part(self) -> None:
        if self._rows["sentence_id"]:
            path = layout.prefetch_staged_part(self.quarter, self.checkpoint.next_part)
            self.store.write_table(path, self._take_rows(), SENTENCES)
            self.checkpoint.staged_parts.append(path)
            self.checkpoint.next_part += 1
        self._commit()

    def _write_chunk(self) -> None:
        tables = [self.store.read_table(path, SENTENCES) for path in self.checkpoint.staged_parts]
        if self._rows["sentence_id"]:
            tables.append(self._take_rows())
        table = pa.concat_tables(tables).combine_chunks()
        index = len(self.checkpoint.chunks)
        name = layout.chunk_name(index)
        size = self.store.write_table(layout.prefetch_chunk(self.quarter, index), table, SENTENCES)
        firms = self.checkpoint.chunk_firms + self._pending_chunk_firms
        self.checkpoint.chunks.append(
            ChunkInfo(file=name, n_firms=len(firms), n_rows=table.num_rows, bytes=size)
        )
        self.checkpoint.firm_to_chunk.update(dict.fromkeys(firms, name))
        self.checkpoint.n_sentences += table.num_rows
        finished_parts = self.checkpoint.staged_parts
        self.checkpoint.staged_parts = []
        self.checkpoint.chunk_firms = []
        self._pending_chunk_firms = []
        self._commit()
        for path in finished_parts:  # only now: the checkpoint no longer needs them
            self.store.delete(path)

    def _commit(self) -> None:
        """Records the pending firms as done; called only after their rows are on storage."""
        self.checkpoint.firms_done += self._pending_firms
        self.checkpoint.n_empty_components += self._pending_empty
        self.checkpoint.skipped_firms.extend(self._pending_skips)
        self.checkpoint.chunk_firms.extend(self._pending_chunk_firms)
        self.checkpoint.updated_at = _now()
        self.store.write_json(layout.prefetch_checkpoint(self.quarter), self.checkpoint.to_json())
        self._pending_firms = self._pending_empty = 0
        self._pending_skips = []
        self._pending_chunk_firms = []

    def _take_rows(self) -> pa.Table:
        table = pa.table(self._rows, schema=SENTENCES)
        self._rows = {name: [] for name in SENTENCES.names}
        return table


def _now() -> datetime:
    return datetime.now(timezone.utc)
