"""What the report shows, read from storage into one JSON-able document: every firm once, and for
each quarter its themes (names, keywords, firms, representative sentences), its firm × theme
cells with exposure and tone, and a few evidence sentences per firm; for a range, the lineages'
measured share of firms by quarter with their trend flags, momentum, salience and tone, the
lineages rising most in the last quarter first.

The document is columnar (a list per column, not an object per row) and its numbers are scaled
integers (a share in ten-thousandths, a tone in hundredths), because it is inlined in the page:
at 5,000 firms × 200 themes, 100,000 cells as objects would weigh more than the rest of the page.
Evidence is what the page can afford, not all of it (theme_sentences.parquet holds all of it):
the closest sentences of each firm in its largest investment themes, as many as a quarter's
share of `EVIDENCE_BUDGET` allows (`EVIDENCE_STEPS`: every theme, 3 sentences each, for a small
quarter; at 5,000 firms, one sentence in each of a firm's 5 largest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from ftm import layout
from ftm.name import read_names
from ftm.prefetch import sentence_rows
from ftm.quarters import Quarter
from ftm.schemas import FIRM_THEME_QUARTER, FIRMS, THEME_SENTENCES, THEMES, TRENDS
from ftm.storage import Store
from ftm.trends import firm_theme_tone

REPRESENTATIVE_SENTENCES = 5  # per theme, each of another firm
EVIDENCE_BUDGET = 30_000  # sentences per page, shared by its quarters: about 4 MB of text
# (themes per firm, sentences per theme), the first whose sentences fit the budget; None: all.
EVIDENCE_STEPS = ((None, 3), (None, 2), (20, 2), (10, 2), (10, 1), (5, 1), (3, 1), (1, 1))
MAX_CHARS = 280  # a sentence longer than this is cut, with an ellipsis
KEYWORDS = 10
_THEME_COLUMNS = ["theme_id", "kind", "keywords", "representation", "salience", "n_firms", "n_sentences"]


@dataclass(frozen=True)
class ContentProgress:
    """What the progress callback is told: "quarter" once per quarter (done of total)."""

    phase: str
    quarter: str = ""
    done: int = 0
    total: int = 0


def gather(
    store: Store,
    quarters: list[Quarter],
    label: str,
    on_progress: Callable[[ContentProgress], None] = lambda progress: None,
) -> dict[str, Any]:
    """The report's document for one quarter, or for a range whose trends were computed."""
    trends, panel = None, None
    if len(quarters) > 1:  # a range: its lineages, and the panel with the tone `ftm trends` counted
        trends = store.read_table(layout.trends(label), TRENDS).to_pandas()
        panel = store.read_table(layout.firm_theme_quarter(label), FIRM_THEME_QUARTER).to_pandas()
    firms = Firms()
    budget = EVIDENCE_BUDGET // len(quarters)
    pages = []
    for index, quarter in enumerate(quarters):
        on_progress(ContentProgress("quarter", str(quarter), index, len(quarters)))
        cells = panel[panel.quarter == str(quarter)] if panel is not None else firm_theme_tone(store, quarter)
        lineage_of = _lineage_of(trends, quarter) if trends is not None else {}
        pages.append(_quarter(store, quarter, cells, lineage_of, firms, budget))
    document: dict[str, Any] = {"firms": firms.columns(), "quarters": pages, "lineages": None}
    if trends is not None:
        document["lineages"] = _lineages(trends, quarters, pages)
    return document


class Firms:
    """Every firm of the report once, by first appearance; the page refers to firms by index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.rows: list[list[Any]] = []

    def add(self, frame: pd.DataFrame) -> None:
        """FIRMS rows: a firm seen before takes the later quarter's name and keys where it has them."""
        for row in frame.itertuples(index=False):
            values = [row.firm_id, row.firm_name, _integer(row.permno), row.gvkey]
            at = self.index.get(row.firm_id)
            if at is None:
                self.index[row.firm_id] = len(self.rows)
                self.rows.append(values)
            else:
                pairs = zip(values, self.rows[at], strict=True)
                self.rows[at] = [new if new is not None else old for new, old in pairs]

    def of(self, firm_ids: pd.Series) -> list[int]:
        return [self.index[firm_id] for firm_id in firm_ids]

    def columns(self) -> dict[str, list[Any]]:
        names = ("id", "name", "permno", "gvkey")
        return {name: [row[i] for row in self.rows] for i, name in enumerate(names)}


def _quarter(
    store: Store,
    quarter: Quarter,
    cells: pd.DataFrame,
    lineage_of: dict[int, int],
    firms: Firms,
    budget: int,
) -> dict[str, Any]:
    themes = store.read_table(layout.themes(quarter), THEMES, columns=_THEME_COLUMNS).to_pandas()
    themes = themes.sort_values("theme_id", ignore_index=True)
    quarter_firms = store.read_table(layout.theme_firms(quarter), FIRMS).to_pandas()
    firms.add(without_missing(quarter_firms))
    members = store.read_table(layout.theme_sentences(quarter), THEME_SENTENCES).to_pandas()
    kinds = themes.set_index("theme_id").kind
    examples = _representative(members)
    evidence = _evidence(members, cells, kinds, budget)
    texts = _texts(store, quarter, pd.concat([examples.sentence_id, evidence.sentence_id]))
    names = _names(store, quarter, themes)
    cells = cells.assign(firm=firms.of(cells.firm_id)).sort_values(["theme_id", "firm"])
    per_theme = cells.groupby("theme_id").size().reindex(themes.theme_id, fill_value=0)
    calls = without_missing(quarter_firms[["firm_id", "earnings_call_date"]].dropna())
    by_theme = {theme: group for theme, group in examples.groupby("theme_id", sort=False)}
    return {
        "quarter": str(quarter),
        "n_firms": len(quarter_firms),
        "themes": {
            "id": themes.theme_id.tolist(),
            "kind": themes.kind.tolist(),
            "name": [names[theme][0] for theme in themes.theme_id],
            "source": [names[theme][1] for theme in themes.theme_id],
            "keywords": [list(words[:KEYWORDS]) for words in themes.keywords],
            # Rounded: the page shows two decimals, and the page's weight is mostly numbers.
            "salience": [None if pd.isna(value) else round(float(value), 3) for value in themes.salience],
            "n_firms": themes.n_firms.astype(int).tolist(),
            "n_sentences": themes.n_sentences.astype(int).tolist(),
            "lineage": [lineage_of.get(int(theme)) for theme in themes.theme_id],
            "examples": [
                _sentences(by_theme.get(theme, examples.iloc[:0]), texts, firms) for theme in themes.theme_id
            ],
        },
        # Grouped by theme, in the themes' order, firms ascending as differences from the one
        # before: a third of the bytes of plain indices, for the largest part of the page.
        "cells": {
            "per_theme": per_theme.astype(int).tolist(),
            "firm_step": cells.groupby("theme_id").firm.diff().fillna(cells.firm).astype(int).tolist(),
            "n": cells.n_sentences.astype(int).tolist(),
            "share": scaled(cells.share, 10_000),
            "tone": scaled(cells.net_tone, 100),
        },
        "calls": {
            "firm": firms.of(calls.firm_id),
            "date": [iso_day(value) for value in calls.earnings_call_date],
        },
        "evidence": {
            "theme": evidence.theme_id.astype(int).tolist(),
            **_sentence_columns(evidence, texts, firms),
        },
    }


def _representative(members: pd.DataFrame) -> pd.DataFrame:
    """Per theme, the sentence closest to its centroid of each of its closest firms."""
    ranked = members.sort_values(["theme_id", "similarity", "sentence_id"], ascending=[True, False, True])
    closest = ranked.drop_duplicates(["theme_id", "firm_id"])
    return closest.groupby("theme_id", sort=False).head(REPRESENTATIVE_SENTENCES)


def _evidence(members: pd.DataFrame, cells: pd.DataFrame, kinds: pd.Series, budget: int) -> pd.DataFrame:
    """Per firm, its closest sentences in its largest investment themes, as many as the budget allows."""
    investment = cells[cells.theme_id.map(kinds).eq("theme")]
    ranked = investment.sort_values(["firm_id", "share", "theme_id"], ascending=[True, False, True])
    ranked = ranked.assign(theme_rank=ranked.groupby("firm_id").cumcount())[
        ["firm_id", "theme_id", "theme_rank"]
    ]
    chosen = members.merge(ranked, on=["firm_id", "theme_id"])
    chosen = chosen.sort_values(
        ["firm_id", "theme_rank", "similarity", "sentence_id"], ascending=[True, True, False, True]
    )
    chosen["rank"] = chosen.groupby(["firm_id", "theme_id"]).cumcount()
    for themes, per_cell in EVIDENCE_STEPS:
        kept = chosen[(chosen["rank"] < per_cell) & (themes is None or chosen.theme_rank < themes)]
        if len(kept) <= budget:
            return kept
    return kept.head(budget)  # more firms than the budget has sentences: the first firms


def _texts(store: Store, quarter: Quarter, sentence_ids: pd.Series) -> dict[str, tuple[str, str | None]]:
    """sentence_id → (text, call date) for the sentences the page shows."""
    table = sentence_rows(store, quarter, set(sentence_ids), ["raw_text", "earnings_call_date"])
    return {
        sentence: (clip(text), iso_day(day))
        for sentence, text, day in zip(
            table.column("sentence_id").to_pylist(),
            table.column("raw_text").to_pylist(),
            table.column("earnings_call_date").to_pylist(),
            strict=True,
        )
    }


def _sentences(rows: pd.DataFrame, texts: dict[str, tuple[str, str | None]], firms: Firms) -> list[list[Any]]:
    """[firm, call date, text] per sentence, as a theme's examples list them."""
    columns = _sentence_columns(rows, texts, firms)
    return [list(row) for row in zip(columns["firm"], columns["date"], columns["text"], strict=True)]


def _sentence_columns(
    rows: pd.DataFrame, texts: dict[str, tuple[str, str | None]], firms: Firms
) -> dict[str, list[Any]]:
    found = [texts.get(sentence, ("", None)) for sentence in rows.sentence_id]
    return {
        "firm": firms.of(rows.firm_id),
        "date": [day for _, day in found],
        "text": [text for text, _ in found],
    }


def _names(store: Store, quarter: Quarter, themes: pd.DataFrame) -> dict[int, tuple[str, str]]:
    """theme_id → (name, where it came from): `ftm name`'s names, or the keywords where there are none."""
    found: dict[int, tuple[str, str]] = {}
    if store.exists(layout.theme_names(quarter)):
        names = read_names(store, quarter, "theme").to_pandas()
        found = {
            int(row.theme_id): (row.name, row.source or "")
            for row in names.itertuples(index=False)
            if isinstance(row.name, str) and row.name
        }
    for row in themes.itertuples(index=False):
        if int(row.theme_id) not in found:
            found[int(row.theme_id)] = (
                ", ".join(list(row.keywords)[:3]) or f"theme {row.theme_id}",
                "keywords",
            )
    return found


def _lineage_of(trends: pd.DataFrame, quarter: Quarter) -> dict[int, int]:
    rows = trends[(trends.quarter == str(quarter)) & trends.theme_id.notna()]
    return {int(theme): int(lineage) for theme, lineage in zip(rows.theme_id, rows.lineage_id, strict=True)}


def _lineages(trends: pd.DataFrame, quarters: list[Quarter], pages: list[dict[str, Any]]) -> dict[str, Any]:
    """Per lineage, its measured share of firms, trend flag and net tone in each quarter, its
    momentum in the last flagged quarter, its latest salience and its tone's change over the
    range, named after its latest theme. Investment themes first, then by that momentum (rising
    most first; lineages without one last, by their peak share)."""
    labels = [str(quarter) for quarter in quarters]
    named: dict[int, tuple[str, str]] = {}
    for page in pages:  # in quarter order: a later quarter's theme names the lineage
        themes = page["themes"]
        for lineage, name, kind in zip(themes["lineage"], themes["name"], themes["kind"], strict=True):
            if lineage is not None:
                named[lineage] = (name, kind)
    grid = trends.set_index(["lineage_id", "quarter"])
    flagged = trends[trends.momentum.notna()]
    last = flagged[flagged.quarter == flagged.quarter.max()].set_index("lineage_id").momentum
    latest = trends.dropna(subset=["salience"]).sort_values("quarter").groupby("lineage_id").salience.last()
    change = trends.dropna(subset=["net_tone_change"]).sort_values("quarter").groupby("lineage_id")
    change = change.net_tone_change.last()
    peak = trends.groupby("lineage_id").share_of_firms.max()

    def rank(lineage: int) -> tuple[int, int, float, float, int]:
        kind = named.get(lineage, ("", "theme"))[1]
        momentum = last.get(lineage)
        missing = momentum is None or pd.isna(momentum)
        return (kind != "theme", missing, 0.0 if missing else -momentum, -peak[lineage], lineage)

    ids = sorted((int(lineage) for lineage in trends.lineage_id.unique()), key=rank)

    def series(lineage: int, column: str) -> pd.Series:
        return grid.loc[lineage][column].reindex(labels)

    return {
        "quarters": labels,
        "id": ids,
        "name": [named.get(lineage, (f"lineage {lineage}", ""))[0] for lineage in ids],
        "kind": [named.get(lineage, ("", "theme"))[1] for lineage in ids],
        "share": [scaled(series(lineage, "share_of_firms").fillna(0.0), 10_000) for lineage in ids],
        "n_firms": [series(lineage, "measured_firms").fillna(0).astype(int).tolist() for lineage in ids],
        "trend": [
            [value if isinstance(value, str) else None for value in series(lineage, "trend")]
            for lineage in ids
        ],
        "tone": [scaled(series(lineage, "net_tone"), 100) for lineage in ids],
        "momentum": scaled(pd.Series([last.get(lineage) for lineage in ids], dtype=float), 10_000),
        "salience": scaled(pd.Series([latest.get(lineage) for lineage in ids], dtype=float), 100),
        "tone_change": scaled(pd.Series([change.get(lineage) for lineage in ids], dtype=float), 100),
    }


# The document's conventions, which the page of a measured subject (measure.py) keeps too.


def without_missing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def scaled(values: pd.Series, scale: int) -> list[int | None]:
    return [None if pd.isna(value) else int(round(float(value) * scale)) for value in values]


def _integer(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def iso_day(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, date) else None


def clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1].rstrip() + "…"
