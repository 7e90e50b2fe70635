"""The firm processor on real call sentences: topics per the schema, a partition of the firm's
sentences, keywords from its cleaned text, small and large firms, determinism, backend choice."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from ftm.errors import SettingsError
from ftm.map.embedding import Embedder
from ftm.map.firm_topics import (
    FirmError,
    FirmInput,
    FirmOutcome,
    FirmProcessor,
    FirmProcessorPool,
    _exact_knn,
    min_cluster_size,
    min_sentences,
    resolve_backend,
)
from ftm.schemas import FIRM_TOPICS, centroid_type, conform
from ftm.settings import EmbeddingSettings, TopicsSettings

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[a-z]{3,}")
N_SENTENCES = 240  # one real firm: enough for several topics, quick to embed


def clean(text: str) -> str:
    """A cheap stand-in for spaCy's cleaning: lower-case words without stop words."""
    return " ".join(w for w in WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS)


def real_firm(corpus: Path, n: int) -> tuple[str, str, list[str]]:
    """The first ticker of the shared corpus with n sentences of six words or more, and those."""
    sentences: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    with gzip.open(corpus, "rt", encoding="utf-8") as lines:
        for line in lines:
            call = json.loads(line)
            found = sentences.setdefault(call["ticker"], [])
            names[call["ticker"]] = call["company_name"]
            for component in call["components"]:
                found += [s for s in SENTENCE_END.split(component["text"]) if len(clean(s).split()) >= 4]
            if len(found) >= n:
                return call["ticker"], names[call["ticker"]], found[:n]
    raise AssertionError(f"no firm with {n} sentences in {corpus}")


def firm_input(ticker: str, name: str | None, raw: list[str]) -> FirmInput:
    return FirmInput(
        firm_id=ticker,
        firm_name=name,
        quarter="2016Q4",
        permno=12345,
        gvkey="001234",
        earnings_call_date=date(2016, 11, 2),
        sentence_ids=[f"{ticker}:{i:05d}" for i in range(len(raw))],
        raw_texts=raw,
        cleaned_texts=[clean(s) for s in raw],
    )


@pytest.fixture(scope="module")
def firm(shared_corpus: Path) -> tuple[FirmInput, np.ndarray]:
    ticker, name, raw = real_firm(shared_corpus, N_SENTENCES)
    vectors = Embedder(EmbeddingSettings(device="cpu")).encode(raw)
    return firm_input(ticker, name, raw), vectors


@pytest.fixture(scope="module")
def processor() -> FirmProcessor:
    return FirmProcessor(TopicsSettings())


@pytest.fixture(scope="module")
def outcome(firm: tuple[FirmInput, np.ndarray], processor: FirmProcessor) -> Any:
    return processor.process(*firm)


def check_rows(
    firm: FirmInput, vectors: np.ndarray, rows: list[dict[str, Any]], settings: TopicsSettings
) -> None:
    # The schema's centroid is a fixed-size list of any length: a written file has the model's.
    schema = FIRM_TOPICS.set(
        FIRM_TOPICS.get_field_index("centroid"), pa.field("centroid", centroid_type(vectors.shape[1]))
    )
    table = conform(pa.Table.from_pylist(rows, schema=schema), FIRM_TOPICS, "firm topics")
    assert table.num_rows == len(rows) > 0
    assert [r["topic_id"] for r in rows] == list(range(len(rows)))
    position = {sid: i for i, sid in enumerate(firm.sentence_ids)}
    seen: set[str] = set()
    for row in rows:
        for key in ("firm_id", "firm_name", "quarter", "permno", "gvkey", "earnings_call_date"):
            assert row[key] == getattr(firm, key)
        ids = row["sentence_ids"]
        assert row["n_sentences"] == len(ids) >= min_cluster_size(settings, len(firm.sentence_ids))
        assert set(ids) <= set(position) and not seen & set(ids) and len(set(ids)) == len(ids)
        seen |= set(ids)
        members = [position[sid] for sid in ids]
        assert members == sorted(members)  # in the firm's sentence order
        words = set(" ".join(firm.cleaned_texts[i] for i in members).split())
        assert 0 < len(row["keywords"]) <= settings.top_n_words
        # Keywords are words or two-word phrases (ngram_range (1, 2)): every word is the topic's.
        keyword_words = {word for keyword in row["keywords"] for word in keyword.split()}
        assert keyword_words <= words, "a keyword that none of the topic's sentences has"
        assert row["representation"] == "_".join(row["keywords"][:4])
        member_texts = {firm.raw_texts[i] for i in members}
        assert 0 < len(row["representative_sentences"]) <= settings.n_representative
        assert set(row["representative_sentences"]) <= member_texts
        centroid = np.asarray(row["centroid"], dtype=np.float32)
        assert centroid.shape == (vectors.shape[1],)
        np.testing.assert_allclose(centroid, vectors[members].mean(axis=0), atol=1e-5)
        assert 0.3 < np.linalg.norm(centroid) <= 1.0 + 1e-5  # a mean of unit vectors that agree
    # The most central sentence is the one the centroid is closest to.
    first = rows[0]
    members = [position[sid] for sid in first["sentence_ids"]]
    best = members[int(np.argmax(vectors[members] @ np.asarray(first["centroid"])))]
    assert first["representative_sentences"][0] == firm.raw_texts[best]


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "processing_timestamp"} for row in rows]


def test_backend_choice() -> None:
    assert resolve_backend("auto", gpu_available=False, cuml_available=False) == "cpu"
    assert resolve_backend("auto", gpu_available=True, cuml_available=False) == "cpu"
    assert resolve_backend("auto", gpu_available=False, cuml_available=True) == "cpu"
    assert resolve_backend("auto", gpu_available=True, cuml_available=True) == "cuml"
    assert resolve_backend("cuml", cuml_available=True) == "cuml"
    assert resolve_backend("cpu", gpu_available=True, cuml_available=True) == "cpu"
    with pytest.raises(SettingsError, match="cuML is not installed"):
        resolve_backend("cuml", cuml_available=False)
    assert FirmProcessor(TopicsSettings()).backend == "cpu"  # no cuML on this machine


def test_exact_neighbours_match_a_brute_force_search(firm: tuple[FirmInput, np.ndarray]) -> None:
    vectors = firm[1]
    indices, distances = _exact_knn(vectors, 15, "cosine")
    assert indices.shape == distances.shape == (len(vectors), 15)
    assert (indices[:, 0] == np.arange(len(vectors))).all() and (distances[:, 0] == 0).all()
    assert (np.diff(distances, axis=1) >= 0).all()
    brute = 1 - vectors @ vectors.T
    np.fill_diagonal(brute, -1)
    expected = np.sort(brute, axis=1)[:, 1:15]
    np.testing.assert_allclose(distances[:, 1:], np.maximum(expected, 0), atol=1e-5)


def test_a_real_firm_gets_topics_per_the_schema(
    firm: tuple[FirmInput, np.ndarray], outcome: Any, processor: FirmProcessor
) -> None:
    firm_in, vectors = firm
    assert outcome.status == "ok" and outcome.reason is None and outcome.firm_id == firm_in.firm_id
    assert len(outcome.rows) >= 2
    check_rows(firm_in, vectors, outcome.rows, processor.settings)


def test_the_same_firm_gives_the_same_topics(firm: tuple[FirmInput, np.ndarray], outcome: Any) -> None:
    again = FirmProcessor(TopicsSettings()).process(*firm)
    assert comparable(again.rows) == comparable(outcome.rows)


def test_worker_processes_give_the_same_topics_in_order_and_report_a_firms_error(
    firm: tuple[FirmInput, np.ndarray], outcome: Any
) -> None:
    firm_in, vectors = firm
    second = replace(firm_in, firm_id="SECOND")
    broken = replace(firm_in, firm_id="BROKEN", raw_texts=firm_in.raw_texts[:-1])
    pool = FirmProcessorPool(TopicsSettings(), processes=2)
    try:
        assert pool.processes == 2
        results = list(pool.process_all([(firm_in, vectors), (broken, vectors), (second, vectors)]))
    finally:
        pool.close()
    first, error, last = results
    assert isinstance(first, FirmOutcome) and comparable(first.rows) == comparable(outcome.rows)
    assert isinstance(error, FirmError) and error.error_type == "ValueError" and "must match" in str(error)
    assert isinstance(last, FirmOutcome) and last.firm_id == "SECOND" and len(last.rows) == len(outcome.rows)


def test_small_firms_get_smaller_clusters_and_firms_of_190_sentences_or_more_the_setting() -> None:
    settings = TopicsSettings()
    sizes = {n: min_cluster_size(settings, n) for n in (16, 43, 109, 110, 150, 189, 190, 1000)}
    assert sizes == {16: 5, 43: 5, 109: 5, 110: 6, 150: 8, 189: 9, 190: 10, 1000: 10}
    assert min_sentences(settings) == 16  # 2 × 5, and umap_n_neighbors + 1
    one_size = TopicsSettings(small_firm_min_cluster_size=10)
    assert {min_cluster_size(one_size, n) for n in (20, 100, 5000)} == {10} and min_sentences(one_size) == 20


@pytest.mark.parametrize("size", [1, 5, 15])
def test_too_small_firms_are_skipped_with_a_reason(
    firm: tuple[FirmInput, np.ndarray], processor: FirmProcessor, size: int
) -> None:
    firm_in, vectors = firm
    small = firm_input(firm_in.firm_id, None, firm_in.raw_texts[:size])
    result = processor.process(small, vectors[:size])
    assert result.status == "skipped" and result.rows == []
    assert f"{size} sentences" in result.reason and str(min_sentences(processor.settings)) in result.reason


def test_a_firm_at_the_minimum_size_does_not_crash(
    firm: tuple[FirmInput, np.ndarray], processor: FirmProcessor
) -> None:
    firm_in, vectors = firm
    assert min_sentences(processor.settings) == 16
    small = firm_input(firm_in.firm_id, None, firm_in.raw_texts[:16])
    result = processor.process(small, vectors[:16])
    assert result.status in ("ok", "no_topics")
    if result.status == "ok":
        check_rows(small, vectors[:16], result.rows, processor.settings)


def test_a_firm_of_only_outliers_has_no_topics(firm: tuple[FirmInput, np.ndarray]) -> None:
    """Sentences with unrelated embeddings form no dense group: every one is an outlier."""
    firm_in, _ = firm
    rng = np.random.default_rng(7)
    noise = rng.normal(size=(30, 384)).astype(np.float32)
    settings = TopicsSettings(hdbscan_min_cluster_size=15, small_firm_min_cluster_size=15)
    result = FirmProcessor(settings).process(firm_input("NOISE", None, firm_in.raw_texts[:30]), noise)
    assert result.status == "no_topics" and result.rows == [] and "outlier" in result.reason


def test_a_firm_of_5000_sentences(firm: tuple[FirmInput, np.ndarray]) -> None:
    """Real sentences repeated with perturbed embeddings; above umap-learn's 4,096-point switch."""
    firm_in, vectors = firm
    rng = np.random.default_rng(3)
    copies = -(-5000 // len(vectors))
    big_vectors = np.tile(vectors, (copies, 1))[:5000] + rng.normal(scale=0.02, size=(5000, vectors.shape[1]))
    big_vectors = (big_vectors / np.linalg.norm(big_vectors, axis=1, keepdims=True)).astype(np.float32)
    raw = (firm_in.raw_texts * copies)[:5000]
    big = firm_input("BIG", None, raw)
    settings = TopicsSettings(umap_n_epochs=30)  # the layout's length is not what is tested here
    result = FirmProcessor(settings).process(big, big_vectors)
    assert result.status == "ok"
    check_rows(big, big_vectors, result.rows, settings)


def test_mismatched_inputs_are_refused(firm: tuple[FirmInput, np.ndarray], processor: FirmProcessor) -> None:
    firm_in, vectors = firm
    with pytest.raises(ValueError, match="must match"):
        processor.process(replace(firm_in, raw_texts=firm_in.raw_texts[:-1]), vectors)
