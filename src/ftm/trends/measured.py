"""A lineage's attention measured in every quarter of a range: the sentences about its subject, and
the firms with at least `reduce.firm_min_sentences` of them, whether or not a theme of that quarter
joined the lineage.

A theme's firm share counts every firm with sentences in the theme, and a theme is as broad as the
clustering made it in its quarter: in 2020 the shared corpus's supply-chain lineage held "demand,
supply, inventory, production" at 45 % of firms while 12 % spoke of supply chains, and in quarters
where the subject formed no theme the lineage had no share at all (benchmarks/README.md, Trends).
So a lineage is measured the way `ftm measure` measures a named subject (measures/calibration.py),
its themes standing for the description:

- its query is the unit mean of its themes' centroids over the range's quarters (a theme's
  centroid is already a point among sentences, so it is not re-centred on the nearest ones);
- its threshold is the measure's (`threshold`: where a two-component mixture of the quarter's
  centred cosines gives the subject's component the rule's probability; its nearest sentences
  are the `PSEUDO_RELEVANT` nearest the query, or as many as the theme has when fewer),
  calibrated in the quarters where it has a theme, averaged over them, and held for the range.
  A quarter where nobody talks about the subject keeps the few sentences that come that near;
  calibrating there would call its nearest sentences, whatever they are about, the subject.

Each quarter's embeddings are read twice (the map's parts, never embedded again): first to
calibrate the lineages with a theme there, then to count, once every threshold is known. The
Loughran-McDonald tone is counted over each lineage's measured sentences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ftm.measures import PSEUDO_RELEVANT, centred_similarities, nearest_median, threshold
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.reduce import QuarterSentences, mapped_state, mean_embedding, read_sentences, texts_of
from ftm.schemas import QuarterLineages
from ftm.storage import Store
from ftm.tone import count_tone
from ftm.trends.lineages import QuarterThemes

# Lineages whose similarities are held at once: 64 columns of float32 are 512 MB at 2,000,000
# sentences. They are one matrix product per block: the same range always groups its lineages
# the same way, so its files are the same on every run.
_GROUP = 64


@dataclass(frozen=True)
class LineageQueries:
    lineage_ids: list[int]  # sorted
    vectors: np.ndarray  # float32 unit rows, in the embeddings' own (uncentred) space
    home: dict[Quarter, list[tuple[int, int]]]  # quarter → (row, its theme's sentences) with a theme there


@dataclass(frozen=True)
class MeasuredQuarter:
    """One quarter's measure of every lineage: row i of each array is `lineage_ids[i]`."""

    firm_ids: list[str]  # every prefetched firm of the quarter, sorted
    exposed: list[np.ndarray]  # per lineage: the indices (into firm_ids) of its exposed firms
    n_sentences: np.ndarray  # int64, measured sentences
    tone: np.ndarray  # int64 (lineages, 3): positive, negative, uncertainty over them


def lineage_queries(
    found: dict[Quarter, QuarterThemes], entries: dict[str, QuarterLineages]
) -> LineageQueries:
    """Each lineage with a theme in the range, and its query."""
    sums: dict[int, np.ndarray] = {}
    homes: dict[int, list[tuple[Quarter, int]]] = {}
    for quarter, themes in sorted(found.items()):
        lineage_of = entries[str(quarter)].lineage_of_theme
        centroids = np.asarray(themes.table.column("centroid").to_pylist(), dtype=np.float64)
        sizes = themes.table.column("n_sentences").to_pylist()
        for row, theme in enumerate(themes.theme_id):
            lineage = lineage_of[str(theme)]
            sums[lineage] = sums.get(lineage, 0.0) + centroids[row]
            homes.setdefault(lineage, []).append((quarter, int(sizes[row] or 0)))
    ids = sorted(sums)
    vectors = np.stack([sums[lineage] for lineage in ids]) if ids else np.zeros((0, 0))
    if ids:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    home: dict[Quarter, list[tuple[int, int]]] = {quarter: [] for quarter in found}
    for row, lineage in enumerate(ids):
        for quarter, size in homes[lineage]:
            home[quarter].append((row, size))
    return LineageQueries(ids, vectors.astype(np.float32), home)


def measure_lineages(
    store: Store,
    queries: LineageQueries,
    quarters: list[Quarter],
    min_sentences: int,
    device: str,
    on_progress: Callable[[str, Quarter], None] = lambda step, quarter: None,
) -> tuple[np.ndarray, dict[Quarter, MeasuredQuarter]]:
    """The lineages' thresholds (one per lineage, in `queries` order) and each quarter's measure."""
    sums = np.zeros(len(queries.lineage_ids))
    homes = np.zeros(len(queries.lineage_ids))
    for quarter in quarters:
        on_progress("calibrating", quarter)
        home = queries.home.get(quarter, [])
        if not home:
            continue
        sentences = _sentences(store, quarter)
        if sentences.n == 0:
            continue
        mean = mean_embedding(sentences.embeddings)
        size = dict(home)
        for group in _groups([row for row, _ in home]):
            similarity = centred_similarities(
                sentences.embeddings, mean, queries.vectors[group], device, separately=False
            )
            for column, row in enumerate(group):
                nearest = nearest_median(similarity[:, column], min(PSEUDO_RELEVANT, size[row]))
                sums[row] += threshold(similarity[:, column], nearest)
                homes[row] += 1
    # A lineage calibrated nowhere (its quarters' maps hold no sentence) selects nothing.
    thresholds = np.where(homes > 0, sums / np.maximum(homes, 1), np.inf)
    measured = {}
    for quarter in quarters:
        on_progress("measuring", quarter)
        measured[quarter] = _measure_quarter(store, quarter, queries, thresholds, min_sentences, device)
    return thresholds, measured


def _measure_quarter(
    store: Store,
    quarter: Quarter,
    queries: LineageQueries,
    thresholds: np.ndarray,
    min_sentences: int,
    device: str,
) -> MeasuredQuarter:
    sentences = _sentences(store, quarter)
    firm_ids = sorted(sentences.firms)
    n = len(queries.lineage_ids)
    picked: list[np.ndarray] = [np.zeros(0, np.int64)] * n
    if sentences.n:
        mean = mean_embedding(sentences.embeddings)
        for group in _groups(list(range(n))):
            similarity = centred_similarities(
                sentences.embeddings, mean, queries.vectors[group], device, separately=False
            )
            for column, row in enumerate(group):
                picked[row] = np.flatnonzero(similarity[:, column] >= thresholds[row])
    # Where each mapped firm sits among every prefetched firm (a firm the map skipped has none).
    place = np.searchsorted(firm_ids, sentences.firm_ids).astype(np.int64)
    exposed = []
    for rows in picked:
        counts = np.bincount(place[sentences.firm[rows]], minlength=len(firm_ids))
        exposed.append(np.flatnonzero(counts >= min_sentences))
    return MeasuredQuarter(
        firm_ids=firm_ids,
        exposed=exposed,
        n_sentences=np.array([len(rows) for rows in picked], np.int64),
        tone=_tone(store, quarter, sentences, picked),
    )


def _tone(
    store: Store, quarter: Quarter, sentences: QuarterSentences, picked: list[np.ndarray]
) -> np.ndarray:
    """Loughran-McDonald counts over each lineage's sentences; each sentence's text read once."""
    tone = np.zeros((len(picked), 3), np.int64)
    union = np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    if not len(union):
        return tone
    ids = sentences.sentence_ids.take(pa.array(union)).to_pylist()
    texts = texts_of(store, quarter, ids)
    counts = count_tone([texts.get(sentence_id) or "" for sentence_id in ids]).astype(np.int64)
    for lineage, rows in enumerate(picked):
        tone[lineage] = counts[np.searchsorted(union, rows)].sum(axis=0)
    return tone


def _sentences(store: Store, quarter: Quarter) -> QuarterSentences:
    manifest = read_manifest(store, quarter)
    files = mapped_state(store, quarter, allow_partial=True).embedding_files
    return read_sentences(store, quarter, manifest, files, with_text=False)


def _groups(rows: list[int]) -> list[list[int]]:
    return [rows[start : start + _GROUP] for start in range(0, len(rows), _GROUP)]


def measured_frame(
    queries: LineageQueries, thresholds: np.ndarray, measured: dict[Quarter, MeasuredQuarter]
) -> pd.DataFrame:
    """One row per lineage and quarter: measured firms and their share of the quarter's prefetched
    firms, measured sentences and their tone, and the lineage's threshold."""
    frames = []
    for quarter, found in sorted(measured.items()):
        n_firms = np.array([len(firms) for firms in found.exposed], np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "lineage_id": queries.lineage_ids,
                    "quarter": str(quarter),
                    "measured_firms": n_firms,
                    "share_of_firms": n_firms / max(len(found.firm_ids), 1),
                    "measured_sentences": found.n_sentences,
                    "positive": found.tone[:, 0],
                    "negative": found.tone[:, 1],
                    "uncertainty": found.tone[:, 2],
                    "threshold": thresholds.astype(np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
