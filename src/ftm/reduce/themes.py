"""Reduce (`ftm reduce`): a quarter's firm topics into cross-firm themes and the exposure panel.

Input, memory-bounded: the firm-topic part files that the batches' checkpoints list (a part not
listed is a leftover of a killed attempt), read part by part and only the columns needed: ids,
PERMNO/GVKEY, sentence counts, keywords and centroids (100,000 topics × 384 floats = 150 MB);
representative sentences are read in a second pass, only for the few topics that show them.
Each firm's total sentence count (the denominator of its exposure shares) comes from the
prefetch chunks' `firm_id` column alone, as the batch plan counts it (`plan.sentence_counts`):
every prefetched sentence counts, outliers and sentences of skipped topics included.

The map must be complete: every batch of `batches.jsonl` with a checkpoint marked finished.
Otherwise reduce refuses, naming the batches, unless `allow_partial`, which is then recorded in
every output file's Parquet metadata (key `ftm.reduce`) and in the returned result.

Clustering (`cluster_topics`), chosen by measurement (benchmarks/README.md):
1. Centre: unit centroids minus the quarter's mean topic, normalised again. Mean sentence
   embeddings of earnings calls share a large common direction ("a firm talking about its
   business"): raw cosines between unrelated generic topics of different firms are ≈ 0.8,
   which no threshold separates. Without that direction, unrelated topics sit near 0.
2. Candidate neighbours: each topic's `n_neighbors` nearest topics by cosine, exact for small
   quarters; above `_EXACT_LIMIT` topics approximate (an inverted file: a seeded spherical
   k-means into √n cells, each cell searched against its `_PROBES` nearest cells), as an exact
   search is 7.7 TFLOP at 100,000 topics: 214 s on two cores, against 13 s.
3. Average linkage on cosine over that graph, stopped at `min_similarity`: two clusters merge
   only when the mean similarity over all their pairs of topics is at least `min_similarity`,
   so a theme cannot chain through loosely related topics. The mean over all pairs is exact and
   cheap: for unit vectors it is ΣA·ΣB / (|A|·|B|), so the clustering keeps one summed vector per
   cluster, never a pairwise matrix. Merges go in rounds of reciprocal best pairs, which for
   average linkage (a reducible linkage) gives the same clusters as merging the best pair one at
   a time, in tens of vectorised rounds rather than 100,000 Python steps. sklearn's
   AgglomerativeClustering with the same graph took 35 s at 20,000 topics, over 10 minutes at 100,000.
4. Themes: clusters whose topics come from at least `min_firms` distinct firms.

Theme keywords: c-TF-IDF over the member topics' keywords, each counted with its topic's
sentence count (and less the lower it ranks), against every topic of the quarter as background;
the firm topics' keywords are already the c-TF-IDF top words of their cleaned sentences, so this
ranks what a theme's firms say most, and what sets it apart from the quarter, without reading
2,000,000 sentences again.

A theme's centroid is the unit mean of its topics' unit centroids in the embedding space as
stored (not centred), so that it compares with any sentence embedding; `theme_topics.similarity`
is each topic's cosine to it. The exposure panel is sparse: one row per firm and theme the firm
has topics in (n_sentences > 0); a missing row means no exposure.

Determinism: topics are ordered by (firm_id, topic_id) whatever the part layout, the k-means is
seeded, every tie is broken by index or word, and nothing time-dependent is written: the same
input gives byte-identical files on the same machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftm import __version__, layout
from ftm.errors import DataError, UsageError
from ftm.map import read_checkpoint
from ftm.plan import read_plan, sentence_counts
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.schemas import FIRM_THEME_EXPOSURE, FIRM_TOPICS, THEME_TOPICS, THEMES, centroid_type
from ftm.settings import FtmSettings, ReduceSettings
from ftm.storage import Store

METADATA_KEY = b"ftm.reduce"
# Below this many topics the neighbour search is exact: a few blocked matrix products.
_EXACT_LIMIT = 8192
# Cells each cell is searched against. Measured at 100,000 topics (benchmarks/README.md): 97 % of
# the exact 15 neighbours found, themes matching those of the exact graph (adjusted Rand 0.99).
# Searching in 128 PCA dimensions instead was 6 s faster but found 56 % (adjusted Rand 0.92).
_PROBES = 8
_KMEANS_ITERATIONS = 10
# Rows × columns of one similarity block: bounds memory (64 M float32 = 256 MB).
_BLOCK_ELEMENTS = 1 << 26
# Edges whose similarity is computed at once in the linkage (two gathers of 384 floats each).
_EDGE_CHUNK = 1 << 16
# Keywords joined into a theme's representation string, as topics name theirs.
_REPRESENTATION_WORDS = 4
# The columns of the first pass; representative sentences come in the second.
_TOPIC_COLUMNS = ["firm_id", "permno", "gvkey", "topic_id", "keywords", "n_sentences", "centroid"]

Phase = Literal["reading", "neighbours", "clustering", "describing", "writing", "done"]


@dataclass(frozen=True)
class ReduceProgress:
    """What the progress callback is told: the phase, and how far into it (parts read, say)."""

    phase: Phase
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class MapState:
    """Whether the quarter's map is complete, and the part files its checkpoints list."""

    n_batches: int
    missing: list[str]  # batches without a checkpoint
    unfinished: list[str]  # batches whose checkpoint is not finished
    part_files: list[str]
    n_failed_firms: int

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unfinished

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} without a checkpoint ({_listed(self.missing)})")
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} unfinished ({_listed(self.unfinished)})")
        return " and ".join(parts)


@dataclass(frozen=True)
class ThemeSummary:
    theme_id: int
    representation: str
    n_firms: int
    n_topics: int
    example_firms: list[str]


@dataclass(frozen=True)
class ReduceResult:
    quarter: str
    partial: bool
    missing_batches: list[str]
    unfinished_batches: list[str]
    n_batches: int
    n_failed_firms: int  # firms the map recorded as failed: absent from the panel
    n_topics: int
    n_firms: int  # firms with topics
    n_themes: int
    n_theme_topics: int
    n_exposed_firms: int
    n_exposure_rows: int
    files: dict[str, str]  # artifact name → path relative to the storage root
    top_themes: list[ThemeSummary] = field(default_factory=list)


def map_state(store: Store, quarter: Quarter) -> MapState:
    """Reads the plan and every batch's checkpoint; a quarter never submitted is a usage error."""
    batches = read_plan(store, quarter)
    if batches is None:
        raise UsageError(
            f"{quarter} has no firm topics in {store.uri()} (no batch plan): "
            f"run `ftm submit --quarter {quarter}` first"
        )
    missing, unfinished, parts = [], [], []
    failed = 0
    for batch in batches:
        checkpoint = read_checkpoint(store, quarter, batch.batch_id)
        if checkpoint is None:
            missing.append(batch.batch_id)
            continue
        if not checkpoint.finished:
            unfinished.append(batch.batch_id)
        parts.extend(checkpoint.part_files)
        failed += len(checkpoint.failed_firm_ids)
    return MapState(len(batches), missing, unfinished, parts, failed)


def reduce_quarter(
    settings: FtmSettings,
    quarter: Quarter,
    *,
    allow_partial: bool = False,
    on_progress: Callable[[ReduceProgress], None] = lambda progress: None,
) -> ReduceResult:
    """Finds the quarter's themes and writes themes, theme_topics and firm_theme_exposure."""
    store = Store.from_settings(settings.storage)
    state = map_state(store, quarter)
    if not state.complete and not allow_partial:
        raise UsageError(
            f"the map of {quarter} is incomplete: of {state.n_batches} batches, {state.describe()}. "
            f"Run `ftm submit --quarter {quarter}` to finish it (`ftm watch` shows why batches "
            "stopped), or pass --allow-partial to reduce the batches done so far."
        )
    manifest = read_manifest(store, quarter)
    topics = _read_topics(store, state.part_files, on_progress)
    if topics.n == 0 and not state.complete:
        raise UsageError(
            f"no batch of {quarter} has written firm topics yet ({state.describe()}): "
            f"run `ftm submit --quarter {quarter}` and let it finish"
        )
    if topics.n == 0:
        raise DataError(
            f"the map of {quarter} found no topics in any firm ({len(state.part_files)} part files): "
            "every firm was skipped or failed; `ftm watch` shows why"
        )
    totals = sentence_counts(store, quarter, manifest)
    config = settings.reduce
    labels = cluster_topics(
        topics.centroids,
        min_similarity=config.min_similarity,
        n_neighbors=config.n_neighbors,
        random_state=config.random_state,
        on_progress=on_progress,
    )
    on_progress(ReduceProgress("describing"))
    themes = _themes(topics, labels, config.min_firms)
    metadata = {
        "quarter": str(quarter),
        "partial": not state.complete,
        "missing_batches": state.missing,
        "unfinished_batches": state.unfinished,
        "n_batches": state.n_batches,
        "n_topics": topics.n,
        "ftm_version": __version__,
        "reduce": config.model_dump(mode="json"),
    }
    tables = _Tables(store, quarter, topics, themes, totals, config, metadata)
    built = {
        "theme_topics": tables.theme_topics_table(),
        "firm_theme_exposure": tables.exposure_table(),
        "themes": tables.themes_table(state.part_files),
    }
    on_progress(ReduceProgress("writing", 0, len(built)))
    files = _write(store, quarter, built, tables.schemas())
    on_progress(ReduceProgress("done", len(built), len(built)))
    exposure = built["firm_theme_exposure"]
    return ReduceResult(
        quarter=str(quarter),
        partial=not state.complete,
        missing_batches=state.missing,
        unfinished_batches=state.unfinished,
        n_batches=state.n_batches,
        n_failed_firms=state.n_failed_firms,
        n_topics=topics.n,
        n_firms=len(topics.firm_ids),
        n_themes=len(themes),
        n_theme_topics=built["theme_topics"].num_rows,
        n_exposed_firms=len(pc.unique(exposure.column("firm_id"))),
        n_exposure_rows=exposure.num_rows,
        files=files,
        top_themes=tables.summaries(5),
    )


# --- the first pass: topics ---------------------------------------------------------------------


@dataclass
class _Topics:
    """Every topic of the quarter, ordered by (firm_id, topic_id); keywords as (topic, word, rank)."""

    firm_ids: list[str]  # distinct, sorted
    firm: np.ndarray  # per topic: index into firm_ids
    topic_id: np.ndarray
    n_sentences: np.ndarray
    centroids: np.ndarray  # float32, one row per topic, as stored
    permno: list[int | None]  # per firm
    gvkey: list[str | None]  # per firm
    words: list[str]  # the vocabulary
    keyword_topic: np.ndarray  # per keyword occurrence: topic index
    keyword_word: np.ndarray  # index into words
    keyword_rank: np.ndarray  # 0 for a topic's first keyword

    @property
    def n(self) -> int:
        return len(self.topic_id)


def _read_topics(
    store: Store, part_files: list[str], on_progress: Callable[[ReduceProgress], None]
) -> _Topics:
    firm_col, topic_col, count_col, vectors = [], [], [], []
    permno: dict[str, int | None] = {}
    gvkey: dict[str, str | None] = {}
    vocabulary: dict[str, int] = {}
    kw_topic, kw_word, kw_rank = [], [], []
    offset = 0
    dimensions: int | None = None
    for done, path in enumerate(part_files):
        on_progress(ReduceProgress("reading", done, len(part_files)))
        table = store.read_table(path, FIRM_TOPICS, columns=_TOPIC_COLUMNS)
        n = table.num_rows
        if n == 0:
            continue
        centroid = table.column("centroid").combine_chunks()
        if centroid.null_count:
            raise DataError(f"{store.uri(path)}: {centroid.null_count} topic(s) have no centroid")
        size = centroid.type.list_size
        if dimensions is None:
            dimensions = size
        elif size != dimensions:
            raise DataError(
                f"{store.uri(path)}: centroids have {size} dimensions, earlier parts {dimensions}: "
                "the quarter was mapped with two embedding models; run `ftm submit --new`"
            )
        vectors.append(centroid.flatten().to_numpy(zero_copy_only=False).reshape(n, size))
        firms = table.column("firm_id").to_pylist()
        firm_col.extend(firms)
        topic_col.append(table.column("topic_id").to_numpy(zero_copy_only=False))
        counts = pc.fill_null(table.column("n_sentences"), 0).to_numpy(zero_copy_only=False)
        count_col.append(counts)
        for firm, number, key in zip(
            firms, table.column("permno").to_pylist(), table.column("gvkey").to_pylist(), strict=True
        ):
            if permno.get(firm) is None:
                permno[firm] = number
            if gvkey.get(firm) is None:
                gvkey[firm] = key
        # Keywords stay Arrow-encoded: one dictionary per part, mapped onto the vocabulary.
        keywords = table.column("keywords").combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(keywords), 0).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(keywords)
        if len(flat):
            encoded = pc.dictionary_encode(flat)
            local = np.array(
                [vocabulary.setdefault(word, len(vocabulary)) for word in encoded.dictionary.to_pylist()],
                dtype=np.int64,
            )
            rows = np.repeat(np.arange(n), lengths)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            kw_topic.append(rows + offset)
            kw_word.append(local[encoded.indices.to_numpy(zero_copy_only=False)])
            kw_rank.append(np.arange(len(rows)) - starts)
        offset += n
    on_progress(ReduceProgress("reading", len(part_files), len(part_files)))
    if offset == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Topics([], empty, empty, empty, np.zeros((0, 0), np.float32), [], [], [], empty, empty, empty)

    firm_ids = sorted(set(firm_col))
    firm_index = {firm: i for i, firm in enumerate(firm_ids)}
    firm = np.array([firm_index[f] for f in firm_col], dtype=np.int64)
    topic_id = np.concatenate(topic_col).astype(np.int64)
    # The order every output follows: by firm, then topic, whatever the parts' layout.
    order = np.lexsort((topic_id, firm))
    firm, topic_id = firm[order], topic_id[order]
    repeated = np.flatnonzero((firm[1:] == firm[:-1]) & (topic_id[1:] == topic_id[:-1]))
    if len(repeated):
        i = repeated[0]
        raise DataError(
            f"topic {topic_id[i]} of {firm_ids[firm[i]]} is in two part files: the checkpoints "
            "list overlapping parts; run `ftm submit --new` to map the quarter again"
        )
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    ranks = np.concatenate(kw_rank) if kw_rank else np.zeros(0, dtype=np.int64)
    return _Topics(
        firm_ids=firm_ids,
        firm=firm,
        topic_id=topic_id,
        n_sentences=np.concatenate(count_col).astype(np.int64)[order],
        centroids=np.concatenate(vectors).astype(np.float32, copy=False)[order],
        permno=[permno.get(f) for f in firm_ids],
        gvkey=[gvkey.get(f) for f in firm_ids],
        words=list(vocabulary),
        keyword_topic=position[np.concatenate(kw_topic)] if kw_topic else np.zeros(0, dtype=np.int64),
        keyword_word=np.concatenate(kw_word) if kw_word else np.zeros(0, dtype=np.int64),
        keyword_rank=ranks,
    )


# --- clustering ---------------------------------------------------------------------------------


def cluster_topics(
    centroids: np.ndarray,
    *,
    min_similarity: float,
    n_neighbors: int,
    random_state: int,
    on_progress: Callable[[ReduceProgress], None] = lambda progress: None,
) -> np.ndarray:
    """A cluster per topic, as the smallest index of its members (see the module docstring)."""
    n = len(centroids)
    if n < 2:
        return np.arange(n)
    vectors = centred(centroids)
    on_progress(ReduceProgress("neighbours", 0, n))
    neighbours = nearest_neighbours(vectors, min(n_neighbors, n - 1), random_state)
    on_progress(ReduceProgress("clustering", 0, n))
    return average_linkage(vectors, neighbours, min_similarity)


def centred(centroids: np.ndarray) -> np.ndarray:
    """Unit rows, less their mean, as unit rows again (a row equal to the mean stays zero)."""
    vectors = _unit(np.asarray(centroids, dtype=np.float32))
    vectors -= vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
    return _unit(vectors)


def nearest_neighbours(vectors: np.ndarray, k: int, random_state: int) -> np.ndarray:
    """Each row's k most similar other rows (by dot product), exact below `_EXACT_LIMIT` rows."""
    if len(vectors) <= _EXACT_LIMIT:
        return _exact_neighbours(vectors, k)
    return _approximate_neighbours(vectors, k, random_state)


def _exact_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    n = len(vectors)
    found = np.empty((n, k), dtype=np.int64)
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, step):
        block = vectors[start : start + step] @ vectors.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # never its own neighbour
        found[start : start + len(block)] = np.argpartition(-block, k - 1, axis=1)[:, :k]
    return found


def _approximate_neighbours(vectors: np.ndarray, k: int, random_state: int) -> np.ndarray:
    """An inverted-file search: rows go into √n cells by spherical k-means, and each cell's rows
    are compared with the rows of its `_PROBES` nearest cells, about 8/√n of all rows. A row's
    true neighbours are nearly always in the cells nearest its own."""
    n_cells = max(2, int(round(np.sqrt(len(vectors)))))
    centres, cell = _spherical_kmeans(vectors, n_cells, random_state)
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_cells + 1))
    probes = min(_PROBES, n_cells)
    closeness = centres @ centres.T
    np.fill_diagonal(closeness, np.inf)  # a cell's own rows come first in its neighbourhood
    nearest_cells = np.argsort(-closeness, axis=1, kind="stable")[:, :probes]
    found = np.empty((len(vectors), k), dtype=np.int64)
    for c in range(n_cells):
        members = order[bounds[c] : bounds[c + 1]]
        if len(members) == 0:
            continue
        hood = np.concatenate([order[bounds[h] : bounds[h + 1]] for h in nearest_cells[c]])
        local = vectors[hood]
        kk = min(k, len(hood) - 1)
        step = max(1, _BLOCK_ELEMENTS // len(hood))
        for start in range(0, len(members), step):
            rows = members[start : start + step]  # the first rows of the neighbourhood
            if kk < 1:
                found[rows] = rows[:, None]
                continue
            block = local[start : start + len(rows)] @ local.T
            block[np.arange(len(rows)), start + np.arange(len(rows))] = -np.inf
            chosen = hood[np.argpartition(-block, kk - 1, axis=1)[:, :kk]]
            if kk < k:  # a tiny neighbourhood: pad with the row itself, which the linkage ignores
                chosen = np.concatenate([chosen, np.repeat(rows[:, None], k - kk, axis=1)], axis=1)
            found[rows] = chosen
    return found


def _spherical_kmeans(vectors: np.ndarray, k: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """k unit centres and each row's cell, by Lloyd iterations on cosine from seeded rows."""
    rng = np.random.default_rng(random_state)
    centres = vectors[np.sort(rng.choice(len(vectors), size=k, replace=False))].copy()
    cell = np.zeros(len(vectors), dtype=np.int64)
    step = max(1, _BLOCK_ELEMENTS // k)
    for _ in range(_KMEANS_ITERATIONS):
        for start in range(0, len(vectors), step):
            cell[start : start + step] = np.argmax(vectors[start : start + step] @ centres.T, axis=1)
        order = np.argsort(cell, kind="stable")
        present, starts = np.unique(cell[order], return_index=True)
        sums = centres.copy()  # an empty cell keeps its centre
        sums[present] = np.add.reduceat(vectors[order], starts, axis=0)
        centres = _unit(sums)
    return centres, cell


def average_linkage(vectors: np.ndarray, neighbours: np.ndarray, min_similarity: float) -> np.ndarray:
    """Average-linkage clusters of unit rows over a neighbour graph, merged while the mean
    similarity of all pairs across two clusters is at least `min_similarity`; see the module
    docstring. Returns each row's cluster as the smallest row index in it."""
    n = len(vectors)
    source = np.repeat(np.arange(n), neighbours.shape[1])
    target = neighbours.ravel()
    a, b = _unique_edges(np.minimum(source, target), np.maximum(source, target), n)
    sums = vectors.astype(np.float32, copy=True)
    sizes = np.ones(n, dtype=np.float64)
    parent = np.arange(n)
    similarity = _dots(sums, a, b)
    # An edge below the threshold can only matter again once one end merges with a cluster that
    # the other end is not joined to in the graph; dropping it keeps each round small.
    keep = similarity >= min_similarity
    a, b, similarity = a[keep], b[keep], similarity[keep]
    while len(a):
        # Each cluster's best neighbour: highest similarity, ties to the lower index.
        u = np.concatenate([a, b])
        v = np.concatenate([b, a])
        order = np.lexsort((v, -np.concatenate([similarity, similarity]), u))
        u, v = u[order], v[order]
        first = np.ones(len(u), dtype=bool)
        first[1:] = u[1:] != u[:-1]
        best = np.full(n, -1)
        best[u[first]] = v[first]
        x, y = u[first], v[first]
        mutual = (x < y) & (best[y] == x)
        x, y = x[mutual], y[mutual]
        if len(x) == 0:
            break
        sums[x] += sums[y]
        sizes[x] += sizes[y]
        parent[y] = x
        renamed = np.arange(n)
        renamed[y] = x
        a, b = renamed[a], renamed[b]
        low, high = np.minimum(a, b), np.maximum(a, b)
        kept = low != high
        a, b, index = _unique_edges(low[kept], high[kept], n, return_index=True)
        similarity = similarity[kept][index]
        merged = np.zeros(n, dtype=bool)
        merged[x] = True
        stale = merged[a] | merged[b]
        similarity[stale] = _dots(sums, a[stale], b[stale]) / (sizes[a[stale]] * sizes[b[stale]])
        keep = similarity >= min_similarity
        a, b, similarity = a[keep], b[keep], similarity[keep]
    while True:  # every row to its cluster's root, the smallest index
        root = parent[parent]
        if np.array_equal(root, parent):
            return parent
        parent = root


def _unique_edges(low: np.ndarray, high: np.ndarray, n: int, return_index: bool = False) -> Any:
    keys, index = np.unique(low * n + high, return_index=True)
    edges = (keys // n, keys % n)
    if return_index:
        return (*edges, index)
    keep = edges[0] != edges[1]  # self-pairs from padded neighbour lists
    return edges[0][keep], edges[1][keep]


def _dots(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), _EDGE_CHUNK):
        end = start + _EDGE_CHUNK
        out[start:end] = np.einsum("ij,ij->i", vectors[a[start:end]], vectors[b[start:end]])
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


# --- themes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Theme:
    members: np.ndarray  # topic indices, in (firm, topic) order
    centroid: np.ndarray  # unit mean of the members' unit centroids, as stored
    similarity: np.ndarray  # per member: cosine to the centroid
    n_firms: int
    n_sentences: int


def _themes(topics: _Topics, labels: np.ndarray, min_firms: int) -> list[_Theme]:
    """Clusters spanning at least `min_firms` firms, largest first (firms, then sentences)."""
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    ends = np.r_[starts[1:], len(order)]
    themes = []
    for start, end in zip(starts, ends, strict=True):
        members = order[start:end]
        n_firms = len(np.unique(topics.firm[members]))
        if n_firms < min_firms:
            continue
        unit = _unit(topics.centroids[members])
        centroid = _unit(unit.mean(axis=0, dtype=np.float64)[None, :].astype(np.float32))[0]
        themes.append(
            _Theme(members, centroid, unit @ centroid, n_firms, int(topics.n_sentences[members].sum()))
        )
    # Ties by the first member, which is stable: members are in (firm, topic) order.
    themes.sort(key=lambda theme: (-theme.n_firms, -theme.n_sentences, int(theme.members[0])))
    return themes


class _Tables:
    """The three output tables, built from the topics and their themes."""

    def __init__(
        self,
        store: Store,
        quarter: Quarter,
        topics: _Topics,
        themes: list[_Theme],
        totals: dict[str, int],
        config: ReduceSettings,
        metadata: dict[str, Any],
    ):
        self.store = store
        self.quarter = str(quarter)
        self.topics = topics
        self.themes = themes
        self.totals = totals
        self.config = config
        self.metadata = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
        self.dimensions = topics.centroids.shape[1]
        self.keywords = _theme_keywords(topics, themes, config.top_n_words)

    def schemas(self) -> dict[str, pa.Schema]:
        themes = pa.schema(
            [
                pa.field("centroid", centroid_type(self.dimensions)) if f.name == "centroid" else f
                for f in THEMES
            ]
        )
        return {"themes": themes, "theme_topics": THEME_TOPICS, "firm_theme_exposure": FIRM_THEME_EXPOSURE}

    def theme_topics_table(self) -> pa.Table:
        members = [theme.members for theme in self.themes]
        index = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
        theme_id = np.repeat(np.arange(len(self.themes), dtype=np.int32), [len(m) for m in members])
        similarity = [theme.similarity for theme in self.themes]
        columns = {
            "theme_id": pa.array(theme_id, pa.int32()),
            "firm_id": pa.array([self.topics.firm_ids[i] for i in self.topics.firm[index]], pa.string()),
            "topic_id": pa.array(self.topics.topic_id[index].astype(np.int32), pa.int32()),
            "similarity": pa.array(
                np.concatenate(similarity).astype(np.float32) if similarity else np.zeros(0, np.float32),
                pa.float32(),
            ),
        }
        return pa.table(columns, schema=THEME_TOPICS.with_metadata(self.metadata))

    def exposure_table(self) -> pa.Table:
        firm_of = self.topics.firm
        rows: dict[tuple[int, int], int] = {}
        for theme_id, theme in enumerate(self.themes):
            firms = firm_of[theme.members]
            per_firm = np.bincount(firms, weights=self.topics.n_sentences[theme.members])
            for firm in np.unique(firms):
                rows[(int(firm), theme_id)] = int(per_firm[firm])
        keys = sorted(rows)  # by firm (ids are sorted), then theme
        firm_ids = self.topics.firm_ids
        shares = []
        for firm, theme_id in keys:
            total = self.totals.get(firm_ids[firm], 0)
            if total < 1:
                raise DataError(
                    f"{firm_ids[firm]} has topics but no sentences in the prefetch of {self.quarter}: "
                    "the firm topics and the prefetch disagree; run `ftm submit --new`"
                )
            shares.append(rows[(firm, theme_id)] / total)
        for (firm, _), share in zip(keys, shares, strict=True):
            if share > 1.0:
                raise DataError(
                    f"{firm_ids[firm]}'s topics hold more sentences than its prefetch "
                    f"({self.totals.get(firm_ids[firm])}): the firm topics and the prefetch disagree"
                )
        columns = {
            "quarter": pa.array([self.quarter] * len(keys), pa.string()),
            "firm_id": pa.array([firm_ids[firm] for firm, _ in keys], pa.string()),
            "permno": pa.array([self.topics.permno[firm] for firm, _ in keys], pa.int64()),
            "gvkey": pa.array([self.topics.gvkey[firm] for firm, _ in keys], pa.string()),
            "theme_id": pa.array([theme for _, theme in keys], pa.int32()),
            "n_sentences": pa.array([rows[key] for key in keys], pa.int32()),
            "share": pa.array(shares, pa.float64()),
        }
        return pa.table(columns, schema=FIRM_THEME_EXPOSURE.with_metadata(self.metadata))

    def themes_table(self, part_files: list[str]) -> pa.Table:
        sentences = self._representative_sentences(part_files)
        schema = self.schemas()["themes"]
        count = len(self.themes)
        keywords = self.keywords
        columns = {
            "theme_id": pa.array(np.arange(count, dtype=np.int32), pa.int32()),
            "quarter": pa.array([self.quarter] * count, pa.string()),
            "keywords": pa.array(keywords, pa.list_(pa.string())),
            "representation": pa.array(
                ["_".join(words[:_REPRESENTATION_WORDS]) for words in keywords], pa.string()
            ),
            "n_firms": pa.array([t.n_firms for t in self.themes], pa.int32()),
            "n_topics": pa.array([len(t.members) for t in self.themes], pa.int32()),
            "n_sentences": pa.array([t.n_sentences for t in self.themes], pa.int32()),
            "representative_sentences": pa.array(sentences, pa.list_(pa.string())),
            "centroid": pa.FixedSizeListArray.from_arrays(
                pa.array(
                    np.concatenate([t.centroid for t in self.themes])
                    if count
                    else np.zeros(0, dtype=np.float32),
                    pa.float32(),
                ),
                self.dimensions,
            ),
        }
        return pa.table(columns, schema=schema.with_metadata(self.metadata))

    def summaries(self, n: int) -> list[ThemeSummary]:
        summaries = []
        for theme_id, theme in enumerate(self.themes[:n]):
            firms = [self.topics.firm_ids[f] for f in self._showcase(theme)]
            summaries.append(
                ThemeSummary(
                    theme_id=theme_id,
                    representation="_".join(self.keywords[theme_id][:_REPRESENTATION_WORDS]),
                    n_firms=theme.n_firms,
                    n_topics=len(theme.members),
                    example_firms=firms[:2],
                )
            )
        return summaries

    def _showcase(self, theme: _Theme) -> list[int]:
        """The theme's firms by their closest topic, closest first (ties by firm order)."""
        order = np.lexsort((theme.members, -theme.similarity))
        firms: list[int] = []
        for i in order:
            firm = int(self.topics.firm[theme.members[i]])
            if firm not in firms:
                firms.append(firm)
        return firms

    def _representative_sentences(self, part_files: list[str]) -> list[list[str]]:
        """Per theme, sentences of several firms: the best topic of each of the closest firms,
        round robin over their representative sentences (closest to their topic first)."""
        wanted: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (firm, topic) → (theme, slot)
        n_wanted = self.config.n_representative
        for theme_id, theme in enumerate(self.themes):
            order = np.lexsort((theme.members, -theme.similarity))
            seen: set[int] = set()
            for i in order:
                topic = int(theme.members[i])
                firm = int(self.topics.firm[topic])
                if firm in seen:
                    continue
                seen.add(firm)
                key = (self.topics.firm_ids[firm], int(self.topics.topic_id[topic]))
                wanted.setdefault(key, []).append((theme_id, len(seen) - 1))
                if len(seen) == n_wanted:
                    break
        slots: list[dict[int, list[str]]] = [{} for _ in self.themes]
        for path in part_files:
            table = self.store.read_table(
                path, FIRM_TOPICS, columns=["firm_id", "topic_id", "representative_sentences"]
            )
            keys = zip(table.column("firm_id").to_pylist(), table.column("topic_id").to_pylist(), strict=True)
            hits = [i for i, key in enumerate(keys) if key in wanted]
            if not hits:
                continue
            rows = table.take(pa.array(hits, pa.int64())).to_pylist()
            for row in rows:
                for theme_id, slot in wanted[(row["firm_id"], row["topic_id"])]:
                    slots[theme_id][slot] = [s for s in row["representative_sentences"] or [] if s]
        sentences = []
        for by_slot in slots:
            ordered = [by_slot[slot] for slot in sorted(by_slot)]
            chosen: list[str] = []
            depth = max((len(texts) for texts in ordered), default=0)
            for level in range(depth):
                for texts in ordered:
                    if level < len(texts) and texts[level] not in chosen and len(chosen) < n_wanted:
                        chosen.append(texts[level])
            sentences.append(chosen)
        return sentences


def _theme_keywords(topics: _Topics, themes: list[_Theme], top_n: int) -> list[list[str]]:
    """c-TF-IDF over themes (see the module docstring): a word's weight in a theme, normalised
    by the theme's total, times log(1 + average theme total / the word's weight in the quarter)."""
    if not themes or not len(topics.keyword_word):
        return [[] for _ in themes]
    n_words = len(topics.words)
    # A topic's first keyword counts fully, its tenth half: the ranks came from the firm's c-TF-IDF.
    weight = topics.n_sentences[topics.keyword_topic] / (1.0 + topics.keyword_rank / 9.0)
    background = np.bincount(topics.keyword_word, weights=weight, minlength=n_words)
    theme_of = np.full(topics.n, -1, dtype=np.int64)
    for theme_id, theme in enumerate(themes):
        theme_of[theme.members] = theme_id
    in_theme = theme_of[topics.keyword_topic] >= 0
    theme = theme_of[topics.keyword_topic][in_theme]
    word = topics.keyword_word[in_theme]
    keys, inverse = np.unique(theme * n_words + word, return_inverse=True)
    totals = np.bincount(inverse, weights=weight[in_theme])
    key_theme, key_word = keys // n_words, keys % n_words
    theme_total = np.bincount(key_theme, weights=totals, minlength=len(themes))
    # The background is every topic of the quarter, themed or not, as one more class.
    average = background.sum() / (len(themes) + 1)
    score = totals / theme_total[key_theme] * np.log1p(average / background[key_word])
    alphabetical = np.empty(n_words, dtype=np.int64)
    alphabetical[np.argsort(np.array(topics.words, dtype=object), kind="stable")] = np.arange(n_words)
    order = np.lexsort((alphabetical[key_word], -score, key_theme))
    keywords: list[list[str]] = [[] for _ in themes]
    for i in order:
        words = keywords[key_theme[i]]
        if len(words) < top_n and score[i] > 0:
            words.append(topics.words[key_word[i]])
    return keywords


# --- writing ------------------------------------------------------------------------------------


def _write(
    store: Store, quarter: Quarter, tables: dict[str, pa.Table], schemas: dict[str, pa.Schema]
) -> dict[str, str]:
    """themes.parquet last, and the old one removed first: whoever finds a themes.parquet (`ftm
    name`) finds the theme_topics and exposure of the same run beside it."""
    paths = {
        "theme_topics": layout.theme_topics(quarter),
        "firm_theme_exposure": layout.firm_theme_exposure(quarter),
        "themes": layout.themes(quarter),
    }
    store.delete(paths["themes"])
    for name in ("theme_topics", "firm_theme_exposure", "themes"):
        store.write_table(paths[name], tables[name], schemas[name])
    return paths


def _listed(batches: list[str], shown: int = 10) -> str:
    more = f" and {len(batches) - shown} more" if len(batches) > shown else ""
    return ", ".join(batches[:shown]) + more
