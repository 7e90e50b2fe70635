"""Transcript files: JSON Lines (one call per line, the corpus format) or CSV (one component per
row), plain or gzip-compressed.

The input is streamed once: the calls of the requested quarter are validated and copied into a
local spool file, and only their offsets stay in memory; their text is read back from the spool
when `prefetch` asks for it. So memory never depends on the size of the input.

CSV form: one row per component, with columns `transcript_id`, the firm id column (`ticker` by
default), `order`, `text`, and `call_date` or `fiscal_quarter` (or both); optional columns are
`company_name`, `role`, `speaker`, `permno` and `gvkey`. A call's metadata comes from its first row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ftm.errors import DataError, UsageError
from ftm.prefetch.sources import MAX_LISTED_PROBLEMS, Call, CallList, Component, speaker_type
from ftm.quarters import Quarter
from ftm.schemas import InputProblem
from ftm.settings import SourceSettings, StorageSettings

CSV_REQUIRED = ("transcript_id", "order", "text")

# A GVKEY as pandas writes a column with gaps in it: 1234.0 (float), which is still 001234.
_INTEGRAL = re.compile(r"(\d+)(?:\.0*)?")


class _ComponentIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order: int
    role: str | None = None
    text: str | None = None


class _CallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    transcript_id: str
    company_name: str | None = None
    permno: int | None = None
    gvkey: str | None = None
    components: list[_ComponentIn] = []

    @field_validator("transcript_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank")
        return value.strip()

    @field_validator("permno", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # an empty CSV cell

    @field_validator("gvkey", mode="before")
    @classmethod
    def _six_digits(cls, value: Any) -> str | None:
        if value in (None, ""):
            return None
        text = str(value).strip()
        integral = _INTEGRAL.fullmatch(text)
        if integral is None or len(integral.group(1)) > 6:
            raise ValueError(f"{value!r} is not a GVKEY (up to six digits)")
        return integral.group(1).zfill(6)


class FilesSource:
    """Reads transcripts from one JSON Lines or CSV file (see the module docstring)."""

    def __init__(self, settings: SourceSettings, storage: StorageSettings | None = None):
        if not settings.path:
            raise UsageError("the files source needs an input file: pass --input PATH (or set source.path)")
        self._folder = tempfile.TemporaryDirectory(prefix="ftm-spool-")
        if settings.path.startswith("s3://"):
            # Read from a local copy: the scan seeks and re-reads, which S3 streams cannot.
            self.path = _download(settings.path, storage, Path(self._folder.name))
            self.origin = settings.path
        else:
            self.path = Path(settings.path).expanduser()
            self.origin = str(self.path.resolve())
        if not self.path.is_file():
            self._folder.cleanup()
            raise UsageError(f"input {self.path} does not exist or is not a file")
        self.format = _format_of(self.path) if settings.format == "auto" else settings.format
        self.firm_id_field = settings.firm_id_field
        self.quarter_rule = settings.quarter_rule
        self._spool = open(os.path.join(self._folder.name, "calls.jsonl"), "w+b")  # noqa: SIM115
        self._offsets: dict[str, list[tuple[int, int]]] = {}

    # --- the Source protocol -----------------------------------------------------------------

    def calls(self, quarter: Quarter) -> CallList:
        self._spool.seek(0)
        self._spool.truncate()
        self._offsets.clear()
        scan = _Scan(quarter, self.quarter_rule)
        try:
            if _is_empty(self.path):
                raise UsageError(f"{self.path} is empty: give a transcript file with calls in it")
            with _open_binary(self.path) as stream:
                if self.format == "jsonl":
                    self._scan_jsonl(stream, scan)
                else:
                    self._scan_csv(stream, scan)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise DataError(
                f"{self.path}: the gzip data is damaged or cut short ({error}); "
                "copy or download the file again"
            ) from error
        self._spool.flush()
        description = {
            "kind": "files",
            "path": self.origin,
            "format": self.format,
            "firm_id_field": self.firm_id_field,
            "quarter_rule": self.quarter_rule,
            "calls_by": scan.calls_by,
            "n_records": scan.n_records,
            "n_records_without_quarter": scan.n_unplaced,
        }
        if scan.calls_by["call_date"]:
            description["call_date_range"] = {
                "start": quarter.start.isoformat(),
                "end": quarter.end.isoformat(),
                "half_open": True,
            }
        return CallList(
            list(scan.calls.values()),
            description,
            scan.problems,
            scan.n_problems,
            n_records=scan.n_records,
            n_unreadable_dates=scan.n_unreadable_dates,
            unreadable_date=scan.unreadable_date,
        )

    def components(self, calls: Sequence[Call]) -> Iterator[tuple[Call, list[Component]]]:
        for call in calls:
            rows: list[list[Any]] = []
            for offset, length in self._offsets.get(call.transcript_id, ()):
                self._spool.seek(offset)
                rows.extend(json.loads(self._spool.read(length)))
            rows.sort(key=lambda row: row[0])
            yield call, [Component(order, kind, text) for order, kind, text in rows]

    def count_components(self, calls: Sequence[Call]) -> int:
        return sum(len(components) for _, components in self.components(calls))

    def close(self) -> None:
        self._spool.close()
        self._folder.cleanup()

    # --- scanning ----------------------------------------------------------------------------

    def _scan_jsonl(self, stream: BinaryIO, scan: _Scan) -> None:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            scan.n_records += 1
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                scan.problem(where, f"not valid UTF-8 ({error.reason} at byte {error.start})")
                continue
            except json.JSONDecodeError as error:
                scan.problem(where, f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(record, dict):
                scan.problem(where, "not a JSON object")
                continue
            placed = self._place(record, where, scan)
            if placed is None:
                continue
            try:
                parsed = _CallIn.model_validate(record)
            except ValidationError as error:
                scan.problem(where, _first_error(error))
                continue
            call = scan.add(*placed, parsed)
            rows = [[c.order, speaker_type(c.role), c.text or ""] for c in parsed.components]
            self._spool_rows(call.transcript_id, rows)

    def _scan_csv(self, stream: BinaryIO, scan: _Scan) -> None:
        # Components can be long; csv's default limit of 128 KiB per field would refuse them.
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        columns = reader.fieldnames or []
        required = [*CSV_REQUIRED, self.firm_id_field]
        missing = [name for name in required if name not in columns]
        if not {"call_date", "fiscal_quarter"} & set(columns):
            missing.append("call_date or fiscal_quarter")
        if not columns:
            raise UsageError(f"{self.path} is empty: give a transcript file with calls in it")
        if missing:  # the input's shape, as a missing file is: the user's to fix (exit 2)
            raise UsageError(
                f"{self.path}: CSV column(s) missing: {', '.join(missing)}. A transcript CSV has "
                f"one row per component with columns {', '.join(required)}, and call_date or "
                "fiscal_quarter (company_name, role, speaker, permno, gvkey optional)."
            )
        for number, row in enumerate(reader, start=2):
            where = f"row {number}"
            scan.n_records += 1
            if any("\udc80" <= ch <= "\udcff" for value in row.values() if value for ch in value):
                scan.problem(where, "not valid UTF-8")
                continue
            if None in row:
                scan.problem(where, "more fields than the header has columns")
                continue
            transcript_id = (row.get("transcript_id") or "").strip()
            call = scan.calls.get(transcript_id)
            if call is None:  # the call's first row: place it, and take its metadata from here
                placed = self._place(row, where, scan)
                if placed is None:
                    continue
                try:
                    parsed = _CallIn.model_validate({**row, "components": []})
                except ValidationError as error:
                    scan.problem(where, _first_error(error))
                    continue
                call = scan.add(*placed, parsed)
            try:
                component = _ComponentIn.model_validate(row)
            except ValidationError as error:
                scan.problem(where, _first_error(error))
                continue
            rows = [[component.order, speaker_type(component.role), component.text or ""]]
            self._spool_rows(call.transcript_id, rows)

    def _place(self, record: dict[str, Any], where: str, scan: _Scan) -> tuple[Call, str] | None:
        """The record's call and the rule that placed it in the quarter, or None if it is not in
        the quarter or cannot be used (then with a problem noted)."""
        firm_id = str(record.get(self.firm_id_field) or "").strip()
        transcript_id = str(record.get("transcript_id") or "").strip()
        if not firm_id:
            scan.problem(where, f"no {self.firm_id_field} (the firm id field)")
            return None
        if not transcript_id:
            scan.problem(where, "no transcript_id")
            return None
        try:
            call_date = _date(record.get("call_date"))
        except ValueError:
            scan.unreadable(where, f"call_date {record.get('call_date')!r} is not an ISO date")
            return None
        label = str(record.get("fiscal_quarter") or "").strip() or None
        placed_by = scan.placed_by(call_date, label, where)
        if placed_by is None:
            return None
        if transcript_id in scan.calls:
            scan.problem(where, f"transcript_id {transcript_id!r} appears twice; the first was kept")
            return None
        firm_name = str(record.get("company_name") or "").strip() or None
        return Call(firm_id, firm_name, transcript_id, call_date), placed_by

    def _spool_rows(self, transcript_id: str, rows: list[list[Any]]) -> None:
        data = json.dumps(rows, ensure_ascii=False).encode("utf-8")
        self._spool.seek(0, os.SEEK_END)
        self._offsets.setdefault(transcript_id, []).append((self._spool.tell(), len(data)))
        self._spool.write(data)


class _Scan:
    """What one pass over the input found for one quarter."""

    def __init__(self, quarter: Quarter, rule: str):
        self.quarter = quarter
        self.rule = rule
        self.calls: dict[str, Call] = {}
        self.calls_by = {"call_date": 0, "fiscal_quarter": 0}
        self.problems: list[InputProblem] = []
        self.n_problems = 0
        self.n_records = 0
        self.n_unplaced = 0
        self.n_unreadable_dates = 0
        self.unreadable_date: str | None = None

    def problem(self, where: str, reason: str) -> None:
        self.n_problems += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(InputProblem(where=where, reason=reason))

    def unreadable(self, where: str, reason: str) -> None:
        """A date or label that cannot be read: a problem, counted apart (see `CallList`)."""
        self.problem(where, reason)
        self.n_unreadable_dates += 1
        if self.unreadable_date is None:
            self.unreadable_date = f"{where}: {reason}"

    def placed_by(self, call_date: date | None, label: str | None, where: str) -> str | None:
        """The rule that puts a call in this quarter ("call_date" or "fiscal_quarter"), or None."""
        if call_date is not None and self.rule != "fiscal":
            return "call_date" if call_date in self.quarter else None
        if label is not None and self.rule != "call_date":
            try:
                quarter = Quarter.parse(label)
            except UsageError:
                self.unreadable(where, f"fiscal_quarter {label!r} is not a quarter like 2020Q4")
                return None
            return "fiscal_quarter" if quarter == self.quarter else None
        self.n_unplaced += 1
        return None

    def add(self, call: Call, placed_by: str, parsed: _CallIn) -> Call:
        call = replace(call, permno=parsed.permno, gvkey=parsed.gvkey)
        self.calls[call.transcript_id] = call
        self.calls_by[placed_by] += 1
        return call


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffixes and suffixes[-1] == ".csv":
        return "csv"
    raise UsageError(
        f"cannot tell the format of {path} from its name: use .jsonl, .jsonl.gz, .csv or .csv.gz, "
        "or set --format jsonl|csv"
    )


def _download(uri: str, storage: StorageSettings | None, folder: Path) -> Path:
    """Copies an s3:// file into `folder`, under its own name (which tells its format)."""
    from ftm.storage import Store

    parent, _, name = uri.rstrip("/").rpartition("/")
    store = Store(parent, storage.endpoint_url if storage else None, storage.region if storage else None)
    if not name or not store.exists(name):
        raise UsageError(f"input {uri} does not exist or is not a file")
    local = folder / name
    store.download(name, local)
    return local


def _open_binary(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return date.fromisoformat(str(value).strip()[:10])


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"


def _is_empty(path: Path) -> bool:
    """Whether the input holds nothing but whitespace (a gzip file: once decompressed)."""
    with _open_binary(path) as stream:
        while chunk := stream.read(1 << 16):
            if chunk.strip():
                return False
    return True
