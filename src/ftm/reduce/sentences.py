"""A quarter's mapped sentences, as the reduce needs them: every embedding the map stored, with the
sentence's firm, its cleaned words and whether it states a number.

Memory at 2,000,000 sentences × 384 dimensions: 1.5 GB of float16 embeddings, about 150 MB of
cleaned text and the ids; raw text is read one prefetch chunk at a time and kept only as a flag,
and again at the end for the few sentences a theme shows (`texts_of`). The order is by firm, then
the firm's own sentence order, whatever the map's batches and parts were, so that the same quarter
always gives the same themes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftm import layout
from ftm.errors import DataError
from ftm.prefetch import sentence_rows
from ftm.quarters import Quarter
from ftm.schemas import SENTENCE_EMBEDDINGS, SENTENCES, PrefetchManifest
from ftm.storage import Store

# A sentence states a number when a digit starts a token of its own ("15%", "$1.2 billion",
# "3 stores"), not inside a word ("COVID-19", "Q3") and not as a year, which results, guidance
# and reconciliations are made of and investment themes are not (see kinds.py). RE2 (pyarrow's
# regex engine) has no lookbehind, so years go first, then the digits are looked for.
_YEAR = r"\b(19|20)\d\d\b"
_NUMBER = r"(^|[\s$€£(~+])\d"
_KEY_COLUMNS = ["firm_id", "firm_name", "permno", "gvkey", "earnings_call_date"]


@dataclass(frozen=True)
class FirmKeys:
    """What the panel carries for a firm: its ids as the prefetch has them."""

    firm_name: str | None
    permno: int | None
    gvkey: str | None
    earnings_call_date: date | None
    n_sentences: int  # every prefetched sentence: the denominator of its exposure shares


@dataclass
class QuarterSentences:
    """Row i of every array is one sentence; `firm[i]` indexes `firm_ids` (sorted)."""

    firm_ids: list[str]
    firm: np.ndarray  # int32
    sentence_ids: pa.Array  # string
    embeddings: np.ndarray  # float16, L2-normalised rows; emptied by the reduce after their last use
    cleaned_text: pa.Array  # string; emptied by the reduce once its words are counted
    has_number: np.ndarray  # bool
    firms: dict[str, FirmKeys]  # every prefetched firm, mapped or not

    @property
    def n(self) -> int:
        return len(self.firm)


def read_sentences(
    store: Store,
    quarter: Quarter,
    manifest: PrefetchManifest,
    embedding_files: list[str],
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    with_text: bool = True,
) -> QuarterSentences:
    """Reads the embedding parts' ids, then the prefetch chunks' text columns, then the embeddings
    part by part into their place (progress per part): one copy of them in memory, never two.

    Without `with_text` (a measure, which needs the embeddings and the firms' keys only), the
    chunks' key columns are read instead of their text: `cleaned_text` is empty and `has_number`
    all False."""
    firms_col, ids_col = [], []
    for path in embedding_files:
        table = store.read_table(path, SENTENCE_EMBEDDINGS, columns=["firm_id", "sentence_id"])
        firms_col.append(table.column("firm_id").combine_chunks())
        ids_col.append(table.column("sentence_id").combine_chunks())
    if with_text:
        texts, firms = _prefetched_texts(store, quarter, manifest)
    else:
        texts, firms = None, read_firm_keys(store, quarter, manifest)
    firm_arr = pa.chunked_array(firms_col, pa.string()).combine_chunks()
    if len(firm_arr) == 0:
        empty = pa.array([], pa.string())
        nothing = np.zeros(0, np.int32)
        return QuarterSentences([], nothing, empty, np.zeros((0, 0), np.float16), empty, nothing > 0, firms)
    # By firm, keeping each firm's own order: parts hold whole firms, in their sentence order.
    keys = pa.table({"firm_id": firm_arr, "row": pa.array(np.arange(len(firm_arr)), pa.int64())})
    order = pc.sort_indices(keys, [("firm_id", "ascending"), ("row", "ascending")]).to_numpy()
    place = np.empty_like(order)
    place[order] = np.arange(len(order))  # where each row read goes
    firm_arr = firm_arr.take(order)
    ids = pa.chunked_array(ids_col, pa.string()).combine_chunks().take(order)
    if pc.count_distinct(ids).as_py() != len(ids):
        raise DataError(
            f"the map of {quarter} stored some sentences twice (overlapping parts in the checkpoints): "
            f"run `{store.command(f'submit --quarter {quarter} --new')}` to map it again"
        )
    embeddings: np.ndarray | None = None
    start = 0
    for done, path in enumerate(embedding_files):
        on_progress(done, len(embedding_files))
        column = store.read_table(path, SENTENCE_EMBEDDINGS, columns=["embedding"]).column("embedding")
        column = column.combine_chunks()
        size = column.type.list_size
        if embeddings is None:
            embeddings = np.empty((len(order), size), dtype=np.float16)
        elif size != embeddings.shape[1]:
            raise DataError(
                f"{store.uri(path)}: embeddings have {size} dimensions, earlier parts "
                f"{embeddings.shape[1]}: the quarter was mapped with two embedding models; run "
                f"`{store.command(f'submit --quarter {quarter} --new')}`"
            )
        rows = len(column)
        embeddings[place[start : start + rows]] = (
            column.flatten().to_numpy(zero_copy_only=False).reshape(rows, size)
        )
        start += rows
    on_progress(len(embedding_files), len(embedding_files))
    assert embeddings is not None
    firm_ids = sorted(pc.unique(firm_arr).to_pylist())
    firm = pc.index_in(firm_arr, value_set=pa.array(firm_ids, pa.string())).to_numpy().astype(np.int32)
    if texts is None:
        no_text = pa.nulls(0, pa.string())
        return QuarterSentences(firm_ids, firm, ids, embeddings, no_text, np.zeros(len(ids), bool), firms)
    rows = pa.table({"sentence_id": ids, "row": pa.array(np.arange(len(ids)), pa.int64())})
    joined = rows.join(texts, "sentence_id", join_type="left outer").sort_by("row")
    missing = joined.column("cleaned_text").null_count
    if missing:
        raise DataError(
            f"{missing} sentence(s) the map embedded are not in the prefetch of {quarter}: the map and "
            f"the prefetch disagree; run `{store.command(f'submit --quarter {quarter} --new')}`"
        )
    return QuarterSentences(
        firm_ids=firm_ids,
        firm=firm,
        sentence_ids=ids,
        embeddings=embeddings,
        cleaned_text=joined.column("cleaned_text").combine_chunks(),
        has_number=joined.column("has_number").to_numpy(zero_copy_only=False).astype(bool),
        firms=firms,
    )


def _prefetched_texts(
    store: Store, quarter: Quarter, manifest: PrefetchManifest
) -> tuple[pa.Table, dict[str, FirmKeys]]:
    """sentence_id, cleaned_text and has_number of every prefetched sentence, and each firm's keys."""
    parts = []
    firms: dict[str, FirmKeys] = {}
    counts: dict[str, int] = {}
    columns = [*_KEY_COLUMNS, "sentence_id", "raw_text", "cleaned_text"]
    for chunk in sorted(set(manifest.firm_to_chunk.values())):
        path = f"{layout.prefetch_folder(quarter)}/{chunk}"
        table = store.read_table(path, SENTENCES, columns=columns)
        without_years = pc.replace_substring_regex(table.column("raw_text"), _YEAR, "")
        has_number = pc.match_substring_regex(without_years, _NUMBER)
        parts.append(
            pa.table(
                {
                    "sentence_id": table.column("sentence_id"),
                    "cleaned_text": table.column("cleaned_text"),
                    "has_number": has_number,
                }
            )
        )
        _count_firm_keys(table, firms, counts)
    return pa.concat_tables(parts) if parts else pa.table({}), _with_counts(manifest, firms, counts)


def read_firm_keys(store: Store, quarter: Quarter, manifest: PrefetchManifest) -> dict[str, FirmKeys]:
    """Every prefetched firm's ids and sentence count, reading only the chunks' key columns (a
    measure needs the panel's keys and denominators, not the text)."""
    firms: dict[str, FirmKeys] = {}
    counts: dict[str, int] = {}
    for chunk in sorted(set(manifest.firm_to_chunk.values())):
        path = f"{layout.prefetch_folder(quarter)}/{chunk}"
        _count_firm_keys(store.read_table(path, SENTENCES, columns=_KEY_COLUMNS), firms, counts)
    return _with_counts(manifest, firms, counts)


def _count_firm_keys(table: pa.Table, firms: dict[str, FirmKeys], counts: dict[str, int]) -> None:
    """Adds a chunk's firms (their ids as on their first row) and sentence counts."""
    for item in pc.value_counts(table.column("firm_id")).to_pylist():
        counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    # A firm's ids as on its first row (a firm's rows never span two chunks).
    firsts = table.group_by("firm_id", use_threads=False).aggregate(
        [(name, "first") for name in _KEY_COLUMNS[1:]]
    )
    for row in firsts.to_pylist():
        firms[row["firm_id"]] = FirmKeys(*(row[f"{name}_first"] for name in _KEY_COLUMNS[1:]), 0)


def _with_counts(
    manifest: PrefetchManifest, firms: dict[str, FirmKeys], counts: dict[str, int]
) -> dict[str, FirmKeys]:
    """Every firm of the manifest with its sentence count (0 and no ids for one without rows)."""
    for firm_id in manifest.firm_to_chunk:
        keys = firms.get(firm_id) or FirmKeys(None, None, None, None, 0)
        firms[firm_id] = FirmKeys(
            keys.firm_name, keys.permno, keys.gvkey, keys.earnings_call_date, counts.get(firm_id, 0)
        )
    return firms


def texts_of(store: Store, quarter: Quarter, sentence_ids: Iterable[str]) -> dict[str, str]:
    """The raw text of the sentences asked for."""
    table = sentence_rows(store, quarter, set(sentence_ids), ["raw_text"])
    ids, texts = table.column("sentence_id").to_pylist(), table.column("raw_text").to_pylist()
    return dict(zip(ids, texts, strict=True))
