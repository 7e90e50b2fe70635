"""Every data contract: pyarrow schemas of the Parquet artifacts, pydantic models of the JSON
ones, each documented in docs/architecture.md. Files are checked against these when read; a
mismatch names the file and column."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from ftm.errors import SchemaError

SPEAKER_TYPES = ("presenter", "question", "answer", "operator", "unknown")


def content_hash(data: Any) -> str:
    """A SHA-256 of JSON-able data, independent of key order: for plans, settings and caches."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def centroid_type(dimensions: int) -> pa.DataType:
    """A mean sentence embedding; its length is the embedding model's, any length is accepted."""
    return pa.list_(pa.float32(), dimensions)


def embedding_type(dimensions: int) -> pa.DataType:
    """A sentence embedding as stored for the reduce: half precision halves 1.5 GB a quarter, and
    themes are found from cosines that float16's 3 significant digits leave as they are."""
    return pa.list_(pa.float16(), dimensions)


# --- Parquet ----------------------------------------------------------------------------------

SENTENCES = pa.schema(
    [
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("firm_name", pa.string()),
        pa.field("permno", pa.int64()),
        pa.field("gvkey", pa.string()),  # six digits, zero-padded
        pa.field("transcript_id", pa.string(), nullable=False),
        # The transcript version read (WRDS: its collection type, such as "Proofed Copy"), so
        # that a re-run can tell when a better version has appeared; null for files.
        pa.field("transcript_collection", pa.string()),
        pa.field("earnings_call_date", pa.date32()),
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("sentence_id", pa.string(), nullable=False),  # unique in the quarter, stable
        pa.field("raw_text", pa.string(), nullable=False),
        pa.field("cleaned_text", pa.string(), nullable=False),
        pa.field("speaker_type", pa.string()),
        pa.field("position", pa.int32(), nullable=False),  # the sentence's place among its firm's
    ]
)

_FIRM_KEYS = [
    pa.field("firm_id", pa.string(), nullable=False),
    pa.field("firm_name", pa.string()),
    pa.field("quarter", pa.string(), nullable=False),
    pa.field("permno", pa.int64()),
    pa.field("gvkey", pa.string()),
]

FIRM_TOPICS = pa.schema(
    _FIRM_KEYS
    + [
        pa.field("earnings_call_date", pa.date32()),
        pa.field("topic_id", pa.int32(), nullable=False),
        pa.field("representation", pa.string()),
        pa.field("keywords", pa.list_(pa.string())),
        pa.field("n_sentences", pa.int32()),
        pa.field("sentence_ids", pa.list_(pa.string())),
        pa.field("representative_sentences", pa.list_(pa.string())),
        pa.field("centroid", centroid_type(0)),
        pa.field("processing_timestamp", pa.timestamp("us", tz="UTC")),
    ]
)

# One row per sentence the map embedded (every sentence of every firm it did not fail on, topic
# outliers and firms too small for topics included), in the order of its firm's sentences.
SENTENCE_EMBEDDINGS = pa.schema(
    [
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("sentence_id", pa.string(), nullable=False),
        pa.field("embedding", embedding_type(0), nullable=False),  # L2-normalised
    ]
)

THEMES = pa.schema(
    [
        # The default order: kind theme, routine, reporting; each by salience (reduce/themes.py).
        pa.field("theme_id", pa.int32(), nullable=False),
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # "theme", "routine" or "reporting" (reduce/kinds.py)
        pa.field("keywords", pa.list_(pa.string())),
        pa.field("representation", pa.string()),
        # ln(attention over its ordinary level), smoothed (reduce/salience.py); null without a reference.
        pa.field("salience", pa.float32()),
        pa.field("attention_share", pa.float32()),  # mean over firms of their sentences in its cells
        pa.field("baseline_share", pa.float32()),  # ordinary attention: median over reference quarters
        pa.field("share_of_firms", pa.float32()),  # n_firms over the quarter's firms with sentences
        pa.field("n_firms", pa.int32()),  # firms with reduce.firm_min_sentences sentences in it
        pa.field("n_topics", pa.int32()),  # firm topics with at least half their sentences in it
        pa.field("n_sentences", pa.int32()),
        # The evidence of `kind`: shares of sentences stating numbers, evenness over firms, cosine
        # to the reference's ordinary language (null where the reference's model is not the map's).
        pa.field("number_share", pa.float32()),
        pa.field("evenness", pa.float32()),
        pa.field("ordinary_similarity", pa.float32()),
        pa.field("representative_sentences", pa.list_(pa.string())),
        pa.field("centroid", centroid_type(0)),  # unit mean of its sentences' embeddings
    ]
)

# One row per sentence and theme it belongs to (a sentence can belong to several, one of them its
# primary: the most similar): the evidence of every cell of the panel. Sorted by theme, then firm
# and the firm's sentence order.
THEME_SENTENCES = pa.schema(
    [
        pa.field("theme_id", pa.int32(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("sentence_id", pa.string(), nullable=False),
        pa.field("similarity", pa.float32()),  # cosine to the theme's centroid, as clustered
        pa.field("primary", pa.bool_()),  # the sentence's most similar theme (null: before ftm had it)
    ]
)

THEME_TOPICS = pa.schema(
    [
        pa.field("theme_id", pa.int32(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("topic_id", pa.int32(), nullable=False),
        pa.field("similarity", pa.float32()),
    ]
)

FIRM_THEME_EXPOSURE = pa.schema(
    [
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("permno", pa.int64()),
        pa.field("gvkey", pa.string()),
        pa.field("theme_id", pa.int32(), nullable=False),
        # The firm's sentences whose primary theme this is, and their share of all its sentences:
        # a firm's shares over themes add up to at most 1.
        pa.field("n_sentences", pa.int32()),
        pa.field("share", pa.float64()),
        pa.field("n_sentences_any", pa.int32()),  # its sentences in the theme, primary or not
    ]
)

# --- trends: themes followed through quarters (ftm trends) ---

# One row per theme of the range and the lineage it belongs to: a lineage is one subject in
# several quarters, at most one theme per quarter. Sorted by lineage, then quarter.
LINEAGES = pa.schema(
    [
        pa.field("lineage_id", pa.int32(), nullable=False),  # stable: kept when quarters are added
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("theme_id", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # the theme's, in its quarter
        pa.field("keywords", pa.list_(pa.string())),
        # Cosine of the theme's centroid to the lineage's when it joined (both less their quarter's
        # mean); null for the theme that started the lineage.
        pa.field("similarity", pa.float32()),
        # The lineage a theme that started a new one was nearest to, when near enough to be its
        # narrower part (trends.parent_similarity); null otherwise.
        pa.field("parent_lineage_id", pa.int32()),
    ]
)

# One row per lineage and quarter of the range (a full grid), sorted by lineage, then quarter. The
# series is measured (trends/measured.py): the firms with at least reduce.firm_min_sentences
# sentences about the lineage's subject, in every quarter, whether or not a theme joined it there.
TRENDS = pa.schema(
    [
        pa.field("lineage_id", pa.int32(), nullable=False),
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("parent_lineage_id", pa.int32()),  # as in lineages.parquet
        pa.field("lineage_kind", pa.string()),  # its themes' most common kind in the range
        pa.field("share_of_firms", pa.float64(), nullable=False),  # measured, of the prefetched firms
        pa.field("measured_firms", pa.int32(), nullable=False),
        pa.field("measured_sentences", pa.int32(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),  # on the centred cosine to its query
        # The quarter's theme in the lineage, if any: its id, kind, salience, n_firms, the share of
        # the prefetched firms that is, and sentences (0 and null without one).
        pa.field("theme_id", pa.int32()),
        pa.field("kind", pa.string()),
        pa.field("salience", pa.float32()),
        pa.field("n_firms", pa.int32(), nullable=False),
        pa.field("firm_share", pa.float64(), nullable=False),
        pa.field("n_sentences", pa.int32(), nullable=False),
        # Loughran-McDonald words over the measured sentences; net_tone (positive - negative) /
        # (positive + negative), null without either; its change since the range's first quarter
        # with a net_tone.
        pa.field("positive", pa.int64(), nullable=False),
        pa.field("negative", pa.int64(), nullable=False),
        pa.field("uncertainty", pa.int64(), nullable=False),
        pa.field("net_tone", pa.float64()),
        pa.field("net_tone_change", pa.float64()),
        # Share of the firms with history exposed now less then, over the trends.window quarters
        # before; "emerging", "fading" or "steady" (trends.py); null without those quarters.
        pa.field("momentum", pa.float64()),
        pa.field("trend", pa.string()),
    ]
)

# The long panel: one row per firm, theme and quarter of the range (firm_theme_exposure with the
# lineage, the call date and the tone of the firm's sentences in the theme).
FIRM_THEME_QUARTER = pa.schema(
    [
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("permno", pa.int64()),
        pa.field("gvkey", pa.string()),
        pa.field("earnings_call_date", pa.date32()),  # of the call holding most of these sentences
        pa.field("lineage_id", pa.int32(), nullable=False),
        pa.field("theme_id", pa.int32(), nullable=False),
        pa.field("n_sentences", pa.int32(), nullable=False),
        pa.field("share", pa.float64()),  # of the firm's sentences, as in firm_theme_exposure
        pa.field("positive", pa.int32(), nullable=False),
        pa.field("negative", pa.int32(), nullable=False),
        pa.field("uncertainty", pa.int32(), nullable=False),
        pa.field("net_tone", pa.float64()),  # (positive - negative) / (positive + negative); null at 0
    ]
)

# Every firm of the quarter, prefetched or skipped, with what became of it: the panel's
# denominator, since the panel holds only firms with exposure.
FIRMS = pa.schema(
    [
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("firm_name", pa.string()),
        pa.field("permno", pa.int64()),
        pa.field("gvkey", pa.string()),
        pa.field("earnings_call_date", pa.date32()),
        pa.field("n_sentences", pa.int32(), nullable=False),  # prefetched
        pa.field("n_themes", pa.int32(), nullable=False),  # themes it has sentences in
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
    ]
)


# A measured subject's panel (`ftm measure`): one row per prefetched firm and quarter, exposed or
# not, so that a zero is a measured zero and the panel merges as it is.
MEASURE_FIRM_QUARTER = pa.schema(
    [
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("permno", pa.int64()),
        pa.field("gvkey", pa.string()),
        pa.field("earnings_call_date", pa.date32()),  # the firm's first call date in the quarter
        pa.field("n_sentences", pa.int32(), nullable=False),  # its sentences about the subject
        pa.field("share", pa.float64()),  # those over all its prefetched sentences; null without any
        pa.field("positive", pa.int32(), nullable=False),
        pa.field("negative", pa.int32(), nullable=False),
        pa.field("uncertainty", pa.int32(), nullable=False),
        pa.field("net_tone", pa.float64()),  # (positive - negative) / (positive + negative); null at 0
    ]
)

# The evidence behind a measure: every sentence counted, with its similarity to the subject.
MEASURE_SENTENCES = pa.schema(
    [
        pa.field("quarter", pa.string(), nullable=False),
        pa.field("firm_id", pa.string(), nullable=False),
        pa.field("sentence_id", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
        pa.field("text", pa.string()),  # as spoken
    ]
)


def pandas_integers(*columns: str) -> dict[bytes, bytes]:
    """Parquet metadata that has pandas read these nullable integer columns as `Int64`: without
    it a PERMNO column with a gap becomes float, and 10107 prints as 10107.0."""
    described = [
        {"name": name, "field_name": name, "pandas_type": "int64", "numpy_type": "Int64", "metadata": None}
        for name in columns
    ]
    document = {"index_columns": [], "column_indexes": [], "columns": described}
    return {b"pandas": json.dumps(document, sort_keys=True).encode()}


# Names are keyed like what they name, so that they join the themes, the panel and the firm
# topics without a cast. (An earlier ftm wrote `kind` and a text `id` instead of the keys:
# `ftm.read_names` reads those files too, and `ftm name` rewrites them.)
_NAMED = [
    pa.field("quarter", pa.string(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("description", pa.string()),
    pa.field("source", pa.string()),  # "llm:<model>" or "keywords"
]

THEME_NAMES = pa.schema([pa.field("theme_id", pa.int32(), nullable=False), *_NAMED])

TOPIC_NAMES = pa.schema(
    [pa.field("firm_id", pa.string(), nullable=False), pa.field("topic_id", pa.int32(), nullable=False)]
    + _NAMED
)


# Nullable columns added after the first files were written (by the earlier pipeline, or an
# earlier ftm): a file without one reads as if the column were all null.
# Columns added after files were written: a file without one reads it as nulls (a re-run of the
# stage fills it in).
ADDED_COLUMNS = frozenset(
    {
        "transcript_collection",
        "salience",
        "attention_share",
        "baseline_share",
        "share_of_firms",
        "primary",
        "n_sentences_any",
    }
)


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """The table in the schema's column order and types, or a SchemaError naming the column.

    Columns the schema does not know are dropped (newer writers may add some); an all-null
    column is accepted for a nullable field, and a missing one of `ADDED_COLUMNS` reads as nulls;
    fixed-size lists match whatever their length.
    """
    columns = []
    for field in schema:
        if field.name not in table.column_names and field.name in ADDED_COLUMNS:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        if field.name not in table.column_names:
            raise SchemaError(f"{where}: column {field.name!r} is missing (expected {field.type})")
        column = table.column(field.name)
        if pa.types.is_dictionary(column.type) and not pa.types.is_dictionary(field.type):
            column = column.cast(column.type.value_type)  # `quarter` as a file stores it (storage.py)
        if not _compatible(field.type, column.type):
            if pa.types.is_null(column.type) and field.nullable:
                column = column.cast(field.type)
            else:
                raise SchemaError(
                    f"{where}: column {field.name!r} has type {column.type}, expected {field.type}"
                )
        if not field.nullable and column.null_count:
            raise SchemaError(f"{where}: column {field.name!r} has nulls, which it must not")
        columns.append(column)
    fields = [pa.field(f.name, c.type, nullable=f.nullable) for f, c in zip(schema, columns, strict=True)]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def _compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    if pa.types.is_fixed_size_list(expected) and pa.types.is_fixed_size_list(actual):
        return expected.value_type == actual.value_type
    return expected.equals(actual)


# --- JSON -------------------------------------------------------------------------------------


class Record(BaseModel):
    """A JSON artifact ftm writes; unknown keys are kept out of the model but tolerated."""

    model_config = ConfigDict(extra="ignore")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ChunkInfo(Record):
    file: str
    n_firms: int
    n_rows: int
    bytes: int


class SkippedFirm(Record):
    firm_id: str
    reason: str


class InputProblem(Record):
    """A record of the input that could not be used, and why (a malformed line, say)."""

    where: str
    reason: str


class PrefetchManifest(Record):
    """`_manifest.json`: written last and atomically; a quarter without one is not prefetched."""

    quarter: str
    source: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    ftm_version: str | None = None
    n_firms: int
    n_calls: int = 0
    n_chunks: int
    n_sentences: int = 0
    preprocess: dict[str, Any] = Field(default_factory=dict)
    preprocess_hash: str | None = None
    firm_to_chunk: dict[str, str]
    chunks: list[ChunkInfo] = Field(default_factory=list)
    skipped_firms: list[SkippedFirm] = Field(default_factory=list)
    input_problems: list[InputProblem] = Field(default_factory=list)
    n_input_problems: int = 0
    n_empty_components: int = 0


class PrefetchCheckpoint(Record):
    """Where an unfinished prefetch stands; written only after the files it lists."""

    quarter: str
    plan_hash: str
    firms_done: int  # firms of the plan's order that are in a chunk or a staged part
    chunks: list[ChunkInfo] = Field(default_factory=list)
    chunk_firms: list[str] = Field(default_factory=list)  # firms of the chunk being built
    staged_parts: list[str] = Field(default_factory=list)
    firm_to_chunk: dict[str, str] = Field(default_factory=dict)
    next_part: int = 0
    n_sentences: int = 0
    n_empty_components: int = 0
    skipped_firms: list[SkippedFirm] = Field(default_factory=list)
    updated_at: datetime


class Batch(Record):
    """One line of `batches.jsonl`."""

    batch_id: str
    firm_ids: list[str]


class RunRecord(Record):
    """`runs/RUN_ID.json`."""

    run_id: str
    quarter: str
    backend: str
    batch_ids: list[str]
    # batch id → the backend's job: a local supervisor, or an AWS Batch job (`parent:index` for
    # a child of an array job).
    job_ids: dict[str, str] = Field(default_factory=dict)
    # Jobs that follow the map on the backend by themselves: "reduce", "name" → job id.
    follow_jobs: dict[str, str] = Field(default_factory=dict)
    code: str | None = None
    image: str | None = None
    estimated_cost_usd: float | None = None  # at submission, for the batch backend
    settings: dict[str, Any] = Field(default_factory=dict)  # secrets masked
    submitted_at: datetime


class BatchCheckpoint(Record):
    """`batch_NNN_checkpoint.json`: written after each part file, never before it."""

    batch_id: str
    attempt: int
    completed_firm_ids: list[str]
    part_files: list[str]
    # The batch's sentence-embedding parts (one per group of firms, firms without topics included).
    # Empty in a checkpoint written before ftm stored them: such a quarter must be mapped again.
    embedding_files: list[str] = Field(default_factory=list)
    failed_firm_ids: list[str] = Field(default_factory=list)
    # Firms done without topics (too small, or every sentence an outlier), with the reason; they
    # are in completed_firm_ids too, and have no rows in any part file.
    skipped_firms: list[SkippedFirm] = Field(default_factory=list)
    finished: bool = False
    updated_at: datetime


class FirmFailure(Record):
    """One entry of `batch_NNN_failures.json`."""

    firm_id: str
    error_type: str
    message: str
    at: datetime


class BatchProgress(Record):
    """`batch_NNN_progress.json`: small and overwritten often, for `ftm watch`."""

    batch_id: str
    firms_total: int
    firms_done: int
    firms_skipped: int = 0
    firms_failed: int = 0
    rate_per_s: float = 0.0
    attempt: int = 1
    # The worker process: where it runs, its pid and when it started (`process_started`, the
    # kernel's start time, so that a later process given the same pid is not taken for it). On
    # its own host, whether it still runs is read from the processes; elsewhere, heartbeats tell.
    host: str | None = None
    pid: int | None = None
    process_started: str | None = None
    # "pending" once submitted, "running" while its worker lives (rewriting heartbeat_at), then
    # its last word: "succeeded" (every firm done, or failed within the policy), "failed" (the
    # circuit breaker or an error, said in message), "stopped" (interrupted; resubmitting goes on).
    state: Literal["pending", "running", "succeeded", "failed", "stopped"] = "running"
    message: str | None = None
    last_failure: str | None = None  # the latest failed firm and its reason
    started_at: datetime | None = None  # of this attempt
    heartbeat_at: datetime


class QuarterLineages(Record):
    """One quarter's themes as the lineage registry assigned them."""

    quarter: str
    themes_sha256: str  # of the themes.parquet matched: a quarter reduced again is matched again
    lineage_of_theme: dict[str, int]  # theme id (as text: JSON keys) → lineage id
    similarity: dict[str, float] = Field(default_factory=dict)  # theme id → cosine when it joined
    # A theme that started a lineage → the known lineage it is a narrower part of, if any.
    parent_of_theme: dict[str, int] = Field(default_factory=dict)


class LineageRegistry(Record):
    """`trends/_lineages.json`: every lineage ever given in this storage root, so that a range
    with a quarter added later keeps the ids it had; written after the quarters it lists are
    matched, before any range's files."""

    min_similarity: float  # trends.min_similarity it was built with
    next_lineage_id: int  # never reused, also after a quarter is matched again
    quarters: list[QuarterLineages] = Field(default_factory=list)
    updated_at: datetime

    def parents(self) -> dict[int, int]:
        """Lineage id → its parent lineage, for the lineages started with one."""
        return {
            entry.lineage_of_theme[theme]: parent
            for entry in self.quarters
            for theme, parent in entry.parent_of_theme.items()
        }


class MeasureCalibration(Record):
    """`measures/NAME/_quarters/Q/calibration.json`: one quarter's threshold, written after the
    quarter's two tables; a rerun keeps the quarter when `subject_hash` is the subject's."""

    quarter: str
    subject_hash: str  # of the description, examples, embedding path and rule
    threshold: float  # on the cosine to the re-centred query
    pseudo_relevant_similarity: float  # the median cosine of the nearest sentences to it
    n_sentences: int  # embedded sentences of the quarter
    n_selected: int  # of them about the subject
    n_firms: int  # prefetched firms
    n_firms_exposed: int  # with at least one selected sentence


class MeasureSubject(Record):
    """`measures/NAME/subject.json`, written last: what was measured and how, to reproduce and cite."""

    name: str
    description: str
    examples: list[str] = Field(default_factory=list)
    subject_hash: str
    model: str  # embedding.model
    embedding: dict[str, str]  # the path the description was embedded on (device, backend, precision)
    rule: dict[str, Any]  # the calibration rule and its constants
    quarters: list[MeasureCalibration]
    ftm_version: str
