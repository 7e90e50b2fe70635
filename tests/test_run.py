"""`ftm run RANGE` end to end on real transcripts: a few calls of the bundled sample (2016Q4) and
the same calls of some of those firms three months earlier (2016Q3), through prefetch, the real
map on local workers, reduce, name and trends; then the same command killed with SIGKILL (its
whole process group, workers included) and run again, which must end with identical files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ftm import layout
from ftm.cli import main
from run_inputs import CONFIG, N_FIRMS, QUARTERS, RANGE, write_input

# What a run writes that is data, not bookkeeping: runs, progress and manifests carry times.
OUTPUTS = ("prefetch", "intermediate", "themes", "names", "trends")


def _args(folder: Path, root: Path) -> list[str]:
    return [
        "--config", str(folder / "ftm.toml"), "run", RANGE, "--input", str(folder / "input.jsonl.gz"),
        "--root", str(root), "--batch-size", str(N_FIRMS), "--workers", "1",
    ]  # fmt: skip


def _outputs(root: Path) -> dict[str, Any]:
    """Every data file's bytes; firm topics as their rows less `processing_timestamp`, the one
    column that says when, not what."""
    found: dict[str, Any] = {}
    for folder in OUTPUTS:
        for path in sorted((root / folder).rglob("*.parquet")):
            name = str(path.relative_to(root))
            if "/_" in name:  # staging and caches
                continue
            if name.startswith("intermediate/firm-topics/"):
                found[name] = pq.read_table(path).drop(["processing_timestamp"]).to_pylist()
            else:
                found[name] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("run")
    (folder / "ftm.toml").write_text(CONFIG)
    write_input(folder / "input.jsonl.gz")
    root = folder / "root"
    assert main(_args(folder, root)) == 0
    return {"folder": folder, "root": root, "outputs": _outputs(root)}


def test_a_range_runs_from_transcripts_to_trends_with_every_quarters_files(finished: dict[str, Any]) -> None:
    root = finished["root"]
    for quarter in QUARTERS:
        for path in (layout.prefetch_manifest(quarter), layout.themes(quarter), layout.theme_names(quarter)):
            assert (root / path).exists(), path
    panel = pq.read_table(root / layout.firm_theme_quarter(RANGE)).to_pandas()
    assert set(panel.quarter) == {"2016Q3", "2016Q4"}
    assert panel.groupby("quarter").firm_id.nunique().to_dict() == {"2016Q3": N_FIRMS, "2016Q4": N_FIRMS}
    assert panel.earnings_call_date.notna().all()
    assert ((panel.positive + panel.negative + panel.uncertainty) > 0).any()
    lineages = pq.read_table(root / layout.lineages(RANGE)).to_pandas()
    themes = {q: pq.read_table(root / layout.themes(q)).num_rows for q in QUARTERS}
    assert len(lineages) == sum(themes.values())
    # The two firms in both quarters said the same words both times: some subjects carry on.
    assert (lineages.groupby("lineage_id").quarter.nunique() == 2).any()
    trends = pq.read_table(root / layout.trends(RANGE)).to_pandas()
    assert len(trends) == lineages.lineage_id.nunique() * 2
    last = trends[trends.quarter == "2016Q4"]
    assert set(last.trend.dropna()) <= {"emerging", "fading", "steady"}
    assert last.momentum.notna().all() and trends[trends.quarter == "2016Q3"].momentum.isna().all()


def test_a_run_killed_with_sigkill_then_run_again_ends_with_identical_files(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    folder, root = finished["folder"], tmp_path / "root"
    command = [sys.executable, "-m", "ftm", *_args(folder, root)]
    child = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    # Killed in the middle of the first quarter's map: a part file is there, the batch is not done.
    parts = root / layout.firm_topics_folder(QUARTERS[0])
    deadline = time.monotonic() + 600
    while not (parts.exists() and any(parts.glob("*.parquet"))):
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    # Killed before the end. Usually mid-map of the first quarter; on a loaded machine this loop
    # may look late, and four small firms map in seconds, so only the end is certain not reached.
    assert not (root / layout.trends(RANGE)).exists()
    assert main(_args(folder, root)) == 0
    outputs = _outputs(root)
    assert outputs.keys() == finished["outputs"].keys()
    different = [path for path, data in outputs.items() if data != finished["outputs"][path]]
    assert not different, different


def test_a_run_over_a_reversed_range_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "2016Q4..2016Q3", "--root", str(tmp_path)]) == 2
    assert "reversed" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_watch_over_the_range_shows_each_quarters_latest_run_ended(
    finished: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    root = str(finished["root"])
    capsys.readouterr()
    assert main(["watch", RANGE, "--root", root, "--json"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["quarters"] == [str(q) for q in QUARTERS] and snapshot["ended"]
    assert snapshot["exit_code"] == 0
    for entry, quarter in zip(snapshot["runs"], QUARTERS, strict=True):
        run = entry["run"]
        assert entry["quarter"] == str(quarter) and run["quarter"] == str(quarter)
        assert run["ended"] and run["totals"]["firms_done"] == N_FIRMS
    # Without a terminal: a line per quarter, then how the range ended; a quarter with no run is
    # shown as such and does not keep the watch waiting.
    assert main(["watch", "2016Q2..2016Q4", "--root", root, "--interval", "0.2"]) == 0
    err = capsys.readouterr().err
    assert "2016Q2 not submitted" in err
    for quarter in QUARTERS:
        assert f"{quarter} run {quarter}-" in err
    assert "not submitted: 2016Q2" in err


def test_watch_over_a_range_with_no_runs_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["watch", "2016Q3..2016Q4", "--root", str(tmp_path)]) == 2
    assert "ftm run 2016Q3..2016Q4" in capsys.readouterr().err
    assert main(["watch", "2016Q4..2016Q3", "--root", str(tmp_path)]) == 2
    assert "reversed" in capsys.readouterr().err


def test_the_run_ends_with_the_ranges_report_a_line_chart_per_theme(finished: dict[str, Any]) -> None:
    """The page `ftm run` wrote last, in chromium: every investment theme of each quarter, chosen
    in the theme table, shows its lineage's measured share of firms by quarter as a line chart."""
    from browser import opened, plotted

    root = finished["root"]
    path = root / layout.report(RANGE)
    trends = pq.read_table(root / layout.trends(RANGE)).to_pandas()
    share = trends.pivot(index="lineage_id", columns="quarter", values="share_of_firms") * 100
    with opened(path) as browser:
        page = browser.page
        assert browser.errors == [] and set(browser.requests) == {path.resolve().as_uri()}
        assert page.locator("#trend-table tbody tr").count() == len(share)
        for quarter in QUARTERS:
            page.select_option("#quarter-select", label=str(quarter))
            themes = pq.read_table(root / layout.themes(quarter)).to_pandas()
            lineage = trends[trends.quarter == str(quarter)].dropna(subset=["theme_id"])
            lineage = lineage.set_index(lineage.theme_id.astype(int)).lineage_id
            investment = themes[themes.kind == "theme"]
            assert page.locator("#theme-bars g.point").count() == len(investment)
            page.locator("#themes-section summary").click()  # the table under the chart
            rows = page.locator("#theme-table tbody tr")
            assert rows.count() == len(investment)
            # A quarter of four firms can have no theme of kind theme (its themes spread over the
            # firms evenly, so routine): then the routine and reporting table's rows are chosen.
            if not len(investment):
                rows = page.locator("#reporting-table tbody tr")
                assert rows.count() == len(themes) > 0
            for index in range(rows.count()):
                rows.nth(index).click()
                (line,) = plotted(page, "theme-line")
                theme = page.evaluate("window.ftmReport.chosenTheme()")
                expected = share.loc[lineage[theme]]
                assert line[0] == [str(q) for q in QUARTERS]
                assert line[1] == pytest.approx(expected[line[0]].tolist(), abs=0.01)
            page.locator("#themes-section summary").click()
        # The trend table leads with the investment themes rising most in the last quarter, with
        # the momentum trends.parquet has.
        cells = page.locator("#trend-table tbody tr").evaluate_all(
            "rows => rows.map(row => [...row.cells].map(cell => cell.innerText))"
        )
        kinds = [row[1] for row in cells]
        assert kinds == sorted(kinds, key=lambda kind: kind != "theme")
        shown = [float(row[2].removesuffix(" pts")) for row in cells if row[1] == "theme"]
        assert shown == sorted(shown, reverse=True)
        momentum = trends[trends.quarter == "2016Q4"].momentum * 100
        assert sorted(float(row[2].removesuffix(" pts")) for row in cells) == pytest.approx(
            sorted(momentum.round(1)), abs=0.051
        )
        # A row of the trend table shows its lineage's latest theme.
        row = page.locator("#trend-table tbody tr").nth(0)
        name = row.locator("td").nth(0).inner_text()
        row.click()
        assert name in page.inner_text("#theme-detail h2")
        assert browser.errors == []
