"""Trends (`ftm trends RANGE`): a range's reduced quarters in (`themes/NAME/quarter=Q/`, with the
prefetched sentences' text for tone); themes followed through the quarters out
(`trends/RANGE/`): `lineages.parquet`, the long firm × theme × quarter panel
`firm_theme_quarter.parquet` and, last, `trends.parquet`, one row per lineage and quarter.

Lineages come from lineages.py (one id per subject, kept when quarters are added); tone from
tone.py (Loughran-McDonald counts over the firm's sentences in the theme, `raw_text`).

The trend flag of a lineage in a quarter compares its share of the quarter's firms with the mean
share over the `trends.window` calendar quarters before it that are in the range (a quarter
without the lineage counts 0): `emerging` at `trends.change_ratio` times that mean or more (or
any share after none), `fading` at that mean divided by the ratio or less, `steady` between;
null when no quarter of the window is in the range, or the lineage is absent then and before.

Nothing time-dependent is written and every table is sorted: the same reduced quarters and
registry give byte-identical files, so a killed run, run again, writes the same files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ftm import layout
from ftm.errors import UsageError
from ftm.prefetch import read_manifest, run_command, sentence_rows
from ftm.quarters import Quarter, quarters_label
from ftm.schemas import (
    FIRM_THEME_EXPOSURE,
    FIRM_THEME_QUARTER,
    LINEAGES,
    THEME_SENTENCES,
    TRENDS,
    QuarterLineages,
)
from ftm.settings import FtmSettings, TrendsSettings
from ftm.storage import Store
from ftm.trends.lineages import QuarterThemes, assign, read_quarter_themes, read_registry
from ftm.trends.tone import count_tone, net_tone


@dataclass(frozen=True)
class TrendsProgress:
    """What the progress callback is told: "lineages", then "quarter" once per quarter (done of
    total), then "writing"."""

    phase: str
    quarter: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class TrendsResult:
    label: str  # the range as its folder names it
    quarters: list[str]
    newly_matched: list[str]  # quarters the registry had not matched before (or matched again)
    n_lineages: int  # lineages with a theme in the range
    n_continuing: int  # of those, lineages in two or more of its quarters
    n_panel_rows: int
    emerging: dict[str, int]  # quarter → lineages flagged emerging (kind theme)
    fading: dict[str, int]
    files: dict[str, str]  # artifact name → path relative to the storage root
    flagged_quarters: list[str]  # quarters with trends.window quarters before them in the range


def trends_range(
    settings: FtmSettings,
    quarters: list[Quarter],
    *,
    on_progress: Callable[[TrendsProgress], None] = lambda progress: None,
) -> TrendsResult:
    """Follows the range's themes through its quarters; see the module docstring."""
    store = Store.from_settings(settings.storage)
    quarters = sorted(set(quarters))
    label = quarters_label(quarters)
    themes = {quarter: read_quarter_themes(store, quarter) for quarter in quarters}
    missing = [str(quarter) for quarter, found in themes.items() if found is None]
    if missing:
        raise UsageError(
            f"{', '.join(missing)} of {label} {'has' if len(missing) == 1 else 'have'} no themes in "
            f"{store.uri()}: run {run_command(store, quarters)} (prefetch, submit, reduce and name "
            f"where missing), or `{store.command('reduce --quarter QUARTER')}` for each"
        )
    found: dict[Quarter, QuarterThemes] = {q: t for q, t in themes.items() if t is not None}
    on_progress(TrendsProgress("lineages"))
    config = settings.trends
    registry = read_registry(store, config.min_similarity)
    registry, newly = assign(store, registry, found, config.min_similarity)
    if newly:  # before any range's files, which it numbers
        store.write_json(layout.lineage_registry(), registry.to_json())
    entries = {entry.quarter: entry for entry in registry.quarters}

    lineage_rows, panel_parts, trend_parts = [], [], []
    for index, quarter in enumerate(quarters):
        on_progress(TrendsProgress("quarter", str(quarter), index, len(quarters)))
        entry = entries[str(quarter)]
        lineage_rows.append(_lineage_rows(found[quarter], entry))
        panel = _panel(store, quarter, entry)
        panel_parts.append(panel)
        trend_parts.append(_quarter_trend(store, quarter, found[quarter], entry, panel))
    on_progress(TrendsProgress("writing"))
    lineages = pd.concat(lineage_rows, ignore_index=True).sort_values(["lineage_id", "quarter"])
    panel = pd.concat(panel_parts, ignore_index=True).sort_values(["quarter", "firm_id", "theme_id"])
    trends = _flag(_grid(pd.concat(trend_parts, ignore_index=True), quarters), quarters, config)

    built = {
        "lineages": (layout.lineages(label), _table(lineages, LINEAGES)),
        "firm_theme_quarter": (layout.firm_theme_quarter(label), _table(panel, FIRM_THEME_QUARTER)),
        "trends": (layout.trends(label), _table(trends, TRENDS)),  # last: the range is done
    }
    for path, table in built.values():
        store.write_table(path, table)
    present = lineages.groupby("lineage_id").quarter.nunique()
    investment = trends[trends.kind == "theme"]
    flagged = investment.groupby(["quarter", "trend"]).size()
    return TrendsResult(
        label=label,
        quarters=[str(quarter) for quarter in quarters],
        newly_matched=newly,
        n_lineages=len(present),
        n_continuing=int((present >= 2).sum()),
        n_panel_rows=len(panel),
        emerging={str(q): int(flagged.get((str(q), "emerging"), 0)) for q in quarters},
        fading={str(q): int(flagged.get((str(q), "fading"), 0)) for q in quarters},
        files={name: path for name, (path, _) in built.items()},
        flagged_quarters=sorted(set(trends.quarter[trends.trend.notna()])),
    )


def _lineage_rows(themes: QuarterThemes, entry: QuarterLineages) -> pd.DataFrame:
    table = themes.table
    ids = table.column("theme_id").to_pylist()
    return pd.DataFrame(
        {
            "lineage_id": [entry.lineage_of_theme[str(theme)] for theme in ids],
            "quarter": entry.quarter,
            "theme_id": ids,
            "kind": table.column("kind").to_pylist(),
            "keywords": table.column("keywords").to_pylist(),
            "similarity": [entry.similarity.get(str(theme), np.nan) for theme in ids],
        }
    )


def firm_theme_tone(store: Store, quarter: Quarter) -> pd.DataFrame:
    """firm_theme_exposure with the call date and the Loughran-McDonald tone of the firm's
    sentences in the theme (positive, negative, uncertainty, net_tone): the long panel's rows of
    one quarter, less the lineage."""
    exposure = store.read_table(layout.firm_theme_exposure(quarter), FIRM_THEME_EXPOSURE).to_pandas()
    members = store.read_table(layout.theme_sentences(quarter), THEME_SENTENCES).to_pandas()
    sentences = _sentence_tone(store, quarter, members.sentence_id.unique())
    members = members.merge(sentences, on="sentence_id", how="left", validate="many_to_one")
    cells = members.groupby(["firm_id", "theme_id"], sort=True)[["positive", "negative", "uncertainty"]].sum()
    # A firm with two calls in the quarter: the date of the call that holds most of its sentences
    # in the theme (the earlier call on a tie), the event a CRSP merge should centre on.
    calls = (
        members.groupby(["firm_id", "theme_id", "earnings_call_date"], dropna=False, sort=True)
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["firm_id", "theme_id", "n", "earnings_call_date"], ascending=[True, True, False, True])
        .drop_duplicates(["firm_id", "theme_id"])
        .set_index(["firm_id", "theme_id"])
        .earnings_call_date
    )
    panel = exposure.join(cells, on=["firm_id", "theme_id"]).join(calls, on=["firm_id", "theme_id"])
    for column in ("positive", "negative", "uncertainty"):
        panel[column] = panel[column].fillna(0).astype("int32")
    # Dates stay date objects (None where the source had none: files with only a fiscal quarter),
    # which an all-missing column would otherwise turn into floats.
    dates = panel.earnings_call_date.astype(object)
    panel["earnings_call_date"] = dates.where(dates.notna(), None)
    panel["net_tone"] = net_tone(panel.positive.to_numpy(), panel.negative.to_numpy())
    return panel


def _panel(store: Store, quarter: Quarter, entry: QuarterLineages) -> pd.DataFrame:
    panel = firm_theme_tone(store, quarter)
    panel["lineage_id"] = [entry.lineage_of_theme[str(theme)] for theme in panel.theme_id]
    return panel


def _sentence_tone(store: Store, quarter: Quarter, sentence_ids: np.ndarray) -> pd.DataFrame:
    """Tone counts and the call date of the sentences asked for."""
    table = sentence_rows(store, quarter, sentence_ids, ["earnings_call_date", "raw_text"])
    counts = count_tone(table.column("raw_text").to_pylist())
    return pd.DataFrame(
        {
            "sentence_id": table.column("sentence_id").to_pylist(),
            "earnings_call_date": table.column("earnings_call_date").to_pylist(),
            "positive": counts[:, 0],
            "negative": counts[:, 1],
            "uncertainty": counts[:, 2],
        }
    )


def _quarter_trend(
    store: Store, quarter: Quarter, themes: QuarterThemes, entry: QuarterLineages, panel: pd.DataFrame
) -> pd.DataFrame:
    """One row per theme of the quarter: its lineage, firms, share of the quarter's firms,
    sentences and tone."""
    n_firms = max(len(read_manifest(store, quarter).firm_to_chunk), 1)
    table = themes.table
    ids = table.column("theme_id").to_pylist()
    tone = panel.groupby("theme_id")[["positive", "negative", "uncertainty"]].sum()
    mean_tone = panel.groupby("theme_id").net_tone.mean()  # NaN (no tone) left out
    firms = np.asarray(table.column("n_firms").to_pylist(), dtype=np.int64)
    return pd.DataFrame(
        {
            "lineage_id": [entry.lineage_of_theme[str(theme)] for theme in ids],
            "quarter": str(quarter),
            "theme_id": ids,
            "kind": table.column("kind").to_pylist(),
            "n_firms": firms,
            "firm_share": firms / n_firms,
            "n_sentences": table.column("n_sentences").to_pylist(),
            "positive": tone.positive.reindex(ids, fill_value=0).to_numpy(),
            "negative": tone.negative.reindex(ids, fill_value=0).to_numpy(),
            "uncertainty": tone.uncertainty.reindex(ids, fill_value=0).to_numpy(),
            "mean_net_tone": mean_tone.reindex(ids).to_numpy(),
        }
    )


def _grid(rows: pd.DataFrame, quarters: list[Quarter]) -> pd.DataFrame:
    """Every lineage in every quarter of the range: a quarter without it has 0 firms and no theme."""
    index = pd.MultiIndex.from_product(
        [sorted(rows.lineage_id.unique()), [str(q) for q in quarters]], names=["lineage_id", "quarter"]
    )
    grid = rows.set_index(["lineage_id", "quarter"]).reindex(index).reset_index()
    for column in ("n_firms", "n_sentences", "positive", "negative", "uncertainty"):
        grid[column] = grid[column].fillna(0).astype("int64")
    grid["firm_share"] = grid.firm_share.fillna(0.0)
    grid["theme_id"] = grid.theme_id.astype("Int32")
    return grid


def _flag(grid: pd.DataFrame, quarters: list[Quarter], config: TrendsSettings) -> pd.DataFrame:
    share = grid.pivot(index="lineage_id", columns="quarter", values="firm_share")
    in_range = {str(q) for q in quarters}
    flags = {}
    for quarter in quarters:
        window, before = [], quarter
        for _ in range(config.window):
            before = before.previous()
            if str(before) in in_range:
                window.append(str(before))
        if len(window) < config.window:
            # Too few quarters before it to tell a change from noise: on two quarters, 17 of 29
            # themes came out "emerging" when only 35 of 101 lineages matched across them.
            continue
        now, baseline = share[str(quarter)], share[window].mean(axis=1)
        flag = pd.Series("steady", index=share.index, dtype=object)
        flag[now <= baseline / config.change_ratio] = "fading"
        flag[(now >= config.change_ratio * baseline) & (now > 0)] = "emerging"
        flag[(now == 0) & (baseline == 0)] = None
        flags[str(quarter)] = flag
    grid["trend"] = [
        flags[quarter][lineage] if quarter in flags else None
        for lineage, quarter in zip(grid.lineage_id, grid.quarter, strict=True)
    ]
    return grid.sort_values(["lineage_id", "quarter"])


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    frame = frame[schema.names].reset_index(drop=True)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
