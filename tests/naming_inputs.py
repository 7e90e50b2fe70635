"""Real-looking naming inputs from the shared corpus: firm-topic part files and themes.parquet,
per the FIRM_TOPICS and THEMES schemas, for the naming tests and `benchmarks/name.py`; and names
files as an earlier ftm wrote them.

A "topic" here is a run of consecutive sentences of one firm's call, its keywords the most
frequent content words of those sentences: real call text, without running the map stage.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from ftm import layout
from ftm.quarters import Quarter
from ftm.schemas import FIRM_TOPICS, THEME_NAMES, THEMES, TOPIC_NAMES, centroid_type
from ftm.storage import Store

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z][a-z\-]{3,}")
_STOP_WORDS = (
    "that this with have from they were will been their there which would about also into than "
    "what when more some over just very year quarter think going these those them then well "
    "because really like know expect continue first second third last next much such could "
    "still being other where while only even back across within through including your both "
    "glad seen talked things said want make sure thanks question"
)
_STOP = frozenset(_STOP_WORDS.split())
CENTROID_DIMENSIONS = 8


def corpus_topics(
    corpus: Path, n_topics: int, topics_per_firm: int = 10, sentences_per_topic: int = 12
) -> list[dict[str, Any]]:
    """`n_topics` FIRM_TOPICS rows (fewer if the corpus runs out), firms in corpus order."""
    rows: list[dict[str, Any]] = []
    firms: set[str] = set()
    for record in _transcripts(corpus):
        firm = record["ticker"]
        if firm in firms:
            continue
        firms.add(firm)
        sentences = [
            s.strip()
            for component in record["components"]
            for s in _SENTENCE_END.split(component["text"])
            if len(s.split()) >= 6
        ]
        for topic_id in range(min(topics_per_firm, len(sentences) // sentences_per_topic)):
            group = sentences[topic_id * sentences_per_topic : (topic_id + 1) * sentences_per_topic]
            rows.append(_topic_row(record, topic_id, group))
            if len(rows) == n_topics:
                return rows
    return rows


def write_firm_topics(store: Store, quarter: Quarter, rows: list[dict[str, Any]], firms_per_part: int) -> int:
    """Writes the rows as part files of `firms_per_part` firms each; returns the number of parts."""
    by_firm: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_firm.setdefault(row["firm_id"], []).append({**row, "quarter": str(quarter)})
    firms = list(by_firm)
    parts = 0
    for start in range(0, len(firms), firms_per_part):
        part_rows = [row for firm in firms[start : start + firms_per_part] for row in by_firm[firm]]
        table = pa.Table.from_pylist(part_rows, schema=_with_centroid(FIRM_TOPICS))
        store.write_table(layout.firm_topics_part(quarter, "batch_000", parts), table, FIRM_TOPICS)
        parts += 1
    return parts


def write_themes(store: Store, quarter: Quarter, rows: list[dict[str, Any]], n_themes: int) -> None:
    """themes.parquet with `n_themes` themes, each taking its texts from one of the topic rows."""
    themes = [
        {
            "theme_id": theme_id,
            "quarter": str(quarter),
            "kind": "theme",
            "keywords": row["keywords"],
            "representation": row["representation"],
            "n_firms": 3,
            "n_topics": 3,
            "n_sentences": row["n_sentences"] * 3,
            "representative_sentences": row["representative_sentences"],
            "centroid": row["centroid"],
        }
        for theme_id, row in enumerate(rows[:n_themes])
    ]
    store.write_table(
        layout.themes(quarter), pa.Table.from_pylist(themes, schema=_with_centroid(THEMES)), THEMES
    )


def _topic_row(record: dict[str, Any], topic_id: int, sentences: list[str]) -> dict[str, Any]:
    counts = Counter(w for s in sentences for w in _WORD.findall(s.lower()) if w not in _STOP)
    keywords = [word for word, _ in counts.most_common(10)]
    firm = record["ticker"]
    return {
        "firm_id": firm,
        "firm_name": record.get("company_name"),
        "quarter": "",
        "permno": None,
        "gvkey": None,
        "earnings_call_date": None,
        "topic_id": topic_id,
        "representation": "_".join([str(topic_id), *keywords[:4]]),
        "keywords": keywords,
        "n_sentences": len(sentences),
        "sentence_ids": [f"{firm}-{topic_id}-{i}" for i in range(len(sentences))],
        "representative_sentences": sentences[:3],
        "centroid": [float((topic_id + i) % 5) / 5 for i in range(CENTROID_DIMENSIONS)],
        "processing_timestamp": datetime(2024, 1, 1, tzinfo=timezone.utc),
    }


def _with_centroid(schema: pa.Schema) -> pa.Schema:
    index = schema.get_field_index("centroid")
    return schema.set(index, pa.field("centroid", centroid_type(CENTROID_DIMENSIONS)))


def _transcripts(corpus: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(corpus, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def as_an_earlier_ftm_wrote_it(store: Store, quarter: Quarter, kind: str) -> pa.Table:
    """Rewrites the quarter's theme or topic names as an earlier ftm wrote them, with `kind` and a
    text `id` ("0", "AAPL/3") for the keys; returns the file as it was, in its schema."""
    path = layout.theme_names(quarter) if kind == "theme" else layout.topic_names(quarter)
    table = store.read_table(path, THEME_NAMES if kind == "theme" else TOPIC_NAMES)
    if kind == "theme":
        ids = [str(theme) for theme in table.column("theme_id").to_pylist()]
    else:
        keys = zip(table.column("firm_id").to_pylist(), table.column("topic_id").to_pylist(), strict=True)
        ids = [f"{firm}/{topic}" for firm, topic in keys]
    named = {column: table.column(column) for column in ("quarter", "name", "description", "source")}
    store.write_table(path, pa.table({"kind": [kind] * table.num_rows, "id": ids, **named}))
    return table


def write_model_config(folder: Path, **fields: Any) -> str:
    """A model folder with a config.json, to be llm.model: Qwen3-8B's shape unless told otherwise."""
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **fields,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)
