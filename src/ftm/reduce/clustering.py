"""Sentences into themes: the vectors they are compared by, micro-clusters, average linkage, and
each sentence's themes.

1. Vectors. A sentence's embedding less the quarter's mean embedding, as a unit vector: sentence
   embeddings of earnings calls share a large common direction ("a firm talking about its
   business"), so raw cosines between unrelated sentences are high and no threshold separates
   them; without it, unrelated sentences sit near 0. Beside it, with weight `lexical_weight`, the
   sentence's words as a latent semantic vector (TF-IDF of cleaned_text's words and two-word
   phrases, reduced by a truncated SVD), also centred: words that firms use for the same subject
   ("covid" and "pandemic", "supply chain") pull its sentences together where the embedding alone
   splits them by phrasing (benchmarks/README.md has the measurements).
2. Micro-clusters: spherical k-means (faiss) into about 1.5·√n cells, trained on a seeded sample,
   every sentence then assigned to its nearest cell; a cell is a few hundred sentences of one
   narrow subject, from any firms.
3. Average linkage over the cells: two clusters merge while the mean cosine of all pairs of their
   sentences is at least `min_similarity`, which for unit vectors is ΣA·ΣB / (|A|·|B|), so the
   linkage keeps one summed vector per cluster and never a pairwise matrix. Merges go in rounds of
   reciprocal best pairs over a nearest-neighbour graph of the cells (exact for average linkage, a
   reducible linkage: the same clusters as merging the best pair one at a time).
4. Memberships: every sentence, outliers of its firm's topics and firms too small for topics
   included, joins the `memberships` themes whose centroids it is most similar to, when that
   similarity is at least `min_membership`. A sentence that speaks of a pandemic's effect on supply
   chains belongs to both themes, and a subject a firm mentions in two sentences reaches the theme
   where per-firm topics never could.

Everything is seeded and ties are broken by index: the same input gives the same themes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

# Rows of a block of vectors computed at once: bounds memory (65,536 × 484 float32 = 127 MB).
_BLOCK_ROWS = 1 << 16
# Cells the k-means is trained on, per cell: faiss's advice is 39 to 256; 64 keeps training at a
# few seconds at 2,000,000 sentences.
_TRAINING_POINTS_PER_CELL = 64
_KMEANS_ITERATIONS = 20
# Above this many sentences × cells, a sentence's cell is found by an inverted file over the cells
# (faiss IndexIVFFlat), not by comparing it with every cell: 2,000,000 × 2,000 exact comparisons
# are 4 TFLOP, a minute on two cores.
_EXACT_ASSIGNMENT_LIMIT = 1 << 30
_ASSIGNMENT_PROBES = 8
# Neighbours of each cell in the linkage graph; a merged cluster keeps the edges of its cells.
_CELL_NEIGHBOURS = 30
# Sentences the truncated SVD of the words is fitted on (then applied to every sentence).
_SVD_SAMPLE = 200_000
_EDGE_CHUNK = 1 << 16


@dataclass(frozen=True)
class Vectors:
    """What a sentence is compared by: its centred embedding and its centred word vector, each of
    unit length, weighted and joined (see the module docstring). Made block by block."""

    embeddings: np.ndarray  # float16, unit rows, as stored
    mean: np.ndarray  # float32: the quarter's mean embedding
    words: np.ndarray | None  # float16, the word vectors, centred and unit; None without words
    lexical_weight: float

    @property
    def n(self) -> int:
        return len(self.embeddings)

    @property
    def dimensions(self) -> int:
        return self.embeddings.shape[1] + (0 if self.words is None else self.words.shape[1])

    def block(self, start: int, stop: int) -> np.ndarray:
        words = None if self.words is None else self.words[start:stop]
        return self._joined(self.embeddings[start:stop], words)

    def blocks(self) -> Any:
        for start in range(0, self.n, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, self.n)
            yield start, stop, self.block(start, stop)

    def rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.dimensions), dtype=np.float32)
        for start in range(0, len(index), _BLOCK_ROWS):
            chosen = index[start : start + _BLOCK_ROWS]
            words = None if self.words is None else self.words[chosen]
            out[start : start + len(chosen)] = self._joined(self.embeddings[chosen], words)
        return out

    def _joined(self, embeddings: np.ndarray, words: np.ndarray | None) -> np.ndarray:
        """Unit(√(1 − w)·unit(embedding − mean) ⊕ √w·words), written in place into one array: this
        runs over every sentence twice per reduce, and temporaries doubled its time."""
        out = np.empty((len(embeddings), self.dimensions), dtype=np.float32)
        meaning = out[:, : embeddings.shape[1]]
        np.subtract(embeddings, self.mean, out=meaning)
        norms = np.sqrt(np.einsum("ij,ij->i", meaning, meaning))
        present = norms > 0
        if words is None:
            meaning /= np.where(present, norms, 1.0)[:, None]
            return out
        # Both parts are unit rows or zero, so the joined row's length is known without measuring.
        words = words.astype(np.float32)  # stored as float16
        has_words = np.einsum("ij,ij->i", words, words) > 0.5
        weight = self.lexical_weight
        length = np.sqrt((1.0 - weight) * present + weight * has_words)
        length = np.where(length > 0, length, 1.0)
        meaning *= (np.sqrt(1.0 - weight) / (np.where(present, norms, 1.0) * length))[:, None]
        np.multiply(words, (np.sqrt(weight) / length)[:, None], out=out[:, embeddings.shape[1] :])
        return out


def mean_embedding(embeddings: np.ndarray) -> np.ndarray:
    """The quarter's mean embedding (float32), summed in float64 block by block: the direction
    every earnings-call sentence shares, which the reduce and the measure take away."""
    total = np.zeros(embeddings.shape[1], dtype=np.float64)
    for start in range(0, len(embeddings), _BLOCK_ROWS):
        total += embeddings[start : start + _BLOCK_ROWS].sum(axis=0, dtype=np.float64)
    return (total / max(len(embeddings), 1)).astype(np.float32)


def sentence_vectors(
    embeddings: np.ndarray,
    counts: sp.csr_matrix | None,
    lexical_weight: float,
    lexical_dimensions: int,
    seed: int,
) -> Vectors:
    """The quarter's sentence vectors: `counts` is the sentences × words count matrix."""
    mean = mean_embedding(embeddings)
    words = None
    if counts is not None and lexical_weight > 0 and counts.shape[1] > lexical_dimensions:
        words = _word_vectors(counts, lexical_dimensions, seed)
    return Vectors(embeddings, mean, words, lexical_weight)


def _word_vectors(counts: sp.csr_matrix, dimensions: int, seed: int) -> np.ndarray:
    """TF-IDF (sublinear counts) of each sentence's words, reduced to `dimensions` by a truncated
    SVD fitted on a seeded sample, less the mean, as unit rows (a sentence without words is 0)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(counts.shape[0], size=min(_SVD_SAMPLE, counts.shape[0]), replace=False))
    svd = TruncatedSVD(dimensions, algorithm="randomized", random_state=seed).fit(
        tfidf.transform(counts[sample])
    )
    components = svd.components_.astype(np.float32).T
    # Kept in float16, as the embeddings are, and centred and normalised in place a block at a
    # time: at 2,000,000 sentences float32 rows and a second copy for unit() were 1.6 GB beside
    # the embeddings and the count matrix, at the reduce's peak; they are 400 MB now.
    out = np.empty((counts.shape[0], dimensions), dtype=np.float16)
    total = np.zeros(dimensions)
    for start in range(0, counts.shape[0], _BLOCK_ROWS):
        rows = tfidf.transform(counts[start : start + _BLOCK_ROWS]).astype(np.float32) @ components
        out[start : start + rows.shape[0]] = rows
        total += rows.sum(axis=0, dtype=np.float64)
    mean = (total / max(counts.shape[0], 1)).astype(np.float32)
    for start in range(0, len(out), _BLOCK_ROWS):
        block = out[start : start + _BLOCK_ROWS].astype(np.float32) - mean
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        out[start : start + _BLOCK_ROWS] = block / np.where(norms > 0, norms, 1.0)[:, None]
    return out


# --- micro-clusters ---------------------------------------------------------------------------


def n_cells(n_sentences: int, setting: int) -> int:
    """`reduce.micro_clusters`, or 1.5·√n when it is 0 (at least 2, at most one per sentence)."""
    wanted = setting or int(round(1.5 * np.sqrt(n_sentences)))
    return int(min(max(2, wanted), n_sentences))


@dataclass(frozen=True)
class Cells:
    """The micro-clusters: each sentence's cell, and each cell's sum of unit vectors and size."""

    cell: np.ndarray  # int64, per sentence
    sums: np.ndarray  # float64, cells × dimensions
    sizes: np.ndarray  # float64, sentences per cell


def micro_clusters(vectors: Vectors, k: int, seed: int, on_progress: Callable[[int, int], None]) -> Cells:
    """A spherical k-means into `k` cells, every sentence assigned to its nearest cell. The cells'
    sums are added up in the same pass over the vectors as the assignment, since making the
    vectors of 2,000,000 sentences costs as much as searching them."""
    import faiss

    rng = np.random.default_rng(seed)
    size = min(vectors.n, k * _TRAINING_POINTS_PER_CELL)
    sample = vectors.rows(np.sort(rng.choice(vectors.n, size=size, replace=False)))
    kmeans = faiss.Kmeans(
        vectors.dimensions,
        k,
        niter=_KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        max_points_per_centroid=_TRAINING_POINTS_PER_CELL,
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(sample)
    centres = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    if vectors.n * k <= _EXACT_ASSIGNMENT_LIMIT:
        index: Any = faiss.IndexFlatIP(vectors.dimensions)
    else:
        lists = max(2, int(round(np.sqrt(k))))
        quantizer = faiss.IndexFlatIP(vectors.dimensions)
        index = faiss.IndexIVFFlat(quantizer, vectors.dimensions, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(centres)
        index.nprobe = min(_ASSIGNMENT_PROBES, lists)
    index.add(centres)
    cell = np.empty(vectors.n, dtype=np.int64)
    sums = np.zeros((k, vectors.dimensions), dtype=np.float64)
    exact: Any = None
    for start, stop, block in vectors.blocks():
        on_progress(start, vectors.n)
        found = index.search(block, 1)[1][:, 0]
        missing = np.flatnonzero(found < 0)
        if len(missing):  # an inverted list probed empty: those rows are compared with every cell
            if exact is None:
                exact = faiss.IndexFlatIP(vectors.dimensions)
                exact.add(centres)
            found[missing] = exact.search(block[missing], 1)[1][:, 0]
        cell[start:stop] = found
        sums += _sum_by(found, block, k)
    on_progress(vectors.n, vectors.n)
    return Cells(cell, sums, np.bincount(cell, minlength=k).astype(np.float64))


def _sum_by(group: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each of `k` groups' sum of `rows`: a groups × rows indicator matrix times the rows, since
    numpy's add.at, unbuffered and row by row, took a minute at 2,000,000 sentences."""
    indicator = sp.csr_matrix(
        (np.ones(len(group), dtype=np.float32), (group, np.arange(len(group)))), shape=(k, len(group))
    )
    return indicator @ rows


# --- average linkage --------------------------------------------------------------------------


def cell_neighbours(sums: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Each cell's `k` most similar other cells by the mean cosine of their sentences."""
    n = len(sums)
    k = min(k, n - 1)
    centroids = sums / np.maximum(sizes, 1.0)[:, None]
    found = np.empty((n, k), dtype=np.int64)
    step = max(1, (1 << 24) // n)
    for start in range(0, n, step):
        block = centroids[start : start + step] @ centroids.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # never its own neighbour
        block[:, sizes == 0] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        found[start : start + len(block)] = np.sort(top, axis=1)
    return found


def average_linkage(
    sums: np.ndarray, sizes: np.ndarray, neighbours: np.ndarray, min_similarity: float
) -> np.ndarray:
    """Average-linkage clusters of groups of unit vectors given by their sums and sizes, merged
    over a neighbour graph while the mean similarity of all pairs across two clusters is at least
    `min_similarity`. Returns each group's cluster as the smallest group index in it."""
    n = len(sums)
    source = np.repeat(np.arange(n), neighbours.shape[1])
    target = neighbours.ravel()
    a, b = _unique_edges(np.minimum(source, target), np.maximum(source, target), n)
    sums = np.array(sums, dtype=np.float64, copy=True)
    sizes = np.maximum(np.asarray(sizes, dtype=np.float64), 1e-12)
    parent = np.arange(n)
    similarity = _dots(sums, a, b) / (sizes[a] * sizes[b])
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
    while True:  # every group to its cluster's root, the smallest index
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


# --- memberships ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memberships:
    """(sentence, theme, similarity) triples, sorted by theme then sentence."""

    sentence: np.ndarray  # int64 row of the quarter's sentences
    theme: np.ndarray  # int64 index into the centroids given
    similarity: np.ndarray  # float32 cosine to the theme's centroid
    primary: np.ndarray  # bool: the sentence's most similar theme

    def with_nearest_primary(self) -> Memberships:
        """The same triples, each sentence's most similar theme among them marked primary (ties to
        the lower theme): once themes are left out, a sentence's nearest may be gone."""
        order = np.lexsort((self.theme, -self.similarity, self.sentence))
        first = np.r_[True, self.sentence[order][1:] != self.sentence[order][:-1]]
        primary = np.zeros(len(self.sentence), dtype=bool)
        primary[order[first]] = True
        return Memberships(self.sentence, self.theme, self.similarity, primary)

    def select(self, keep: np.ndarray, theme: np.ndarray | None = None) -> Memberships:
        """The triples where `keep`, with their themes renamed by `theme` (same length) if given,
        sorted again by theme then sentence."""
        themes = (self.theme if theme is None else theme)[keep]
        order = np.lexsort((self.sentence[keep], themes))
        return Memberships(
            self.sentence[keep][order], themes[order], self.similarity[keep][order], self.primary[keep][order]
        )


def memberships(
    vectors: Vectors,
    centroids: np.ndarray,
    per_sentence: int,
    min_similarity: float,
    on_progress: Callable[[int, int], None],
) -> Memberships:
    """Each sentence's `per_sentence` most similar theme centroids with a cosine ≥ `min_similarity`."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    top = min(per_sentence, len(centroids))
    rows, themes, sims, firsts = [], [], [], []
    for start, stop, block in vectors.blocks():
        on_progress(start, vectors.n)
        found_sim, found = index.search(block, top)  # most similar first
        keep = ((found >= 0) & (found_sim >= min_similarity)).ravel()
        rows.append(np.repeat(np.arange(start, stop), top)[keep])
        themes.append(found.ravel()[keep])
        sims.append(found_sim.ravel()[keep])
        firsts.append(np.tile(np.arange(top) == 0, stop - start)[keep])
    on_progress(vectors.n, vectors.n)
    found_all = Memberships(
        np.concatenate(rows).astype(np.int64),
        np.concatenate(themes).astype(np.int64),
        np.concatenate(sims).astype(np.float32),
        np.concatenate(firsts),
    )
    return found_all.select(np.ones(len(found_all.sentence), dtype=bool))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows of unit length (a zero row stays zero), as contiguous float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)
