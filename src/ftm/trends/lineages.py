"""Lineages: the same subject in different quarters, one `lineage_id` for all its themes.

Method (chosen by measurement, benchmarks/README.md *Trends*): a theme's vector is its centroid
(the unit mean of its sentences' embeddings, `themes.parquet`) less the mean centroid of its own
quarter's themes, normalised. Every quarter's themes share a large common direction (earnings-call
language), which puts raw cosines of all pairs at 0.87 at the 99th percentile; taking each
quarter's own mean away brings that to 0.71 (2020Q3 against 2021Q3 of the shared corpus), while
the pairs whose keywords read as one subject stay above 0.8 and those between 0.68 and 0.77 read
as related but different subjects: hence `trends.min_similarity` = 0.8. It depends on that quarter
alone, so a theme's vector never changes with the range. Keyword sets overlap too little to
separate subjects (Jaccard of the best match: median 0.33), and clustering the quarters jointly
would renumber lineages whenever a quarter is added, which ids kept in a registry do not.

Matching is one-to-one per quarter: a lineage has at most one theme in a quarter. A quarter's
themes are matched, greedily by descending cosine (ties by theme, then lineage id), with the
lineages already known, each represented by its theme in the known quarter nearest in time (the
earlier one on a tie), when the cosine is at least `trends.min_similarity`; a theme left over
starts a new lineage, numbered in theme order. Quarters are matched oldest first.

A theme that starts a lineage while its nearest known lineage is at `trends.parent_similarity` or
more (and not free, or not near enough, to be matched) is a narrower part of that subject (the
pandemic splitting into vaccines, remote work and reopening): the new lineage records it as its
parent (`parent_lineage_id`), in the registry as it is assigned.

The registry (`trends/_lineages.json`) keeps every assignment made in the storage root, so
adding a quarter to a range, before or after, never renumbers the lineages of the quarters
already matched. A quarter whose themes changed (reduced again with other settings: the file's
SHA-256 differs) is matched again; ids are never reused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from ftm import layout
from ftm.errors import UsageError
from ftm.quarters import Quarter
from ftm.schemas import THEMES, LineageRegistry, QuarterLineages
from ftm.storage import Store


@dataclass(frozen=True)
class QuarterThemes:
    """A quarter's themes as lineages need them; row i is the theme `theme_id[i]`."""

    quarter: Quarter
    table: pa.Table  # themes.parquet
    vectors: np.ndarray  # float64, unit rows: centroid less the quarter's mean
    sha256: str

    @property
    def theme_id(self) -> list[int]:
        return self.table.column("theme_id").to_pylist()


def read_quarter_themes(store: Store, quarter: Quarter) -> QuarterThemes | None:
    """The quarter's themes, or None when it was never reduced."""
    path = layout.themes(quarter)
    if not store.exists(path):
        return None
    data = store.read_bytes(path)
    table = store.read_table(path, THEMES)
    centroids = np.asarray(table.column("centroid").to_pylist(), dtype=np.float64)
    if len(centroids):
        centroids = centroids - centroids.mean(axis=0)
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        centroids = centroids / np.where(norms > 0, norms, 1.0)
    return QuarterThemes(quarter, table, centroids, hashlib.sha256(data).hexdigest())


def read_registry(store: Store, min_similarity: float) -> LineageRegistry:
    path = layout.lineage_registry()
    if not store.exists(path):
        return LineageRegistry(min_similarity=min_similarity, next_lineage_id=0, updated_at=_now())
    registry = LineageRegistry.model_validate(store.read_json(path))
    if registry.min_similarity != min_similarity:
        raise UsageError(
            f"the lineages in {store.uri(path)} were matched with trends.min_similarity = "
            f"{registry.min_similarity}, not {min_similarity}: set it back, or delete that file to "
            "number every lineage anew (the ids of every range change)"
        )
    return registry


def assign(
    store: Store,
    registry: LineageRegistry,
    themes: dict[Quarter, QuarterThemes],
    min_similarity: float,
    parent_similarity: float,
) -> tuple[LineageRegistry, list[str]]:
    """The registry with every quarter of `themes` matched; the quarters newly matched (oldest
    first). Known quarters whose themes are unchanged keep their lineages as they are."""
    known = {entry.quarter: entry for entry in registry.quarters}
    to_match = [
        quarter
        for quarter in sorted(themes)
        if str(quarter) not in known or known[str(quarter)].themes_sha256 != themes[quarter].sha256
    ]
    if not to_match:
        return registry, []
    for quarter in to_match:
        known.pop(str(quarter), None)
    # Representatives come from every known quarter whose themes are at hand and unchanged.
    loaded = dict(themes)
    for label in known:
        quarter = Quarter.parse(label)
        if quarter not in loaded:
            found = read_quarter_themes(store, quarter)
            if found is not None:
                loaded[quarter] = found
    usable = {
        label: entry
        for label, entry in known.items()
        if Quarter.parse(label) in loaded and loaded[Quarter.parse(label)].sha256 == entry.themes_sha256
    }
    next_id = registry.next_lineage_id
    for quarter in to_match:
        entry, next_id = _match(
            quarter, loaded[quarter], usable, loaded, next_id, min_similarity, parent_similarity
        )
        known[str(quarter)] = usable[str(quarter)] = entry
    quarters = [known[label] for label in sorted(known, key=Quarter.parse)]
    updated = LineageRegistry(
        min_similarity=min_similarity, next_lineage_id=next_id, quarters=quarters, updated_at=_now()
    )
    return updated, [str(quarter) for quarter in to_match]


def _match(
    quarter: Quarter,
    current: QuarterThemes,
    known: dict[str, QuarterLineages],
    loaded: dict[Quarter, QuarterThemes],
    next_id: int,
    min_similarity: float,
    parent_similarity: float,
) -> tuple[QuarterLineages, int]:
    lineage_ids, representatives = _representatives(quarter, known, loaded)
    theme_ids = current.theme_id
    lineage_of: dict[str, int] = {}
    similarity: dict[str, float] = {}
    parent_of: dict[str, int] = {}
    cosines = np.zeros((len(theme_ids), 0))
    if lineage_ids and theme_ids:
        cosines = current.vectors @ representatives.T
        rows, columns = np.nonzero(cosines >= min_similarity)
        order = sorted(
            zip(rows.tolist(), columns.tolist(), strict=True),
            key=lambda pair: (-round(float(cosines[pair]), 9), theme_ids[pair[0]], lineage_ids[pair[1]]),
        )
        taken: set[int] = set()
        for row, column in order:
            key = str(theme_ids[row])
            if key in lineage_of or column in taken:
                continue
            lineage_of[key] = lineage_ids[column]
            similarity[key] = round(float(cosines[row, column]), 6)
            taken.add(column)
    for row, theme_id in enumerate(theme_ids):  # themes that joined no lineage start one, in order
        if str(theme_id) not in lineage_of:
            lineage_of[str(theme_id)] = next_id
            next_id += 1
            if cosines.shape[1]:
                nearest = int(np.argmax(cosines[row]))  # the lower id on a tie
                if cosines[row, nearest] >= parent_similarity:
                    parent_of[str(theme_id)] = lineage_ids[nearest]
    entry = QuarterLineages(
        quarter=str(quarter),
        themes_sha256=current.sha256,
        lineage_of_theme=lineage_of,
        similarity=similarity,
        parent_of_theme=parent_of,
    )
    return entry, next_id


def _representatives(
    quarter: Quarter, known: dict[str, QuarterLineages], loaded: dict[Quarter, QuarterThemes]
) -> tuple[list[int], np.ndarray]:
    """Every known lineage and its theme's vector in the known quarter nearest to `quarter`."""
    chosen: dict[int, tuple[tuple[int, int], np.ndarray]] = {}
    for label, entry in known.items():
        other = Quarter.parse(label)
        if other == quarter:
            continue
        gap = abs(_index(other) - _index(quarter))
        distance = (gap, 0 if other < quarter else 1)  # the earlier quarter on a tie
        row_of = {theme_id: row for row, theme_id in enumerate(loaded[other].theme_id)}
        for theme, lineage in entry.lineage_of_theme.items():
            if lineage not in chosen or distance < chosen[lineage][0]:
                chosen[lineage] = (distance, loaded[other].vectors[row_of[int(theme)]])
    lineage_ids = sorted(chosen)
    if not lineage_ids:
        return [], np.zeros((0, 0))
    return lineage_ids, np.stack([chosen[lineage][1] for lineage in lineage_ids])


def _index(quarter: Quarter) -> int:
    return quarter.year * 4 + quarter.number - 1


def _now() -> datetime:
    return datetime.now(timezone.utc)
