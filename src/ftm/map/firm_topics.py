"""The firm processor: BERTopic over one firm's sentences, with embeddings computed beforehand.

Per firm: exact cosine nearest neighbours of the normalised embeddings as one matrix product,
UMAP on that neighbour graph, HDBSCAN on the UMAP output, then BERTopic's c-TF-IDF over the
sentences' `cleaned_text` for keywords. UMAP and HDBSCAN come from cuML when the backend is
`cuml`, from umap-learn and hdbscan otherwise, with the same parameters from `topics` settings.

Why the neighbours are computed here (measured on one H100 machine): below 4,096 points umap-learn finds
exact neighbours with one Python call of a numba metric per pair, quadratic in the firm's size
and most of a plain fit's time. For normalised embeddings the same neighbours are one small
matrix product; umap-learn takes them as `precomputed_knn` and skips its own search. The result
is the same graph as umap-learn's exact search (up to ties between equal distances).

UMAP runs 200 layout epochs by default (`topics.umap_n_epochs`), not umap-learn's 500: on 40
firms of the shared corpus (regex-cleaned) × 3 seeds, mean NPMI was −0.125 against −0.123 at 500
(seed to seed it moves by ±0.01), topic diversity 0.927 against 0.928, at half the layout time;
100 epochs lost 0.018 NPMI. umap-learn's compiled functions are cached on disk
(see `_cache_umap_compilation`).

Output per topic (FIRM_TOPICS in docs/architecture.md): `keywords`, the top `topics.top_n_words`
c-TF-IDF words; `representation`, the first four joined by "_" as BERTopic names topics (without
its id prefix); `representative_sentences`, the `topics.n_representative` distinct raw sentences closest
to the centroid; `centroid`, the mean of the topic's normalised embeddings (not renormalised:
its length says how tight the topic is). Topic ids are BERTopic's: 0 is the largest topic.

Small firms: a firm of n sentences clusters with HDBSCAN's min_cluster_size
min(hdbscan_min_cluster_size, max(small_firm_min_cluster_size, round(n / 20))), so 10 from 190
sentences up (every real Capital IQ call) and down to 5 below 110. With 10 for all, 78 of the 171
firms of the 2016Q4 sample (median 43 sentences) ended with every sentence an outlier; with this
rule 25 do, while the topic quality measured by `benchmarks/small_firms.py` held (NPMI over
shuffled labels 0.147 against 0.142, diversity 0.974 against 0.978, 8 seeds); a floor of 3 made
topics of 2 to 5 sentences, measurably weaker. A firm needs at least `min_sentences(settings)`
sentences, max(umap_n_neighbors + 1, 2 × small_firm_min_cluster_size): fewer cannot make a
neighbour graph, or hold two clusters, so such a firm is `skipped` with its reason. A firm whose
sentences are all outliers gets status `no_topics`: recorded, not an error.

Determinism: UMAP is seeded (`topics.random_state`, which also makes umap-learn run its layout on
one thread), HDBSCAN is deterministic, ties are broken by sentence order, so the same firm gives
the same topics on a re-run on the same machine.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Literal

import numpy as np

from ftm.errors import SettingsError
from ftm.prefetch import distinct_keywords
from ftm.settings import TopicsSettings

# Rows of the similarity matrix computed at once: bounds memory for very large firms
# (2,048 × n float32) without slowing small ones, which take a single block.
_KNN_BLOCK = 2048
# Metrics for which neighbours of L2-normalised embeddings follow from their dot products.
_DOT_PRODUCT_METRICS = ("cosine", "euclidean")
# Keywords joined into the representation string, as BERTopic names its topics.
_REPRESENTATION_WORDS = 4


@dataclass(frozen=True)
class FirmInput:
    firm_id: str
    firm_name: str | None
    quarter: str
    permno: int | None
    gvkey: str | None
    earnings_call_date: date | None  # the firm's first call date in the quarter
    sentence_ids: list[str]
    raw_texts: list[str]  # what is embedded
    cleaned_texts: list[str]  # what keywords come from (c-TF-IDF)


@dataclass(frozen=True)
class FirmOutcome:
    firm_id: str
    # no_topics: every sentence an outlier (recorded, not an error); skipped: too small, see reason
    status: Literal["ok", "no_topics", "skipped"]
    rows: list[dict[str, Any]]  # FIRM_TOPICS rows, empty unless ok
    reason: str | None = None


# Sentences per unit of a small firm's min_cluster_size (see the module docstring): measured.
_SENTENCES_PER_CLUSTER_SIZE = 20


def min_cluster_size(settings: TopicsSettings, n_sentences: int) -> int:
    """HDBSCAN's min_cluster_size for a firm of `n_sentences`: smaller for small firms."""
    scaled = max(settings.small_firm_min_cluster_size, round(n_sentences / _SENTENCES_PER_CLUSTER_SIZE))
    return min(settings.hdbscan_min_cluster_size, scaled)


def min_sentences(settings: TopicsSettings) -> int:
    """The fewest sentences a firm needs: a neighbour graph and room for two clusters."""
    smallest = min(settings.hdbscan_min_cluster_size, settings.small_firm_min_cluster_size)
    return max(settings.umap_n_neighbors + 1, 2 * smallest)


def resolve_backend(
    setting: str, gpu_available: bool | None = None, cuml_available: bool | None = None
) -> Literal["cuml", "cpu"]:
    """ "cuml" or "cpu" for `topics.backend`: auto takes cuML when a GPU and cuML are both there."""
    if setting == "cpu":
        return "cpu"
    if cuml_available is None:
        cuml_available = importlib.util.find_spec("cuml") is not None
    if setting == "cuml":
        if not cuml_available:
            raise SettingsError(
                "topics.backend is cuml but cuML is not installed: `pip install 'ftm[gpu]'` on a "
                "CUDA machine, or set topics.backend to auto or cpu (FTM_TOPICS__BACKEND)"
            )
        return "cuml"
    if not cuml_available:
        return "cpu"
    if gpu_available is None:
        import torch

        gpu_available = torch.cuda.is_available()
    return "cuml" if gpu_available else "cpu"


class FirmProcessor:
    """Turns one firm's sentences and their embeddings into its topics (FIRM_TOPICS rows)."""

    def __init__(self, settings: TopicsSettings):
        self.settings = settings
        self.backend: Literal["cuml", "cpu"] = resolve_backend(settings.backend)
        self.min_sentences = min_sentences(settings)

    def process(self, firm: FirmInput, embeddings: np.ndarray) -> FirmOutcome:
        """The firm's topics; `embeddings` row i belongs to `firm.sentence_ids[i]`."""
        n = len(firm.sentence_ids)
        if not (len(firm.raw_texts) == len(firm.cleaned_texts) == n == len(embeddings)):
            raise ValueError(
                f"firm {firm.firm_id}: {n} sentence ids, {len(firm.raw_texts)} raw texts, "
                f"{len(firm.cleaned_texts)} cleaned texts and {len(embeddings)} embeddings; they must match"
            )
        if n < self.min_sentences:
            return FirmOutcome(
                firm.firm_id,
                "skipped",
                [],
                f"{n} sentences, fewer than the {self.min_sentences} needed "
                f"(max of topics.umap_n_neighbors + 1 and 2 × topics.small_firm_min_cluster_size)",
            )
        if not any(_has_word(text) for text in firm.cleaned_texts):
            return FirmOutcome(
                firm.firm_id, "skipped", [], "no cleaned text has a word to take keywords from"
            )
        # One thread for BLAS and OpenMP: a thread count changes the last bits of sums (the
        # neighbour matrix product, UMAP's spectral start), which UMAP amplifies into other
        # topics. So the topics are the same in any process; these inputs are small anyway.
        with _thread_pools().limit(limits=1):
            vectors = _normalised(embeddings)
            labels, keywords = self._fit(firm.cleaned_texts, vectors)
            if not keywords:
                return FirmOutcome(firm.firm_id, "no_topics", [], "every sentence is an outlier")
            return FirmOutcome(firm.firm_id, "ok", self._rows(firm, vectors, labels, keywords))

    def _fit(self, cleaned_texts: list[str], vectors: np.ndarray) -> tuple[np.ndarray, dict[int, list[str]]]:
        """BERTopic's fit: topic labels per sentence (-1 for outliers) and keywords per topic."""
        from bertopic import BERTopic
        from sklearn.feature_extraction.text import CountVectorizer

        umap_model, hdbscan_model = self._models(vectors)
        topic_model = BERTopic(
            embedding_model=None,  # embeddings are given; nothing to load
            umap_model=umap_model,
            hdbscan_model=hdbscan_model,
            # Phrases of two words where they are the unit ("supply chain", "covid 19").
            vectorizer_model=CountVectorizer(ngram_range=(1, 2)),
            # Twice as many candidates as kept: a plural after its singular is left out.
            top_n_words=2 * self.settings.top_n_words,
            calculate_probabilities=False,
            verbose=False,
        )
        with warnings.catch_warnings():
            # umap-learn warns that a seed forces one thread and that precomputed neighbours
            # leave it without a search index for `transform`; both are intended here.
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            topics, _ = topic_model.fit_transform(cleaned_texts, embeddings=vectors)
        labels = np.asarray(topics, dtype=np.int64)
        keywords = {}
        for topic in sorted(set(labels.tolist()) - {-1}):
            words = [word for word, score in topic_model.get_topic(topic) or [] if word and score > 0]
            keywords[topic] = distinct_keywords(words, self.settings.top_n_words)
        return labels, keywords

    def _models(self, vectors: np.ndarray) -> tuple[Any, Any]:
        s = self.settings
        knn = (
            _exact_knn(vectors, s.umap_n_neighbors, s.umap_metric)
            if s.umap_metric in _DOT_PRODUCT_METRICS
            else None
        )
        umap_kwargs: dict[str, Any] = dict(
            n_neighbors=s.umap_n_neighbors,
            n_components=s.umap_n_components,
            min_dist=s.umap_min_dist,
            metric=s.umap_metric,
            random_state=s.random_state,
            n_epochs=s.umap_n_epochs,
            init=s.umap_init,
        )
        hdbscan_kwargs: dict[str, Any] = dict(
            min_cluster_size=min_cluster_size(s, len(vectors)),
            min_samples=s.hdbscan_min_samples,
            metric="euclidean",
            cluster_selection_method="eom",
            prediction_data=False,  # no probabilities for unseen data are asked for
        )
        if self.backend == "cuml":
            # Imported here: cuML exists only on GPU machines.
            from cuml.cluster import HDBSCAN as CumlHDBSCAN
            from cuml.manifold import UMAP as CumlUMAP

            if knn is not None:
                umap_kwargs["precomputed_knn"] = knn
            return CumlUMAP(**umap_kwargs), CumlHDBSCAN(**hdbscan_kwargs)
        from hdbscan import HDBSCAN
        from umap import UMAP

        _cache_umap_compilation()
        if knn is not None:
            umap_kwargs["precomputed_knn"] = (knn[0], knn[1], None)
        return UMAP(low_memory=False, **umap_kwargs), HDBSCAN(core_dist_n_jobs=1, **hdbscan_kwargs)

    def _rows(
        self, firm: FirmInput, vectors: np.ndarray, labels: np.ndarray, keywords: dict[int, list[str]]
    ) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        rows = []
        for topic, words in keywords.items():
            members = np.flatnonzero(labels == topic)  # in sentence order
            centroid = vectors[members].mean(axis=0, dtype=np.float64).astype(np.float32)
            rows.append(
                {
                    "firm_id": firm.firm_id,
                    "firm_name": firm.firm_name,
                    "quarter": firm.quarter,
                    "permno": firm.permno,
                    "gvkey": firm.gvkey,
                    "earnings_call_date": firm.earnings_call_date,
                    "topic_id": topic,
                    "representation": "_".join(words[:_REPRESENTATION_WORDS]),
                    "keywords": words,
                    "n_sentences": len(members),
                    "sentence_ids": [firm.sentence_ids[i] for i in members],
                    "representative_sentences": _closest_texts(
                        firm.raw_texts, vectors, members, centroid, self.settings.n_representative
                    ),
                    "centroid": centroid.tolist(),
                    "processing_timestamp": now,
                }
            )
        return rows


class FirmError(Exception):
    """A firm's processing raised in a worker process: that error's type name and message (the
    error itself may not survive pickling back to the batch)."""

    def __init__(self, error_type: str, message: str):
        super().__init__(error_type, message)  # both in args: an exception unpickles from them
        self.error_type, self.message = error_type, message

    def __str__(self) -> str:
        return self.message


class FirmProcessorPool:
    """`FirmProcessor.process` over many firms in `processes` worker processes, outcomes in order.

    Why: UMAP runs one thread per firm (it is seeded), so one process clusters on one core. The
    local backend gets its cores busy with one map-batch per core, but a single map-batch (an AWS
    Batch job, whose GPU embeds in a moment what takes the clustering minutes) would leave the
    other cores idle. A firm's topics are the same in a worker or in the batch's own process
    (`FirmProcessor.process` clusters on one thread wherever it runs). With one process, or
    with cuML (which shares one GPU), firms are processed in this process and nothing starts.
    """

    def __init__(self, settings: TopicsSettings, processes: int):
        self.processor = FirmProcessor(settings)
        self.processes = 1 if self.processor.backend == "cuml" else max(1, processes)
        self._pool: Any = None
        if self.processes > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),  # no forked torch or threads
                initializer=_start_worker,
                initargs=(settings,),
            )

    def process_all(self, work: list[tuple[FirmInput, np.ndarray]]) -> Iterator[FirmOutcome | Exception]:
        """Each firm's outcome, or the error it raised, in the order of `work`."""
        if self._pool is None:
            for firm, embeddings in work:
                try:
                    yield self.processor.process(firm, embeddings)
                except Exception as error:
                    yield error
            return
        futures = [self._pool.submit(_process_in_worker, firm, embeddings) for firm, embeddings in work]
        try:
            for future in futures:
                try:
                    yield future.result()
                except Exception as error:  # the pool broke: a worker died (out of memory?)
                    yield error
        finally:
            for future in futures:  # a stopped batch does not wait for firms it will not record
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_worker_processor: FirmProcessor | None = None


def _start_worker(settings: TopicsSettings) -> None:
    global _worker_processor
    _worker_processor = FirmProcessor(settings)


def _process_in_worker(firm: FirmInput, embeddings: np.ndarray) -> FirmOutcome | FirmError:
    assert _worker_processor is not None
    try:
        return _worker_processor.process(firm, embeddings)
    except Exception as error:
        return FirmError(type(error).__name__, str(error))


_pools: Any = None


def _thread_pools() -> Any:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries, made once per process: made
    per firm it scans every loaded library, 4.5 ms against 0.03 ms to reuse."""
    global _pools
    if _pools is None:
        # After the clustering libraries are loaded, so that theirs are among those limited.
        import bertopic  # noqa: F401
        import hdbscan  # noqa: F401
        import umap  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _pools = ThreadpoolController()
    return _pools


_umap_cached = False


def _cache_umap_compilation() -> None:
    """Lets numba keep umap-learn's compiled functions on disk, so only the first process ever
    compiles them.

    umap-learn compiles most of its numba functions without `cache=True`: every new process spends
    about 15 s (2 cores) compiling them on its first fit, which a map worker, a test run or a
    container would pay each time. Numba's own `enable_caching` turns the on-disk cache on for an
    existing function; the cache is keyed by the source file, so an upgrade of umap-learn
    recompiles. Where the package folder is read-only numba uses a user cache folder instead.
    """
    global _umap_cached
    if _umap_cached:
        return
    _umap_cached = True
    try:
        import umap.distances
        import umap.layouts
        import umap.sparse
        import umap.spectral
        import umap.umap_
        import umap.utils
        from numba.core.caching import NullCache
        from numba.core.registry import CPUDispatcher
    except ImportError:  # another numba layout: compile per process, as umap-learn does itself
        return
    for module in (umap.umap_, umap.layouts, umap.utils, umap.spectral, umap.distances, umap.sparse):
        for function in list(vars(module).values()):
            if (
                isinstance(function, CPUDispatcher)
                and isinstance(function._cache, NullCache)
                and function.__module__ == module.__name__
            ):
                try:
                    function.enable_caching()
                except Exception:  # a function numba cannot cache (dynamic globals): left as it is
                    continue


def _exact_knn(vectors: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k nearest neighbours, itself first, as umap-learn's exact search gives them.

    `vectors` are L2-normalised, so cosine distance is 1 − dot and euclidean sqrt(2 − 2·dot).
    """
    n = len(vectors)
    indices = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _KNN_BLOCK):
        block = vectors[start : start + _KNN_BLOCK] @ vectors.T
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # a point is its own nearest neighbour, whatever ties
        # argpartition finds the k largest in linear time; a stable sort then orders them, ties
        # by index, so the graph does not depend on the partition's internal order.
        top = np.sort(np.argpartition(-block, k - 1, axis=1)[:, :k], axis=1)
        top_sim = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        indices[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        similarities[start : start + len(block)] = np.take_along_axis(top_sim, order, axis=1)
    similarities[:, 0] = 1.0
    similarities = np.clip(similarities, -1.0, 1.0)
    distances = 1.0 - similarities if metric == "cosine" else np.sqrt(2.0 - 2.0 * similarities)
    distances = np.maximum(distances, 0.0).astype(np.float32)
    distances[:, 0] = 0.0
    return indices, distances


def _closest_texts(
    texts: list[str], vectors: np.ndarray, members: np.ndarray, centroid: np.ndarray, n: int
) -> list[str]:
    """Up to n distinct texts of the members, closest to the centroid first (ties by order)."""
    similarity = vectors[members] @ centroid
    chosen: list[str] = []
    for i in members[np.argsort(-similarity, kind="stable")]:
        if texts[i] not in chosen:
            chosen.append(texts[i])
            if len(chosen) == n:
                break
    return chosen


def _normalised(embeddings: np.ndarray) -> np.ndarray:
    vectors = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0))


def _has_word(text: str) -> bool:
    # CountVectorizer's default token: two or more word characters.
    return any(sum(ch.isalnum() or ch == "_" for ch in token) >= 2 for token in text.split())
