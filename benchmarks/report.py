"""Report benchmark: `ftm report` on a large quarter (5,000 firms × 200 themes by default): the
page's weight and how long chromium takes to draw it (goals: under 15 MB, under 3 s), beside a
baseline measured in the same run and the same browser: plotly's own self-contained page
(`plotly.io.write_html`, plotly.js inline) of the same bar chart, the least a page with these
charts can weigh and cost.

The quarter is synthesised, per the data contracts, as reduce and name would leave it: a
prefetch of `--sentences-per-firm` sentences a firm (real sentences of the bundled sample,
drawn at random), `--themes` themes (a sixth of them reporting language) whose popularity falls
off as 1 / (rank + 5), each firm in `--themes-per-firm` of them, 60 % of its sentences in one of
its themes and a third of those in a second, and the files reduce writes from that
(themes, theme_sentences, firm_theme_exposure, firms) with names. `ftm report` then runs in this
process (its wall time and peak memory are reported), and the page is opened `--loads` times
from a file:// URL in Debian's chromium with networking off; the time is from navigation to the
page's own "drawn" mark (after its first charts and tables), the median of the loads.

    .venv/bin/python benchmarks/report.py
    .venv/bin/python benchmarks/report.py --firms 1000 --themes 100 --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ftm import layout, sample
from ftm.quarters import Quarter
from ftm.report import report_quarters
from ftm.schemas import (
    FIRM_THEME_EXPOSURE,
    FIRMS,
    SENTENCES,
    THEME_NAMES,
    THEME_SENTENCES,
    THEMES,
    ChunkInfo,
    PrefetchManifest,
)
from ftm.settings import load_settings
from ftm.storage import Store

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/browser.py: chromium through Playwright
sys.path.insert(0, str(REPO / "benchmarks"))
from browser import CHROMIUM, opened  # noqa: E402, I001  (tests/browser.py, then benchmarks/themes.py)
from themes import machine  # noqa: E402

QUARTER = Quarter.parse("2021Q3")
FIRMS_PER_CHUNK = 200
GOAL_MB, GOAL_S = 15.0, 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=5000)
    parser.add_argument("--themes", type=int, default=200)
    parser.add_argument("--themes-per-firm", type=int, default=60)
    parser.add_argument("--sentences-per-firm", type=int, default=400)
    parser.add_argument("--loads", type=int, default=3, help="page loads to take the median of")
    parser.add_argument("--keep", type=Path, help="build the quarter here and keep it")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="ftm-bench-report-"))
    store = Store(str(folder))
    started = time.perf_counter()
    built = _write_quarter(store, args)
    log(f"built {args.firms:,} firms × {args.themes} themes in {time.perf_counter() - started:.0f} s")
    results: dict[str, Any] = {"machine": _machine(), "load_average_before": os.getloadavg(), **built}

    settings = load_settings(None, overrides={"storage": {"root": str(folder)}})
    started = time.perf_counter()
    result = report_quarters(settings, [QUARTER])
    results["report_s"] = time.perf_counter() - started
    results["report_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    page = folder / result.path
    results["page_mb"] = page.stat().st_size / 1e6
    results["page_load_s"] = _load(page, args.loads, "window.ftmReport.drawnMs")

    baseline = folder / "plotly-baseline.html"
    _plotly_page(store, baseline)
    results["baseline_mb"] = baseline.stat().st_size / 1e6
    results["baseline_load_s"] = _load(baseline, args.loads, "window.baselineDrawnMs")
    results["load_average_after"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(folder)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the synthetic quarter --------------------------------------------------------------------


def _sentence_pool() -> pa.Array:
    """Real sentences of the bundled sample, 40 to 300 characters."""
    found = []
    with gzip.open(sample.PATH, "rt") as lines:
        for line in lines:
            for component in json.loads(line)["components"]:
                found += [s for s in re.split(r"(?<=[.!?])\s+", component["text"]) if 40 <= len(s) <= 300]
    return pa.array(found, pa.string())


def _write_quarter(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    pool = _sentence_pool()
    n_firms, per_firm, n_themes = args.firms, args.sentences_per_firm, args.themes
    popularity = 1.0 / (np.arange(n_themes) + 5.0)
    popularity /= popularity.sum()
    firm_ids = [f"F{index:05d}" for index in range(n_firms)]
    members: dict[str, list[Any]] = {
        "theme_id": [],
        "firm_id": [],
        "sentence_id": [],
        "similarity": [],
        "primary": [],
    }
    chunks, firm_to_chunk = [], {}
    for start in range(0, n_firms, FIRMS_PER_CHUNK):
        firms = firm_ids[start : start + FIRMS_PER_CHUNK]
        ids = [firm for firm in firms for _ in range(per_firm)]
        sentence_ids = [f"{firm}/{i}" for firm in firms for i in range(per_firm)]
        table = pa.table(
            {
                "firm_id": ids,
                "firm_name": [f"Company {firm[1:]} Inc." for firm in ids],
                "permno": _permnos(ids),
                "gvkey": _gvkeys(ids),
                "transcript_id": ids,
                "transcript_collection": pa.nulls(len(ids), pa.string()),
                "earnings_call_date": _call_dates(ids),
                "quarter": [str(QUARTER)] * len(ids),
                "sentence_id": sentence_ids,
                "raw_text": pool.take(pa.array(rng.integers(0, len(pool), len(ids)))),
                "cleaned_text": pa.array([""] * len(ids)),
                "speaker_type": pa.nulls(len(ids), pa.string()),
                "position": pa.array(np.tile(np.arange(per_firm, dtype=np.int32), len(firms))),
            }
        )
        name = layout.chunk_name(len(chunks))
        size = store.write_table(f"{layout.prefetch_folder(QUARTER)}/{name}", table, SENTENCES)
        chunks.append(ChunkInfo(file=name, n_firms=len(firms), n_rows=len(ids), bytes=size))
        firm_to_chunk.update(dict.fromkeys(firms, name))
        for firm in firms:
            mine = rng.choice(n_themes, size=args.themes_per_firm, replace=False, p=popularity)
            weights = popularity[mine] / popularity[mine].sum()
            rows = np.flatnonzero(rng.random(per_firm) < 0.6)
            second = rows[rng.random(len(rows)) < 1 / 3]
            for chosen, primary in ((rows, True), (second, False)):  # a sentence's first theme is its primary
                members["theme_id"].append(rng.choice(mine, size=len(chosen), p=weights))
                members["firm_id"] += [firm] * len(chosen)
                members["sentence_id"] += [f"{firm}/{i}" for i in chosen]
                members["similarity"].append(rng.uniform(0.3, 0.9, len(chosen)))
                members["primary"] += [primary] * len(chosen)
    store.write_json(
        layout.prefetch_manifest(QUARTER),
        PrefetchManifest(
            quarter=str(QUARTER),
            n_firms=n_firms,
            n_calls=n_firms,
            n_chunks=len(chunks),
            n_sentences=n_firms * per_firm,
            firm_to_chunk=firm_to_chunk,
            chunks=chunks,
        ).to_json(),
    )
    frame = pa.table(
        {
            "theme_id": pa.array(np.concatenate(members["theme_id"]), pa.int32()),
            "firm_id": members["firm_id"],
            "sentence_id": members["sentence_id"],
            "similarity": pa.array(np.concatenate(members["similarity"]), pa.float32()),
            "primary": pa.array(members["primary"], pa.bool_()),
        }
    ).to_pandas()
    frame = frame.drop_duplicates(["theme_id", "sentence_id"]).sort_values(
        ["theme_id", "firm_id", "sentence_id"]
    )
    store.write_table(
        layout.theme_sentences(QUARTER), pa.Table.from_pandas(frame, THEME_SENTENCES, preserve_index=False)
    )
    # Per firm and theme, as reduce counts them: its sentences whose primary theme it is, and all.
    cells = (
        frame.groupby(["firm_id", "theme_id"])
        .agg(n_sentences=("primary", "sum"), n_sentences_any=("primary", "size"))
        .reset_index()
    )
    _write_reduce_tables(store, cells, frame, firm_ids, per_firm, n_themes)
    return {
        "firms": n_firms,
        "themes": n_themes,
        "sentences": n_firms * per_firm,
        "theme_sentences": len(frame),
        "cells": len(cells),
    }


def _write_reduce_tables(
    store: Store, cells: Any, frame: Any, firm_ids: list[str], per_firm: int, n_themes: int
) -> None:
    quarter = str(QUARTER)
    n = len(cells)
    exposure = pa.table(
        {
            "quarter": [quarter] * n,
            "firm_id": cells.firm_id.tolist(),
            "permno": _permnos(cells.firm_id),
            "gvkey": _gvkeys(cells.firm_id),
            "theme_id": pa.array(cells.theme_id, pa.int32()),
            "n_sentences": pa.array(cells.n_sentences, pa.int32()),
            "share": pa.array(cells.n_sentences / per_firm, pa.float64()),
            "n_sentences_any": pa.array(cells.n_sentences_any, pa.int32()),
        },
        schema=FIRM_THEME_EXPOSURE,
    )
    store.write_table(layout.firm_theme_exposure(quarter=QUARTER), exposure)
    themes_of_firm = cells.groupby("firm_id").size()
    firms = pa.table(
        {
            "quarter": [quarter] * len(firm_ids),
            "firm_id": firm_ids,
            "firm_name": [f"Company {firm[1:]} Inc." for firm in firm_ids],
            "permno": _permnos(firm_ids),
            "gvkey": _gvkeys(firm_ids),
            "earnings_call_date": _call_dates(firm_ids),
            "n_sentences": pa.array([per_firm] * len(firm_ids), pa.int32()),
            "n_themes": pa.array(themes_of_firm.reindex(firm_ids, fill_value=0), pa.int32()),
            "status": ["exposed"] * len(firm_ids),
            "reason": pa.nulls(len(firm_ids), pa.string()),
        },
        schema=FIRMS,
    )
    store.write_table(layout.theme_firms(QUARTER), firms)
    words = _words()
    rng = np.random.default_rng(1)
    keywords = [[str(word) for word in rng.choice(words, 10, replace=False)] for _ in range(n_themes)]
    firms_in = (
        cells[cells.n_sentences_any >= 2].groupby("theme_id").size().reindex(range(n_themes), fill_value=0)
    )
    primary = frame[frame.primary].groupby("theme_id").size().reindex(range(n_themes), fill_value=0)
    sentences_in = frame.groupby("theme_id").size().reindex(range(n_themes), fill_value=0)
    kinds = ["reporting" if theme % 6 == 5 else "theme" for theme in range(n_themes)]
    themes = pa.table(
        {
            "theme_id": pa.array(range(n_themes), pa.int32()),
            "quarter": [quarter] * n_themes,
            "kind": kinds,
            "keywords": keywords,
            "representation": ["_".join(words[:4]) for words in keywords],
            # No reference quarters, as for a first quarter: no salience or ordinary attention.
            "salience": pa.nulls(n_themes, pa.float32()),
            "attention_share": pa.array(primary / (len(firm_ids) * per_firm), pa.float32()),
            "baseline_share": pa.nulls(n_themes, pa.float32()),
            "share_of_firms": pa.array(firms_in / len(firm_ids), pa.float32()),
            "n_firms": pa.array(firms_in, pa.int32()),
            "n_topics": pa.array([0] * n_themes, pa.int32()),
            "n_sentences": pa.array(sentences_in, pa.int32()),
            "number_share": pa.nulls(n_themes, pa.float32()),
            "evenness": pa.nulls(n_themes, pa.float32()),
            "ordinary_similarity": pa.nulls(n_themes, pa.float32()),
            "representative_sentences": pa.nulls(n_themes, pa.list_(pa.string())),
            "centroid": pa.nulls(n_themes, pa.list_(pa.float32(), 8)),
        }
    )
    store.write_table(layout.themes(QUARTER), themes)
    names = pa.table(
        {
            "theme_id": pa.array(range(n_themes), pa.int32()),
            "quarter": [quarter] * n_themes,
            "name": [" ".join(words[:3]).title() + " Outlook" for words in keywords],
            "description": [f"Firms discussing {', '.join(words[:5])}." for words in keywords],
            "source": ["llm:benchmark"] * n_themes,
        },
        schema=THEME_NAMES,
    )
    store.write_table(layout.theme_names(QUARTER), names)
    assert THEMES.names == themes.column_names


def _permnos(firm_ids: Any) -> pa.Array:
    """Each synthetic firm's PERMNO (F00042 → 10042), as benchmarks/reduce.py gives them."""
    return pa.array([10_000 + int(firm[1:]) for firm in firm_ids], pa.int64())


def _gvkeys(firm_ids: Any) -> list[str]:
    return [f"{100_000 + int(firm[1:]):06d}" for firm in firm_ids]


def _call_dates(firm_ids: Any) -> pa.Array:
    return pa.array([date(2021, 8, 1 + int(firm[1:]) % 28) for firm in firm_ids])


def _words() -> list[str]:
    text = " ".join(_sentence_pool().to_pylist()[:5000]).lower()
    return sorted({word for word in re.findall(r"[a-z]{5,}", text)})


# --- the baseline and the browser -------------------------------------------------------------


def _plotly_page(store: Store, path: Path) -> None:
    """plotly's own self-contained page of the same bar chart: the investment themes by firms."""
    import plotly.graph_objects as go

    themes = store.read_table(layout.themes(QUARTER)).to_pandas()
    investment = themes[themes.kind == "theme"].sort_values("n_firms", ascending=False)
    figure = go.Figure(go.Bar(x=investment.n_firms, y=investment.representation, orientation="h"))
    figure.update_layout(height=22 * len(investment) + 70, yaxis={"autorange": "reversed"})
    drawn = "window.baselineDrawnMs = performance.now(); window.ftmReport = {ready: true};"
    figure.write_html(path, include_plotlyjs=True, full_html=True, post_script=drawn)


def _load(page: Path, loads: int, drawn: str) -> float:
    """The median seconds from navigation to `drawn` over `loads` fresh browsers."""
    times = []
    for _ in range(loads):
        with opened(page) as browser:
            if browser.errors or set(browser.requests) != {page.resolve().as_uri()}:
                raise SystemExit(f"{page}: console errors {browser.errors} or requests {browser.requests}")
            times.append(browser.page.evaluate(drawn) / 1000)
    return statistics.median(times)


def _machine() -> dict[str, Any]:
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    return {**machine(), "browser": version}


def _print(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none of note'}")
    print(f"Browser: {m['browser']}, headless, no GPU")
    print(f"Load average: {r['load_average_before'][0]:.2f} before, {r['load_average_after'][0]:.2f} after")
    print(
        f"Quarter: {r['firms']:,} firms × {r['themes']} themes, {r['sentences']:,} sentences, "
        f"{r['theme_sentences']:,} theme sentences, {r['cells']:,} firm × theme cells"
    )
    print(f"ftm report: {r['report_s']:.1f} s, peak memory {r['report_peak_rss_mb']:,.0f} MB")
    print(f"{'page':<34}{'MB':>8}{'drawn in s':>12}")
    print(f"{'ftm report':<34}{r['page_mb']:>8.1f}{r['page_load_s']:>12.2f}")
    print(f"{'plotly bar chart alone (baseline)':<34}{r['baseline_mb']:>8.1f}{r['baseline_load_s']:>12.2f}")
    print(
        f"ratio ftm / baseline: {r['page_mb'] / r['baseline_mb']:.2f}× the weight, "
        f"{r['page_load_s'] / r['baseline_load_s']:.2f}× the time; goals: under {GOAL_MB:.0f} MB "
        f"({'met' if r['page_mb'] < GOAL_MB else 'NOT met'}), under {GOAL_S:.0f} s "
        f"({'met' if r['page_load_s'] < GOAL_S else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
