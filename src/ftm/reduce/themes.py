"""Reduce (`ftm reduce`): a quarter's sentences into the themes many firms talk about at once, and
the firm × theme exposure panel.

Input: every sentence the map embedded (the sentence-embedding parts that the batches'
checkpoints list; a part not listed is a leftover of a killed attempt), with its firm and its
cleaned words from the prefetch. Not the firm topics: a subject a firm mentions in two to five
sentences never forms a topic of its own in that firm, but twenty firms' mentions of it form a
theme. So every sentence can belong to a theme, outliers of its firm's topics and firms too small
for topics included (clustering.py: vectors, micro-clusters, average linkage, memberships).

A theme is a cluster that at least `reduce.min_firms` firms talk about (`firm_min_sentences` of
their sentences each). Its salience says how far above its ordinary level the quarter's attention
to it is (salience.py), and its `kind` whether it is a theme, routine business language or
reporting language (kinds.py). Themes are numbered in the default order: kind `theme` first, then
`routine`, then `reporting`, each by salience, so theme 0 is where a researcher looks first.
Keywords are a class-based TF-IDF (BERTopic's, `_class_tfidf`) of the themes' sentences' words
and two-word phrases against the rest of the quarter, a term's frequency counted over firms (each
firm weighs 1, shared among its sentences in the theme), so that what most of a theme's firms
say leads its keywords, not one firm's brand. A firm's exposure to a theme is the
share of all its prefetched sentences whose primary theme (the most similar) it is, so that a
firm's shares add up to at most 1; `theme_sentences.parquet` holds the evidence, one row per
sentence and theme, with its `primary` flag. A firm topic belongs to the theme that holds at least
half of its sentences (`theme_topics.parquet`), which ties the panel to the per-firm topics.

The map must be complete: every batch of `batches.jsonl` with a checkpoint marked finished.
Otherwise reduce refuses, naming the batches, unless `allow_partial`, which is then recorded in
every output file's Parquet metadata (key `ftm.reduce`) and in the returned result.

Determinism: sentences are ordered by firm whatever the part layout, every sample and the k-means
are seeded, ties are broken by index or word, and nothing time-dependent is written: the same input
gives byte-identical files on the same machine. A killed reduce has written nothing that the next
run does not write again, and themes.parquet, which `ftm name` looks for, is removed first and
written last.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from ftm import __version__, layout
from ftm.errors import DataError, UsageError
from ftm.map import read_checkpoint
from ftm.plan import read_plan
from ftm.prefetch import distinct_keywords, read_manifest
from ftm.quarters import Quarter
from ftm.reduce import clustering, salience
from ftm.reduce.coverage import firms_table
from ftm.reduce.kinds import KINDS, Kind, evenness, kind_of, load_ordinary_language
from ftm.reduce.salience import load_ordinary_attention
from ftm.reduce.sentences import QuarterSentences, read_sentences, texts_of
from ftm.reduce.vocabulary import Vocabulary, count_terms
from ftm.schemas import (
    FIRM_THEME_EXPOSURE,
    FIRM_TOPICS,
    FIRMS,
    THEME_SENTENCES,
    THEME_TOPICS,
    THEMES,
    centroid_type,
    pandas_integers,
)
from ftm.settings import FtmSettings, ReduceSettings
from ftm.storage import Store

METADATA_KEY = b"ftm.reduce"
# Keywords joined into a theme's representation string, as topics name theirs.
_REPRESENTATION_WORDS = 4
# Candidate keywords per theme before plurals after their singular are left out.
_CANDIDATE_WORDS = 3
# Sentences whose terms are counted at once for the keywords (see _firm_counts).
_KEYWORD_BLOCK = 1 << 18

Phase = Literal["reading", "words", "clustering", "assigning", "describing", "writing", "done"]


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
    part_files: list[str]  # firm topics
    embedding_files: list[str]  # sentence embeddings
    n_failed_firms: int
    without_embeddings: list[str]  # batches that mapped firms but stored no embeddings (older ftm)

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
    kind: Kind
    representation: str
    salience: float | None
    n_firms: int
    n_sentences: int
    example_firms: list[str]


@dataclass(frozen=True)
class ReduceResult:
    quarter: str
    partial: bool
    missing_batches: list[str]
    unfinished_batches: list[str]
    n_batches: int
    n_failed_firms: int  # firms the map recorded as failed: absent from the panel
    n_sentences: int  # sentences the map embedded
    n_firms: int  # firms with embedded sentences
    n_themes: int
    n_routine: int  # of the themes, those of kind routine
    n_reporting: int  # of the themes, those of kind reporting
    n_theme_sentences: int  # rows of theme_sentences
    n_theme_topics: int
    n_exposed_firms: int
    n_exposure_rows: int
    files: dict[str, str]  # artifact name → path relative to the storage root
    top_themes: list[ThemeSummary] = field(default_factory=list)  # the first, in the default order


def map_state(store: Store, quarter: Quarter) -> MapState:
    """Reads the plan and every batch's checkpoint; a quarter never submitted is a usage error."""
    batches = read_plan(store, quarter)
    if batches is None:
        raise UsageError(
            f"{quarter} has no firm topics in {store.uri()} (no batch plan): "
            f"run `{store.command(f'submit --quarter {quarter}')}` first"
        )
    missing, unfinished, parts, embeddings, without = [], [], [], [], []
    failed = 0
    for batch in batches:
        checkpoint = read_checkpoint(store, quarter, batch.batch_id)
        if checkpoint is None:
            missing.append(batch.batch_id)
            continue
        if not checkpoint.finished:
            unfinished.append(batch.batch_id)
        parts.extend(checkpoint.part_files)
        embeddings.extend(checkpoint.embedding_files)
        if checkpoint.completed_firm_ids and not checkpoint.embedding_files:
            without.append(batch.batch_id)
        failed += len(checkpoint.failed_firm_ids)
    return MapState(len(batches), missing, unfinished, parts, embeddings, failed, without)


def mapped_state(store: Store, quarter: Quarter, *, allow_partial: bool | None = False) -> MapState:
    """The map's state, refused (a usage error naming the command to run) unless complete with
    sentence embeddings; `allow_partial` True accepts an incomplete map, None refuses it without
    offering --allow-partial (for a stage that has no such flag)."""
    state = map_state(store, quarter)
    if not state.complete and not allow_partial:
        partial = (
            "" if allow_partial is None else ", or pass --allow-partial to reduce the batches done so far"
        )
        raise UsageError(
            f"the map of {quarter} is incomplete: of {state.n_batches} batches, {state.describe()}. "
            f"Run `{store.command(f'submit --quarter {quarter}')}` to finish it (`{store.command('watch')}` "
            f"shows why batches stopped){partial}."
        )
    if state.without_embeddings:
        raise UsageError(
            f"{quarter} was mapped by an ftm that did not store sentence embeddings "
            f"({_listed(state.without_embeddings)}), which the reduce needs: run "
            f"`{store.command(f'submit --quarter {quarter} --new')}` to map it again"
        )
    return state


def reduce_quarter(
    settings: FtmSettings,
    quarter: Quarter,
    *,
    allow_partial: bool = False,
    on_progress: Callable[[ReduceProgress], None] = lambda progress: None,
) -> ReduceResult:
    """Finds the quarter's themes and writes themes, theme_sentences, theme_topics and
    firm_theme_exposure (see the module docstring)."""
    store = Store.from_settings(settings.storage)
    state = mapped_state(store, quarter, allow_partial=allow_partial)
    manifest = read_manifest(store, quarter)
    sentences = read_sentences(
        store,
        quarter,
        manifest,
        state.embedding_files,
        lambda done, total: on_progress(ReduceProgress("reading", done, total)),
    )
    if sentences.n == 0 and not state.complete:
        raise UsageError(
            f"no batch of {quarter} has written sentences yet ({state.describe()}): "
            f"run `{store.command(f'submit --quarter {quarter}')}` and let it finish"
        )
    if sentences.n == 0:
        raise DataError(
            f"the map of {quarter} embedded no sentence of any firm ({len(state.embedding_files)} part "
            "files): every firm failed; `ftm watch` shows why"
        )
    config = settings.reduce
    on_progress(ReduceProgress("words"))
    vocabulary = count_terms(sentences.cleaned_text)
    # Counted: the words are not needed again, and at 2,000,000 sentences they are 250 MB.
    sentences.cleaned_text = pa.array([], pa.string())
    themes = _find_themes(sentences, vocabulary, config, settings.embedding.model, on_progress)
    on_progress(ReduceProgress("describing"))
    metadata = {
        "quarter": str(quarter),
        "partial": not state.complete,
        "missing_batches": state.missing,
        "unfinished_batches": state.unfinished,
        "n_batches": state.n_batches,
        "n_sentences": sentences.n,
        "ftm_version": __version__,
        "reduce": config.model_dump(mode="json"),
        "ordinary_language": themes.reference,
    }
    tables = _Tables(store, quarter, sentences, vocabulary, themes, config, metadata, state.part_files)
    built = {
        "theme_sentences": tables.theme_sentences_table(),
        "theme_topics": tables.theme_topics,
        "firm_theme_exposure": tables.exposure_table(),
    }
    exposed = pc.value_counts(built["firm_theme_exposure"].column("firm_id")).to_pylist()
    themes_of_firm = {item["values"]: item["counts"] for item in exposed}
    n_themes = np.array([themes_of_firm.get(firm, 0) for firm in sentences.firm_ids], dtype=np.int64)
    built["firms"] = firms_table(store, quarter, manifest, sentences, n_themes, tables.integer_metadata)
    built["themes"] = tables.themes_table()
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
        n_sentences=sentences.n,
        n_firms=len(sentences.firm_ids),
        n_themes=themes.n,
        n_routine=themes.kind.count("routine"),
        n_reporting=themes.kind.count("reporting"),
        n_theme_sentences=built["theme_sentences"].num_rows,
        n_theme_topics=built["theme_topics"].num_rows,
        n_exposed_firms=len(pc.unique(exposure.column("firm_id"))),
        n_exposure_rows=exposure.num_rows,
        files=files,
        top_themes=tables.summaries(5),
    )


# --- finding the themes -----------------------------------------------------------------------


@dataclass
class _Themes:
    """The quarter's themes in their final order (theme_id = position)."""

    members: clustering.Memberships  # theme indices are theme ids
    kind: list[Kind]
    n_firms: np.ndarray  # firms with firm_min_sentences sentences in the theme
    n_sentences: np.ndarray
    number_share: np.ndarray
    evenness: np.ndarray
    ordinary_similarity: list[float | None]
    share: list[float | None]  # attention this quarter (salience.py); None without a reference
    baseline_share: list[float | None]  # its ordinary attention
    salience: list[float | None]
    reference: dict[str, Any]  # which references applied, for the metadata

    @property
    def n(self) -> int:
        return len(self.kind)


def _find_themes(
    sentences: QuarterSentences,
    vocabulary: Vocabulary,
    config: ReduceSettings,
    model: str,
    on_progress: Callable[[ReduceProgress], None],
) -> _Themes:
    seed = config.random_state
    vectors = clustering.sentence_vectors(
        sentences.embeddings, vocabulary.counts, config.lexical_weight, config.lexical_dimensions, seed
    )
    k = clustering.n_cells(sentences.n, config.micro_clusters)
    cells = clustering.micro_clusters(
        vectors, k, seed, lambda done, total: on_progress(ReduceProgress("clustering", done, total))
    )
    cell, sums, sizes = cells.cell, cells.sums, cells.sizes
    cluster_of_cell = clustering.average_linkage(
        sums, sizes, clustering.cell_neighbours(sums, sizes, 30), config.min_similarity
    )
    # Candidates: clusters that enough firms talk about already by their sentences' own cells.
    roots, cluster = np.unique(cluster_of_cell[cell], return_inverse=True)
    candidates = np.flatnonzero(
        _firms_talking(sentences.firm, cluster, len(roots), config) >= config.min_firms
    )
    if len(candidates) == 0:
        return _empty_themes()
    centroid_sums = np.zeros((len(candidates), vectors.dimensions))
    for i, root in enumerate(roots[candidates]):
        centroid_sums[i] = sums[cluster_of_cell == root].sum(axis=0)
    centroids = clustering.unit(centroid_sums)
    members = clustering.memberships(
        vectors,
        centroids,
        config.memberships,
        config.min_membership,
        lambda done, total: on_progress(ReduceProgress("assigning", done, total)),
    )
    members = _within_reach(members, len(candidates), config.membership_ratio)
    # Themes: candidates enough firms still talk about once every sentence has its themes.
    talking = _firms_talking(sentences.firm[members.sentence], members.theme, len(candidates), config)
    kept = np.flatnonzero(talking >= config.min_firms)
    return _describe_themes(sentences, vectors, members, kept, talking, model, config)


def _within_reach(members: clustering.Memberships, n_themes: int, ratio: float) -> clustering.Memberships:
    """Leaves out a sentence's membership of a theme when its similarity is below `ratio` times the
    median similarity of the theme's own sentences (those for which it is the closest theme): a
    tight theme, such as a regulation few firms name, takes only sentences that are about it, and a
    broad one, such as a pandemic's many effects, still takes its sentences' second subjects."""
    median = np.zeros(n_themes)
    bounds = np.searchsorted(members.theme, np.arange(n_themes + 1))  # sorted by theme
    for theme in range(n_themes):
        part = slice(bounds[theme], bounds[theme + 1])
        own = members.similarity[part][members.primary[part]]
        median[theme] = np.median(own) if len(own) else 0.0
    return members.select(members.similarity >= ratio * median[members.theme])


def _firms_talking(firm: np.ndarray, theme: np.ndarray, n_themes: int, config: ReduceSettings) -> np.ndarray:
    """Per theme, the firms with at least `firm_min_sentences` of their sentences in it."""
    if len(theme) == 0:
        return np.zeros(n_themes, dtype=np.int64)
    pairs, counts = np.unique(theme.astype(np.int64) * (int(firm.max()) + 1) + firm, return_counts=True)
    talking = pairs[counts >= config.firm_min_sentences] // (int(firm.max()) + 1)
    return np.bincount(talking, minlength=n_themes)


def _describe_themes(
    sentences: QuarterSentences,
    vectors: clustering.Vectors,
    members: clustering.Memberships,
    kept: np.ndarray,
    talking: np.ndarray,
    model: str,
    config: ReduceSettings,
) -> _Themes:
    """The kept themes' salience, kinds and counts, renumbered in the default order: kind `theme`
    first, then `routine`, then `reporting`, each by salience (by firms without a reference)."""
    members = members.select(np.isin(members.theme, kept)).with_nearest_primary()
    language = load_ordinary_language()
    dimensions = vectors.mean.shape[0]
    # A reference applies to the embeddings of the model that made it.
    made_by = (model, dimensions)
    language_applies = language is not None and (language.model, language.vectors.shape[1]) == made_by
    attention = load_ordinary_attention()
    attention_applies = attention is not None and (attention.model, attention.cells.shape[1]) == made_by
    firm_share = np.bincount(sentences.firm, minlength=len(sentences.firm_ids)) / sentences.n
    bounds = np.searchsorted(members.theme, np.arange(talking.shape[0] + 1))
    rows, meanings = [], []
    for theme in kept:
        rows_of = members.sentence[bounds[theme] : bounds[theme + 1]]
        # What the theme is made of: the sentences closest to it of all themes (kinds.py).
        core = rows_of[members.primary[bounds[theme] : bounds[theme + 1]]]
        core = core if len(core) else rows_of
        meanings.append(
            clustering.unit(
                (sentences.embeddings[core].astype(np.float32) - vectors.mean).sum(axis=0, keepdims=True)
            )[0]
        )
        ordinary = float((language.vectors @ meanings[-1]).max()) if language_applies else None
        number_share = float(sentences.has_number[core].mean())
        even = evenness(sentences.firm[core], firm_share, config.random_state)
        rows.append((int(talking[theme]), len(rows_of), number_share, even, ordinary, int(rows_of[0])))
    centroids = np.array(meanings, dtype=np.float32).reshape(len(kept), dimensions)
    share: list[float | None] = [None] * len(kept)
    baseline: list[float | None] = [None] * len(kept)
    scores: list[float | None] = [None] * len(kept)
    if attention_applies:
        assert attention is not None
        quarter_share, ordinary_share = salience.attention(
            sentences.embeddings, sentences.firm, len(sentences.firm_ids), vectors.mean, centroids, attention
        )
        share = [float(value) for value in quarter_share]
        baseline = [float(value) for value in ordinary_share]
        unusual = salience.salience(quarter_share, ordinary_share, config.salience_smoothing)
        scores = [float(value) for value in unusual]
    kinds = [kind_of(row[2], row[3], row[4], config, scores[i]) for i, row in enumerate(rows)]
    # Kinds in their order; each by salience where there is one, else by firms; then firms,
    # sentences and the first sentence, so that ties never depend on anything but the data.
    order = sorted(
        range(len(kept)),
        key=lambda i: (
            KINDS.index(kinds[i]),
            -(scores[i] if scores[i] is not None else 0.0),
            -rows[i][0],
            -rows[i][1],
            rows[i][5],
        ),
    )
    new_id = np.full(talking.shape[0], -1, dtype=np.int64)
    new_id[kept[order]] = np.arange(len(order))
    final = members.select(np.ones(len(members.theme), dtype=bool), new_id[members.theme])
    description: dict[str, Any] = {"applied": bool(language_applies)}
    if language is not None:
        description.update(model=language.model, n_vectors=len(language.vectors))
    description["ordinary_attention"] = {"applied": bool(attention_applies)}
    if attention is not None:
        description["ordinary_attention"].update(
            model=attention.model, n_cells=len(attention.cells), quarters=len(attention.quarters)
        )
    return _Themes(
        members=final,
        kind=[kinds[i] for i in order],
        n_firms=np.array([rows[i][0] for i in order], dtype=np.int64),
        n_sentences=np.array([rows[i][1] for i in order], dtype=np.int64),
        number_share=np.array([rows[i][2] for i in order], dtype=np.float64),
        evenness=np.array([rows[i][3] for i in order], dtype=np.float64),
        ordinary_similarity=[rows[i][4] for i in order],
        share=[share[i] for i in order],
        baseline_share=[baseline[i] for i in order],
        salience=[scores[i] for i in order],
        reference=description,
    )


def _empty_themes() -> _Themes:
    nothing = np.zeros(0, dtype=np.int64)
    return _Themes(
        members=clustering.Memberships(nothing, nothing, np.zeros(0, np.float32), nothing > 0),
        kind=[],
        n_firms=nothing,
        n_sentences=nothing,
        number_share=np.zeros(0),
        evenness=np.zeros(0),
        ordinary_similarity=[],
        share=[],
        baseline_share=[],
        salience=[],
        reference={"applied": False},
    )


# --- the output tables ------------------------------------------------------------------------


class _Tables:
    """The output tables, built from the sentences and their themes."""

    def __init__(
        self,
        store: Store,
        quarter: Quarter,
        sentences: QuarterSentences,
        vocabulary: Vocabulary,
        themes: _Themes,
        config: ReduceSettings,
        metadata: dict[str, Any],
        part_files: list[str],
    ):
        self.store = store
        self.quarter = quarter
        self.sentences = sentences
        self.themes = themes
        self.config = config
        self.metadata = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
        # Tables with a PERMNO: pandas reads it as Int64, not as float where a firm has none.
        self.integer_metadata = {**self.metadata, **pandas_integers("permno")}
        self.dimensions = sentences.embeddings.shape[1]
        members = themes.members
        self.bounds = np.searchsorted(members.theme, np.arange(themes.n + 1))
        self.membership = sp.csr_matrix(
            (np.ones(len(members.sentence), dtype=np.float32), (members.theme, members.sentence)),
            shape=(themes.n, sentences.n),
        )
        self.centroids = self._centroids()
        # The embeddings' last use: at 2,000,000 sentences they are 1.5 GB, held no longer than
        # needed beside the keywords' counts (the reduce's peak memory). A new empty array, not a
        # slice: a slice is a view that keeps the whole buffer alive.
        sentences.embeddings = np.empty((0, self.dimensions), sentences.embeddings.dtype)
        self.keywords = _theme_keywords(members, sentences.firm, vocabulary, config)
        self.theme_topics, self.topics_per_theme = self._theme_topics(part_files)

    def schemas(self) -> dict[str, pa.Schema]:
        themes = pa.schema(
            [
                pa.field("centroid", centroid_type(self.dimensions)) if f.name == "centroid" else f
                for f in THEMES
            ]
        )
        return {
            "themes": themes,
            "theme_sentences": THEME_SENTENCES,
            "theme_topics": THEME_TOPICS,
            "firm_theme_exposure": FIRM_THEME_EXPOSURE,
            "firms": FIRMS,
        }

    def theme_sentences_table(self) -> pa.Table:
        members = self.themes.members
        firm_ids = pa.array(self.sentences.firm_ids, pa.string())
        columns = {
            "theme_id": pa.array(members.theme.astype(np.int32), pa.int32()),
            "firm_id": firm_ids.take(pa.array(self.sentences.firm[members.sentence])),
            "sentence_id": self.sentences.sentence_ids.take(pa.array(members.sentence)),
            "similarity": pa.array(members.similarity, pa.float32()),
            "primary": pa.array(members.primary, pa.bool_()),
        }
        return pa.table(columns, schema=THEME_SENTENCES.with_metadata(self.metadata))

    def exposure_table(self) -> pa.Table:
        members = self.themes.members
        n_themes = max(self.themes.n, 1)
        # By firm (ids are sorted), then theme; a cell for every theme a firm has a sentence in.
        pair = self.sentences.firm[members.sentence] * n_themes + members.theme
        pairs, counts = np.unique(pair, return_counts=True)
        primary = np.searchsorted(pairs, pair[members.primary])
        primary_counts = np.bincount(primary, minlength=len(pairs))
        firm, theme = pairs // n_themes, pairs % n_themes
        ids = self.sentences.firm_ids
        keys = [self.sentences.firms[ids[f]] for f in firm]
        for f, count, firm_keys in zip(firm, counts, keys, strict=True):
            if firm_keys.n_sentences < count:
                raise DataError(
                    f"{ids[f]} has more sentences in a theme than in its prefetch of {self.quarter} "
                    f"({firm_keys.n_sentences}): the map and the prefetch disagree; run `ftm submit --new`"
                )
        shares = [int(count) / keys[i].n_sentences for i, count in enumerate(primary_counts)]
        columns = {
            "quarter": pa.array([str(self.quarter)] * len(firm), pa.string()),
            "firm_id": pa.array([ids[f] for f in firm], pa.string()),
            "permno": pa.array([k.permno for k in keys], pa.int64()),
            "gvkey": pa.array([k.gvkey for k in keys], pa.string()),
            "theme_id": pa.array(theme.astype(np.int32), pa.int32()),
            "n_sentences": pa.array(primary_counts.astype(np.int32), pa.int32()),
            "share": pa.array(shares, pa.float64()),
            "n_sentences_any": pa.array(counts.astype(np.int32), pa.int32()),
        }
        return pa.table(columns, schema=FIRM_THEME_EXPOSURE.with_metadata(self.integer_metadata))

    def _theme_topics(self, part_files: list[str]) -> tuple[pa.Table, np.ndarray]:
        """theme_topics and each theme's number of topics. A firm topic belongs to the theme that
        holds at least half of its sentences (ties to the lower theme id); similarity is the cosine
        of the topic's centroid to the theme's."""
        firms, topics, centroids, rows_of = [], [], [], []
        for path in part_files:
            table = self.store.read_table(
                path, FIRM_TOPICS, columns=["firm_id", "topic_id", "sentence_ids", "centroid"]
            )
            if table.num_rows == 0:
                continue
            firms.extend(table.column("firm_id").to_pylist())
            topics.extend(table.column("topic_id").to_pylist())
            centroid = table.column("centroid").combine_chunks()
            centroids.append(centroid.flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, -1))
            rows_of.append(table.column("sentence_ids").combine_chunks())
        if not firms or self.themes.n == 0:
            return THEME_TOPICS.with_metadata(self.metadata).empty_table(), np.zeros(self.themes.n, np.int64)
        lists = pa.chunked_array(rows_of).combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        found = pc.index_in(pc.list_flatten(lists), value_set=self.sentences.sentence_ids)
        row = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        topic_of = np.repeat(np.arange(len(firms)), lengths)
        row, topic_of = row[row >= 0], topic_of[row >= 0]
        # Sentences of each topic in each theme: (topic, theme) pairs through the membership matrix.
        hits = self.membership[:, row].tocoo()  # themes × topic sentences
        pair = topic_of[hits.col] * self.themes.n + hits.row
        keys, counts = np.unique(pair, return_counts=True)
        topic, theme = keys // self.themes.n, keys % self.themes.n
        enough = counts * 2 >= lengths[topic]
        topic, theme, counts = topic[enough], theme[enough], counts[enough]
        best = np.lexsort((theme, -counts, topic))  # per topic: most sentences, then lowest theme
        first = np.r_[True, topic[best][1:] != topic[best][:-1]]
        topic, theme = topic[best][first], theme[best][first]
        vectors = clustering.unit(np.concatenate(centroids)[topic])
        similarity = np.einsum("ij,ij->i", vectors, self.centroids[theme])
        order = sorted(range(len(topic)), key=lambda i: (theme[i], firms[topic[i]], topics[topic[i]]))
        columns = {
            "theme_id": pa.array(theme[order].astype(np.int32), pa.int32()),
            "firm_id": pa.array([firms[t] for t in topic[order]], pa.string()),
            "topic_id": pa.array([topics[t] for t in topic[order]], pa.int32()),
            "similarity": pa.array(similarity[order].astype(np.float32), pa.float32()),
        }
        table = pa.table(columns, schema=THEME_TOPICS.with_metadata(self.metadata))
        return table, np.bincount(theme, minlength=self.themes.n)

    def themes_table(self) -> pa.Table:
        sentences = self._representative_sentences()
        count = self.themes.n
        keywords = self.keywords
        columns = {
            "theme_id": pa.array(np.arange(count, dtype=np.int32), pa.int32()),
            "quarter": pa.array([str(self.quarter)] * count, pa.string()),
            "kind": pa.array(self.themes.kind, pa.string()),
            "keywords": pa.array(keywords, pa.list_(pa.string())),
            "representation": pa.array(
                ["_".join(words[:_REPRESENTATION_WORDS]) for words in keywords], pa.string()
            ),
            "salience": pa.array(self.themes.salience, pa.float32()),
            "attention_share": pa.array(self.themes.share, pa.float32()),
            "baseline_share": pa.array(self.themes.baseline_share, pa.float32()),
            "share_of_firms": pa.array(
                (self.themes.n_firms / max(len(self.sentences.firm_ids), 1)).astype(np.float32), pa.float32()
            ),
            "n_firms": pa.array(self.themes.n_firms.astype(np.int32), pa.int32()),
            "n_topics": pa.array(self.topics_per_theme.astype(np.int32), pa.int32()),
            "n_sentences": pa.array(self.themes.n_sentences.astype(np.int32), pa.int32()),
            "number_share": pa.array(self.themes.number_share.astype(np.float32), pa.float32()),
            "evenness": pa.array(self.themes.evenness.astype(np.float32), pa.float32()),
            "ordinary_similarity": pa.array(self.themes.ordinary_similarity, pa.float32()),
            "representative_sentences": pa.array(sentences, pa.list_(pa.string())),
            "centroid": pa.FixedSizeListArray.from_arrays(
                pa.array(self.centroids.ravel(), pa.float32()), self.dimensions
            ),
        }
        return pa.table(columns, schema=self.schemas()["themes"].with_metadata(self.metadata))

    def summaries(self, n: int) -> list[ThemeSummary]:
        summaries = []
        for theme_id in range(min(n, self.themes.n)):
            summaries.append(
                ThemeSummary(
                    theme_id=theme_id,
                    kind=self.themes.kind[theme_id],
                    representation="_".join(self.keywords[theme_id][:_REPRESENTATION_WORDS]),
                    salience=self.themes.salience[theme_id],
                    n_firms=int(self.themes.n_firms[theme_id]),
                    n_sentences=int(self.themes.n_sentences[theme_id]),
                    example_firms=[self.sentences.firm_ids[f] for f in self._showcase(theme_id)[0][:2]],
                )
            )
        return summaries

    def _centroids(self) -> np.ndarray:
        """Each theme's unit mean of its sentences' embeddings as stored (not centred), so that it
        compares with any sentence embedding of the same model."""
        sums = np.zeros((self.themes.n, self.dimensions), dtype=np.float64)
        embeddings = self.sentences.embeddings
        for start in range(0, self.sentences.n, 1 << 16):
            stop = min(start + (1 << 16), self.sentences.n)
            sums += self.membership[:, start:stop] @ embeddings[start:stop].astype(np.float32)
        return clustering.unit(sums) if self.themes.n else np.zeros((0, self.dimensions), np.float32)

    def _showcase(self, theme_id: int) -> tuple[list[int], list[int]]:
        """The theme's closest firms, closest first, and the row of each one's closest sentence."""
        members = self.themes.members
        rows = members.sentence[self.bounds[theme_id] : self.bounds[theme_id + 1]]
        similarity = members.similarity[self.bounds[theme_id] : self.bounds[theme_id + 1]]
        firms: list[int] = []
        chosen: list[int] = []
        for i in np.lexsort((rows, -similarity)):
            firm = int(self.sentences.firm[rows[i]])
            if firm not in firms:
                firms.append(firm)
                chosen.append(int(rows[i]))
                if len(firms) == self.config.n_representative:
                    break
        return firms, chosen

    def _representative_sentences(self) -> list[list[str]]:
        """Per theme, the closest sentence of each of its closest firms."""
        ids = self.sentences.sentence_ids
        wanted = [[ids[row].as_py() for row in self._showcase(theme)[1]] for theme in range(self.themes.n)]
        texts = texts_of(self.store, self.quarter, [i for rows in wanted for i in rows])
        return [[texts[i] for i in rows if i in texts] for rows in wanted]


def _class_tfidf(counts: sp.csr_matrix) -> sp.csr_matrix:
    """BERTopic's class-based TF-IDF (ClassTfidfTransformer's defaults): each class's term shares
    times log(1 + mean class size / the term's count over all classes). Written out because
    importing BERTopic for it loads transformers' pipelines, which took longer than the rest of a
    small reduce (tests/test_themes.py checks it against ClassTfidfTransformer)."""
    per_term = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    mean_class = int(counts.sum(axis=1).mean())
    idf = np.log(mean_class / np.maximum(per_term, 1.0) + 1.0)
    shares = normalize(counts.astype(np.float64), norm="l1", axis=1)
    return (shares @ sp.diags(idf, format="csr")).tocsr()


def _theme_keywords(
    members: clustering.Memberships, firm: np.ndarray, vocabulary: Vocabulary, config: ReduceSettings
) -> list[list[str]]:
    """Class-based TF-IDF over the themes and, as one more class, the sentences in no theme, where
    a term's frequency in a class counts firms, not sentences: each firm with sentences in the
    class weighs 1, shared equally among them, so a term's frequency is the sum over firms of the
    share of the firm's sentences there that use it. One firm's brand, said in fifty sentences,
    weighs at most 1. A keyword must also be used by at least `reduce.keyword_min_firms` of the
    firms that talk about the theme, so that it says what most of them said."""
    n_themes = int(members.theme.max()) + 1 if len(members.theme) else 0
    if n_themes == 0 or not vocabulary.terms:
        return [[] for _ in range(n_themes)]
    bounds = np.searchsorted(members.theme, np.arange(n_themes + 1))  # sorted by theme
    in_none = np.ones(vocabulary.counts.shape[0], dtype=bool)
    in_none[members.sentence] = False
    classes = [members.sentence[bounds[t] : bounds[t + 1]] for t in range(n_themes)]
    classes.append(np.flatnonzero(in_none))
    counted = [
        _firm_counts(vocabulary.counts, rows, firm, config.firm_min_sentences, users=theme < n_themes)
        for theme, rows in enumerate(classes)
    ]
    scores = _class_tfidf(sp.vstack([weighted for weighted, _, _ in counted]).tocsr())[:n_themes].tocsr()
    terms = np.array(vocabulary.terms, dtype=object)
    keywords = []
    for theme in range(n_themes):
        row = scores.getrow(theme)
        _, users, talking = counted[theme]
        widely = users[row.indices] >= config.keyword_min_firms * talking
        # Best first; ties by the term, which makes the order independent of the matrix layout.
        order = [i for i in np.lexsort((terms[row.indices], -row.data)) if widely[i] and row.data[i] > 0]
        ranked = [str(terms[row.indices[i]]) for i in order[: _CANDIDATE_WORDS * config.top_n_words]]
        keywords.append(distinct_keywords(ranked, config.top_n_words))
    return keywords


def _firm_counts(
    counts: sp.csr_matrix, rows: np.ndarray, firm: np.ndarray, min_sentences: int, users: bool = True
) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """Of the sentences `rows`: per term, the sum over firms of the share of the firm's sentences
    that use it (1 × terms); per term, how many of the firms with `min_sentences` of them use it
    (zeros unless `users`); and how many firms those are. A block of rows at a time: the sentences
    in no theme, one class, can be most of a 2,000,000-sentence quarter."""
    _, local, per_firm = np.unique(firm[rows], return_inverse=True, return_counts=True)
    weight = 1.0 / per_firm[local]  # each firm's sentences here add up to 1
    talking = per_firm >= min_sentences
    n_terms = counts.shape[1]
    frequency = np.zeros(n_terms)
    pairs = []
    for start in range(0, len(rows), _KEYWORD_BLOCK):
        part = counts[rows[start : start + _KEYWORD_BLOCK]].tocoo()  # a sentence and a term it uses
        row = part.row + start
        frequency += np.bincount(part.col, weights=weight[row], minlength=n_terms)
        if users:
            keep = talking[local[row]]
            pairs.append(np.unique(local[row][keep].astype(np.int64) * n_terms + part.col[keep]))
    used = np.zeros(n_terms, dtype=np.int64)
    if pairs:
        used = np.bincount(np.unique(np.concatenate(pairs)) % n_terms, minlength=n_terms)
    return sp.csr_matrix(frequency.reshape(1, -1)), used, int(talking.sum())


# --- writing ------------------------------------------------------------------------------------


def _write(
    store: Store, quarter: Quarter, tables: dict[str, pa.Table], schemas: dict[str, pa.Schema]
) -> dict[str, str]:
    """themes.parquet last, and the old one removed first: whoever finds a themes.parquet (`ftm
    name`) finds the theme_sentences, theme_topics, exposure and firms of the same run beside it."""
    paths = {
        "theme_sentences": layout.theme_sentences(quarter),
        "theme_topics": layout.theme_topics(quarter),
        "firm_theme_exposure": layout.firm_theme_exposure(quarter),
        "firms": layout.theme_firms(quarter),
        "themes": layout.themes(quarter),
    }
    store.delete(paths["themes"])
    for name in ("theme_sentences", "theme_topics", "firm_theme_exposure", "firms", "themes"):
        store.write_table(paths[name], tables[name], schemas[name])
    return paths


def _listed(batches: list[str], shown: int = 10) -> str:
    more = f" and {len(batches) - shown} more" if len(batches) > shown else ""
    return ", ".join(batches[:shown]) + more
