"""Prefetch: a quarter of earnings calls from a source (`sources/`: files or WRDS) in, cleaned and
chunked sentences out (`prefetch/transcripts/quarter=Q/chunk_NNNN.parquet` and `_manifest.json`).
Start with `transcripts.py` (the stage); `text.py` is the spaCy preprocessing."""

from ftm.prefetch.text import distinct_keywords
from ftm.prefetch.transcripts import (
    PrefetchProgress,
    PrefetchResult,
    PrefetchSurvey,
    linked_firms,
    prefetch_quarter,
    prefetch_quarters,
    read_manifest,
    run_command,
    sentence_rows,
    survey,
    survey_quarters,
)

__all__ = [
    "PrefetchProgress",
    "PrefetchResult",
    "PrefetchSurvey",
    "distinct_keywords",
    "linked_firms",
    "prefetch_quarter",
    "prefetch_quarters",
    "read_manifest",
    "run_command",
    "sentence_rows",
    "survey",
    "survey_quarters",
]
