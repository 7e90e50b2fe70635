"""Trends (`ftm trends RANGE`): a range's reduced quarters in (`themes/NAME/quarter=Q/`, with the
prefetched sentences' text for tone); themes followed through the quarters out
(`trends/RANGE/`): `lineages.parquet`, the long firm × theme × quarter panel
`firm_theme_quarter.parquet` and, last, `trends.parquet`, one row per lineage and quarter.

Lineages come from lineages.py (one id per subject, kept when quarters are added); tone from
ftm.tone (Loughran-McDonald counts over the firm's sentences in the theme, `raw_text`);
the measured series from measured.py.

A lineage's series is measured, not inherited (measured.py): in every quarter of the range, the
firms with at least `reduce.firm_min_sentences` sentences about its subject, whether or not one of
the quarter's themes joined it; `share_of_firms` is theirs, and `theme_id`, `n_firms` and
`firm_share` say which theme it had there, if any. Tone (`positive`, `negative`, `uncertainty`,
`net_tone`) is over the measured sentences, and `net_tone_change` is against the lineage's first
quarter of the range with tone.

Momentum compares a lineage's measured attention with its own recent quarters, among firms with
history: for each of the `trends.window` calendar quarters before it (all must be in the range),
the firms prefetched in both; `momentum` is the share of them exposed now less the share exposed
then, pooled over the window. The flag is `emerging` when the share now is at least
`trends.change_ratio` times the share then and McNemar's z over those firms (exposed now and not
then, against the reverse) is at least `_Z`; `fading` the other way round; `steady` otherwise;
null without enough quarters before (the result says so) or without a firm in common. This is not
salience (the theme's attention against ordinary language over years), which sits beside it.

Nothing time-dependent is written and every table is sorted: the same reduced quarters and
registry give byte-identical files, so a killed run, run again, writes the same files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ftm import layout
from ftm.errors import UsageError
from ftm.map import resolve_device
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
from ftm.tone import count_tone, net_tone
from ftm.trends.lineages import QuarterThemes, assign, read_quarter_themes, read_registry
from ftm.trends.measured import (
    LineageQueries,
    MeasuredQuarter,
    lineage_queries,
    measure_lineages,
    measured_frame,
)


@dataclass(frozen=True)
class TrendsProgress:
    """What the progress callback is told: "lineages", then "quarter" once per quarter (done of
    total), then "writing"."""

    phase: str  # also "calibrating" and "measuring" per quarter (the measured series)
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
    unflagged_reason: str | None = None  # why no quarter has flags, when none has
    rising: list[dict[str, object]] = field(default_factory=list)  # lineages rising most at the end


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
    registry, newly = assign(store, registry, found, config.min_similarity, config.parent_similarity)
    if newly:  # before any range's files, which it numbers
        store.write_json(layout.lineage_registry(), registry.to_json())
    entries = {entry.quarter: entry for entry in registry.quarters}

    queries = lineage_queries(found, entries)
    thresholds, measured = measure_lineages(
        store,
        queries,
        quarters,
        settings.reduce.firm_min_sentences,
        resolve_device(settings.embedding.device),
        lambda step, quarter: on_progress(
            TrendsProgress(step, str(quarter), quarters.index(quarter), len(quarters))
        ),
    )
    lineage_rows, panel_parts, theme_parts = [], [], []
    for index, quarter in enumerate(quarters):
        on_progress(TrendsProgress("quarter", str(quarter), index, len(quarters)))
        entry = entries[str(quarter)]
        lineage_rows.append(_lineage_rows(found[quarter], entry))
        panel_parts.append(_panel(store, quarter, entry))
        theme_parts.append(_quarter_themes(store, quarter, found[quarter], entry))
    on_progress(TrendsProgress("writing"))
    parents = registry.parents()
    lineages = pd.concat(lineage_rows, ignore_index=True).sort_values(["lineage_id", "quarter"])
    lineages["parent_lineage_id"] = lineages.lineage_id.map(parents).astype("Int32")
    panel = pd.concat(panel_parts, ignore_index=True).sort_values(["quarter", "firm_id", "theme_id"])
    series = measured_frame(queries, thresholds, measured)
    trends = _grid(series, pd.concat(theme_parts, ignore_index=True), parents)
    momentum = _momentum(queries, measured, quarters, config)
    trends = trends.merge(momentum, on=["lineage_id", "quarter"], how="left", validate="one_to_one")
    trends = trends.sort_values(["lineage_id", "quarter"])

    built = {
        "lineages": (layout.lineages(label), _table(lineages, LINEAGES)),
        "firm_theme_quarter": (layout.firm_theme_quarter(label), _table(panel, FIRM_THEME_QUARTER)),
        "trends": (layout.trends(label), _table(trends, TRENDS)),  # last: the range is done
    }
    for path, table in built.values():
        store.write_table(path, table)
    present = lineages.groupby("lineage_id").quarter.nunique()
    investment = trends[trends.lineage_kind == "theme"]
    flagged = investment.groupby(["quarter", "trend"]).size()
    flagged_quarters = sorted(set(trends.quarter[trends.trend.notna()]))
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
        flagged_quarters=flagged_quarters,
        unflagged_reason=None if flagged_quarters else _why_unflagged(quarters, config),
        rising=rising(trends, lineages),
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


def _quarter_themes(
    store: Store, quarter: Quarter, themes: QuarterThemes, entry: QuarterLineages
) -> pd.DataFrame:
    """One row per theme of the quarter: its lineage, kind, salience, firms and their share of the
    quarter's prefetched firms, and sentences."""
    n_firms = max(len(read_manifest(store, quarter).firm_to_chunk), 1)
    table = themes.table
    ids = table.column("theme_id").to_pylist()
    firms = np.asarray(table.column("n_firms").to_pylist(), dtype=np.int64)
    return pd.DataFrame(
        {
            "lineage_id": [entry.lineage_of_theme[str(theme)] for theme in ids],
            "quarter": str(quarter),
            "theme_id": ids,
            "kind": table.column("kind").to_pylist(),
            "salience": table.column("salience").to_pylist(),
            "n_firms": firms,
            "firm_share": firms / n_firms,
            "n_sentences": table.column("n_sentences").to_pylist(),
        }
    )


def _grid(series: pd.DataFrame, themes: pd.DataFrame, parents: dict[int, int]) -> pd.DataFrame:
    """The measured series (every lineage in every quarter) with the quarter's theme where it had
    one (0 firms and null theme elsewhere), the lineage's kind and parent, and the tone's change."""
    grid = series.merge(themes, on=["lineage_id", "quarter"], how="left", validate="one_to_one")
    for column in ("n_firms", "n_sentences"):
        grid[column] = grid[column].fillna(0).astype("int64")
    grid["firm_share"] = grid.firm_share.fillna(0.0)
    grid["theme_id"] = grid.theme_id.astype("Int32")
    # A lineage's kind: its themes' most common kind in the range ("theme" first on a tie).
    counts = themes.groupby(["lineage_id", "kind"]).size().rename("n").reset_index()
    counts["order"] = counts.kind.map({"theme": 0, "routine": 1, "reporting": 2}).fillna(3)
    counts = counts.sort_values(["lineage_id", "n", "order"], ascending=[True, False, True])
    kinds = counts.drop_duplicates("lineage_id").set_index("lineage_id").kind
    grid["lineage_kind"] = grid.lineage_id.map(kinds)
    grid["parent_lineage_id"] = grid.lineage_id.map(parents).astype("Int32")
    grid["net_tone"] = net_tone(grid.positive.to_numpy(), grid.negative.to_numpy())
    grid = grid.sort_values(["lineage_id", "quarter"])
    first = grid.dropna(subset=["net_tone"]).groupby("lineage_id").net_tone.first()
    grid["net_tone_change"] = grid.net_tone - grid.lineage_id.map(first)
    return grid


# McNemar's z at which a change among the same firms is taken as one (5 %, two-sided): a share
# that moves from 0.002 to 0.006 is 3 times as high but a single firm.
_Z = 1.96


def _momentum(
    queries: LineageQueries,
    measured: dict[Quarter, MeasuredQuarter],
    quarters: list[Quarter],
    config: TrendsSettings,
) -> pd.DataFrame:
    """Each lineage's momentum and trend flag per quarter (see the module docstring)."""
    in_range = set(quarters)
    exposure = {quarter: _exposure(found) for quarter, found in measured.items()}
    frames = []
    for quarter in quarters:
        window, before = [], quarter
        for _ in range(config.window):
            before = before.previous()
            if before in in_range:
                window.append(before)
        frame = pd.DataFrame({"lineage_id": queries.lineage_ids, "quarter": str(quarter)})
        frame["momentum"], frame["trend"] = np.nan, None
        if len(window) < config.window:
            frames.append(frame)
            continue
        now_firms, now = exposure[quarter]
        gained = lost = exposed_now = exposed_then = 0
        base = 0
        for earlier in window:
            then_firms, then = exposure[earlier]
            common, here, there = np.intersect1d(now_firms, then_firms, return_indices=True)
            if not len(common):
                continue
            a, b = now[:, here], then[:, there]
            gained = gained + (a & ~b).sum(axis=1)  # firms exposed now and not then
            lost = lost + (~a & b).sum(axis=1)
            exposed_now = exposed_now + a.sum(axis=1)
            exposed_then = exposed_then + b.sum(axis=1)
            base += len(common)
        if base == 0:
            frames.append(frame)
            continue
        share_now, share_then = exposed_now / base, exposed_then / base
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(gained + lost > 0, (gained - lost) / np.sqrt(gained + lost), 0.0)
        flag = np.full(len(queries.lineage_ids), "steady", dtype=object)
        flag[(share_now <= share_then / config.change_ratio) & (z <= -_Z)] = "fading"
        flag[(share_now >= config.change_ratio * share_then) & (z >= _Z)] = "emerging"
        flag[(share_now == 0) & (share_then == 0)] = None
        frame["momentum"], frame["trend"] = share_now - share_then, flag
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _exposure(found: MeasuredQuarter) -> tuple[np.ndarray, np.ndarray]:
    """The quarter's firm ids (sorted) and a lineages × firms matrix: exposed or not."""
    matrix = np.zeros((len(found.exposed), len(found.firm_ids)), bool)
    for row, firms in enumerate(found.exposed):
        matrix[row, firms] = True
    return np.asarray(found.firm_ids, dtype=object), matrix


def _why_unflagged(quarters: list[Quarter], config: TrendsSettings) -> str:
    return (
        f"no emerging or fading flags: a quarter is flagged against the trends.window = {config.window} "
        "quarter(s) before it, all of which must be in the range with firms that had calls in both; "
        "give a longer range, or lower trends.window"
    )


# The lineages `rising` lists: those whose momentum is highest in the range's last quarter.
_RISING = 10


def rising(trends: pd.DataFrame, lineages: pd.DataFrame) -> list[dict[str, object]]:
    """The investment-theme lineages whose measured attention rose most in the range's last
    flagged quarter, with their latest keywords, share, momentum, salience and flag."""
    flagged = trends[trends.momentum.notna() & (trends.lineage_kind == "theme")]
    if flagged.empty:
        return []
    last = flagged[flagged.quarter == flagged.quarter.max()].sort_values(
        ["momentum", "lineage_id"], ascending=[False, True]
    )
    latest = lineages.sort_values("quarter").groupby("lineage_id").last()
    salience = trends.dropna(subset=["salience"]).sort_values("quarter").groupby("lineage_id").salience.last()
    return [
        {
            "lineage_id": int(row.lineage_id),
            "quarter": row.quarter,
            "keywords": list(latest.keywords.get(row.lineage_id, []))[:6],
            "share_of_firms": round(float(row.share_of_firms), 4),
            "momentum": round(float(row.momentum), 4),
            "salience": None
            if pd.isna(salience.get(row.lineage_id))
            else round(float(salience[row.lineage_id]), 3),
            "trend": row.trend,
        }
        for row in last.head(_RISING).itertuples()
    ]


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    frame = frame[schema.names].reset_index(drop=True)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
