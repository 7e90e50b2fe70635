"""A batch's firms from the prefetched chunks, as the firm processor's inputs.

Firms are read in chunk order, so each chunk is read once: only the columns a firm needs, only
the batch's rows kept, two chunks held at most (a part's firms may straddle two). A firm whose
rows break the sentence contract (a null or empty text, duplicate ids, another quarter) or that
its chunk lacks is a DataError for that firm alone: a poison firm, recorded by the map batch
(`batch.py`) as the firm's failure, never one that fails its whole chunk.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ftm import layout
from ftm.errors import DataError
from ftm.quarters import Quarter
from ftm.schemas import SENTENCES
from ftm.storage import Store

if TYPE_CHECKING:  # ftm.map.firm_topics pulls in the clustering libraries
    from ftm.map.firm_topics import FirmInput

# The sentence columns a firm needs; the others (transcript ids, speakers) stay on storage.
FIRM_COLUMNS = [
    "firm_id",
    "firm_name",
    "permno",
    "gvkey",
    "earnings_call_date",
    "quarter",
    "sentence_id",
    "raw_text",
    "cleaned_text",
    "position",
]
# Read with every column nullable: a null where the contract forbids one is a poison firm,
# recorded as that firm's failure, not an error that would fail its whole chunk.
_CHUNK_READ = pa.schema([SENTENCES.field(name).with_nullable(True) for name in FIRM_COLUMNS])
_REQUIRED = ("sentence_id", "raw_text", "cleaned_text", "position")


class FirmReader:
    """The batch's firms, one chunk at a time; `firm` raises DataError for a poison firm."""

    KEEP = 2  # chunks held at once: a group may straddle two

    def __init__(self, store: Store, quarter: Quarter, firm_to_chunk: dict[str, str], firm_ids: set[str]):
        self.store = store
        self.quarter = quarter
        self.firm_to_chunk = firm_to_chunk
        self.firm_ids = firm_ids
        self.chunks: dict[str, dict[str, dict[str, list[Any]]] | DataError] = {}

    def firm(self, firm_id: str) -> FirmInput:
        chunk = self.firm_to_chunk.get(firm_id)
        if chunk is None:
            raise DataError(f"{firm_id} is not in the prefetch manifest of {self.quarter}")
        rows = self._chunk(chunk)
        if isinstance(rows, DataError):
            raise rows
        if firm_id not in rows:
            raise DataError(
                f"{chunk} has no sentences of {firm_id}, though the prefetch manifest puts it there"
            )
        return _firm_input(firm_id, chunk, str(self.quarter), rows[firm_id])

    def _chunk(self, chunk: str) -> dict[str, dict[str, list[Any]]] | DataError:
        if chunk not in self.chunks:
            while len(self.chunks) >= self.KEEP:
                del self.chunks[next(iter(self.chunks))]
            self.chunks[chunk] = self._read(chunk)
        return self.chunks[chunk]

    def _read(self, chunk: str) -> dict[str, dict[str, list[Any]]] | DataError:
        path = f"{layout.prefetch_folder(self.quarter)}/{chunk}"
        try:
            table = self.store.read_table(path, _CHUNK_READ, columns=FIRM_COLUMNS)
        except DataError as error:  # every firm of the chunk fails with the reason
            return DataError(f"{chunk} cannot be read: {error}")
        table = table.filter(pc.is_in(table.column("firm_id"), value_set=pa.array(sorted(self.firm_ids))))
        columns = table.to_pydict()
        firms: dict[str, dict[str, list[Any]]] = {}
        for index, firm_id in enumerate(columns["firm_id"]):
            firm = firms.setdefault(firm_id, {name: [] for name in FIRM_COLUMNS})
            for name in FIRM_COLUMNS:
                firm[name].append(columns[name][index])
        return firms


def _firm_input(firm_id: str, chunk: str, quarter: str, rows: dict[str, list[Any]]) -> FirmInput:
    """A firm's rows as the processor's input, or a DataError naming what breaks the contract."""
    from ftm.map.firm_topics import FirmInput

    n = len(rows["sentence_id"])
    for name in _REQUIRED:
        missing = sum(value is None for value in rows[name])
        if missing:
            raise DataError(f"{chunk}: {missing} of the {n} sentences of {firm_id} have no {name}")
    blank = sum(not text.strip() for text in rows["raw_text"])
    if blank:
        raise DataError(f"{chunk}: {blank} of the {n} sentences of {firm_id} have an empty raw_text")
    if len(set(rows["sentence_id"])) != n:
        raise DataError(f"{chunk}: {firm_id} has duplicate sentence ids")
    quarters = set(rows["quarter"])
    if quarters != {quarter}:
        raise DataError(f"{chunk}: {firm_id} has sentences of quarter(s) {sorted(map(str, quarters))}")
    order = sorted(range(n), key=lambda i: rows["position"][i])
    dates: list[date] = [day for day in rows["earnings_call_date"] if day is not None]
    return FirmInput(
        firm_id=firm_id,
        firm_name=rows["firm_name"][0],
        quarter=quarter,
        permno=rows["permno"][0],
        gvkey=rows["gvkey"][0],
        earnings_call_date=min(dates) if dates else None,
        sentence_ids=[rows["sentence_id"][i] for i in order],
        raw_texts=[rows["raw_text"][i] for i in order],
        cleaned_texts=[rows["cleaned_text"][i] for i in order],
    )
