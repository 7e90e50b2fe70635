"""`ftm report --measure NAME`: the page of the subject tests/measure_inputs.py measured (the planted
Quillon Freight Safety Act, found among real firms of the bundled sample by `ftm measure`), opened
in a real headless chromium from a file:// URL with networking off (tests/browser.py). The page's
ranking, series and evidence are checked against the measure's own files.

A second quarter is made from the measured one by taking its most exposed firm's sentences away,
and all but one of the third's (the map and measure of a second real quarter would cost a
minute), so that the series, the quarter selector and a subset of quarters have two quarters that
differ to tell apart, and a firm with one sentence that is not exposed."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from browser import opened, plotted
from ftm import layout
from ftm.cli import main
from ftm.report import measure as report_measure
from ftm.report.content import clip
from ftm.schemas import MEASURE_FIRM_QUARTER, MEASURE_SENTENCES, pandas_integers
from ftm.storage import Store
from measure_inputs import DESCRIPTION, NAME, measured
from reduce_inputs import QUARTER

LATER = QUARTER.next()
HOSTILE = "</script><script>window.hacked = 1</script><!-- <b>bold</b>"


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    source, config, _ = measured(tmp_path_factory)
    folder = tmp_path_factory.mktemp("measure-report")
    root = folder / "root"
    shutil.copytree(source, root)
    out = folder / "copies"
    out.mkdir()
    code, summary = _report(config, "--measure", NAME, "--root", str(root), "--out", str(out), "--json")
    assert code == 0
    measure = root / layout.measure_folder(NAME)
    return {
        "root": root,
        "config": config,
        "summary": summary,
        "page": root / layout.measure_report(NAME),
        "out": out / f"measure-{NAME}.html",
        "panel": pd.read_parquet(measure / "firm_quarter.parquet"),
        "evidence": pd.read_parquet(measure / "sentences.parquet"),
        "subject": json.loads((measure / "subject.json").read_text()),
    }


@pytest.fixture(scope="module")
def two_quarters(reported: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The measure with LATER added: QUARTER's rows without the most exposed firm's sentences, the
    third's closest sentence alone, and one of the second's replaced by markup that must be shown,
    never run."""
    root = tmp_path_factory.mktemp("two-quarters") / "root"
    shutil.copytree(reported["root"], root)
    panel, evidence = reported["panel"], reported["evidence"]
    first, second, third = _ranked(panel).firm_id.iloc[:3]
    assert panel.set_index("firm_id").n_sentences[third] >= 2
    later = panel.assign(quarter=str(LATER))
    gone, one = later.firm_id == first, later.firm_id == third
    later.loc[gone, ["n_sentences", "positive", "negative", "uncertainty"]] = 0
    later.loc[gone, "share"], later.loc[gone, "net_tone"] = 0.0, np.nan
    later.loc[one, "share"] = later.share[one] / later.n_sentences[one]
    later.loc[one, "n_sentences"] = 1
    said = evidence[evidence.firm_id != first].sort_values("similarity", ascending=False)
    said = said[(said.firm_id != third) | ~said.firm_id.duplicated()]
    said = said.sort_index().assign(quarter=str(LATER)).reset_index(drop=True)
    said.loc[said.index[said.firm_id == second][0], "text"] = HOSTILE
    store = Store(str(root))
    both = pa.Table.from_pandas(pd.concat([panel, later]), MEASURE_FIRM_QUARTER, preserve_index=False)
    store.write_table(
        layout.measure_firm_quarter(NAME), both.replace_schema_metadata(pandas_integers("permno"))
    )
    sentences = pd.concat([evidence, said])
    store.write_table(
        layout.measure_sentences(NAME),
        pa.Table.from_pandas(sentences, MEASURE_SENTENCES, preserve_index=False),
    )
    [calibration] = reported["subject"]["quarters"]
    later_calibration = {**calibration, "quarter": str(LATER), "n_selected": len(said)}
    store.write_json(
        layout.measure_subject(NAME), {**reported["subject"], "quarters": [calibration, later_calibration]}
    )
    code, _ = _report(reported["config"], "--measure", NAME, "--root", str(root))
    assert code == 0
    return {
        "root": root,
        "config": reported["config"],
        "page": root / layout.measure_report(NAME),
        "panel": pd.concat([panel, later], ignore_index=True),
        "first": first,
        "second": second,
    }


def test_the_page_goes_to_the_storage_root_and_to_out_and_says_what_it_holds(
    reported: dict[str, Any],
) -> None:
    page, summary, panel = reported["page"], reported["summary"], reported["panel"]
    assert page.is_file() and reported["out"].read_bytes() == page.read_bytes()
    text = page.read_text(encoding="utf-8")
    assert "<script src" not in text and "<link" not in text and "Plotly" in text
    assert summary["path"] == f"reports/measure-{NAME}.html" and summary["location"] == str(page)
    assert summary["quarters"] == [str(QUARTER)] and summary["n_firms"] == panel.firm_id.nunique()
    assert summary["n_exposed"] == int((panel.n_sentences >= 2).sum())


def test_firms_are_ranked_by_their_share_as_the_panel_has_it(reported: dict[str, Any]) -> None:
    panel = reported["panel"]
    expected = _ranked(panel[panel.n_sentences > 0])
    with opened(reported["page"]) as browser:
        page = browser.page
        assert browser.errors == []
        assert set(browser.requests) == {reported["page"].resolve().as_uri()}
        shown = _rows(page, "#ranking-table")
        count = page.inner_text("#ranking-count")
    assert [row[1].split(" (")[0] for row in shown] == expected.firm_id.tolist()
    assert [row[0] for row in shown] == [str(rank) for rank in range(1, len(expected) + 1)]
    assert [int(row[5]) for row in shown] == expected.n_sentences.tolist()
    # Shares to the page's two decimals of a percent; the names come from the prefetch.
    assert [float(row[6].rstrip("%")) for row in shown] == pytest.approx(
        (expected.share * 100).tolist(), abs=0.0051
    )
    assert all(" (" in row[1] for row in shown)
    exposed = int((panel.n_sentences >= 2).sum())
    assert (
        f"{len(expected)} of {len(panel)} firms with a sentence about it, {exposed} with two or more" in count
    )


def test_the_series_is_the_share_of_firms_exposed_and_their_mean_share(two_quarters: dict[str, Any]) -> None:
    panel = two_quarters["panel"]
    by_quarter = panel.groupby("quarter")
    exposed = by_quarter.n_sentences.apply(lambda n: (n >= 2).mean() * 100)
    mean_share = by_quarter.share.mean() * 100
    assert exposed[str(LATER)] < exposed[str(QUARTER)]  # the quarters differ, so the test can fail
    with opened(two_quarters["page"]) as browser:
        assert browser.errors == []
        (firms_exposed, mean) = plotted(browser.page, "series-chart")
    assert firms_exposed[0] == mean[0] == [str(QUARTER), str(LATER)]
    assert firms_exposed[1] == pytest.approx(exposed.tolist(), abs=1e-3)
    assert mean[1] == pytest.approx(mean_share.tolist(), abs=1e-3)


def test_the_quarter_selector_ranks_the_chosen_quarters_firms(two_quarters: dict[str, Any]) -> None:
    panel = two_quarters["panel"]
    ranking = {
        quarter: _ranked(rows[rows.n_sentences > 0]).firm_id.tolist()
        for quarter, rows in panel.groupby("quarter")
    }
    with opened(two_quarters["page"]) as browser:
        page = browser.page
        assert page.evaluate("window.ftmReport.quarter()") == str(LATER)  # the latest by default
        latest = [row[1].split(" (")[0] for row in _rows(page, "#ranking-table")]
        page.select_option("#quarter-select", "0")
        earlier = [row[1].split(" (")[0] for row in _rows(page, "#ranking-table")]
        assert page.evaluate("window.ftmReport.quarter()") == str(QUARTER)
    assert latest == ranking[str(LATER)] and earlier == ranking[str(QUARTER)]
    assert earlier[0] == two_quarters["first"] not in latest


def test_a_subset_of_the_measures_quarters_is_reported_alone(
    two_quarters: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(two_quarters["root"], root)
    code, summary = _report(
        two_quarters["config"], "--measure", NAME, str(QUARTER), "--root", str(root), "--json"
    )
    assert code == 0 and summary["quarters"] == [str(QUARTER)]
    with opened(root / layout.measure_report(NAME)) as browser:
        (series, _) = plotted(browser.page, "series-chart")
        top = _rows(browser.page, "#ranking-table")[0][1]
    assert series[0] == [str(QUARTER)] and top.startswith(two_quarters["first"])


def test_a_firm_found_by_permno_shows_its_closest_sentences(reported: dict[str, Any]) -> None:
    panel, evidence = reported["panel"], reported["evidence"]
    linked = panel[panel.permno.notna() & (panel.n_sentences > 0)]
    firm = linked.sort_values(["n_sentences", "firm_id"], ascending=[False, True]).iloc[0]
    said = evidence[evidence.firm_id == firm.firm_id].sort_values(
        ["similarity", "sentence_id"], ascending=[False, True]
    )
    with opened(reported["page"]) as browser:
        page = browser.page
        page.fill("#firm-search", str(firm.permno))
        page.keyboard.press("Enter")
        detail = page.locator("#firm-detail")
        heading = detail.locator("h2").inner_text()
        quotes = detail.locator("blockquote").evaluate_all(
            "nodes => nodes.map((node) => node.firstChild.textContent)"
        )
        cites = detail.locator("blockquote cite").all_inner_texts()
        text = detail.inner_text()
        assert browser.errors == []
    assert heading.startswith(firm.firm_id) and f"PERMNO {firm.permno}" in text
    assert quotes == [clip(text) for text in said.text.head(5)] and len(quotes) >= 2
    assert [cite.rsplit("similarity ", 1)[1] for cite in cites] == [
        f"{value:.3f}" for value in said.similarity.head(5)
    ]


def test_the_evidence_is_capped_to_the_most_exposed_firms_closest_sentences(
    reported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's budget of sentences smaller than one per firm with any: each of the most exposed
    firms' closest sentence, in the ranking's order, and no more than the budget."""
    panel, evidence = reported["panel"], reported["evidence"]
    talking = _ranked(panel[panel.n_sentences > 0])
    budget = len(talking) - 2
    assert budget >= 5
    monkeypatch.setattr(report_measure, "EVIDENCE_BUDGET", budget)
    store = Store(str(reported["root"]))
    document = report_measure.gather_measure(store, report_measure.read_subject(store, NAME), [QUARTER])
    [page] = document["quarters"]
    quoted = [document["firms"]["id"][firm] for firm in page["evidence"]["firm"]]
    assert quoted == talking.firm_id.head(budget).tolist()
    closest = evidence.sort_values(["similarity", "sentence_id"], ascending=[False, True])
    closest = closest.drop_duplicates("firm_id").set_index("firm_id")
    assert page["evidence"]["text"] == [clip(closest.text[firm]) for firm in quoted]
    # Within the real budget: every sentence of every firm (three at most here, under five a firm).
    monkeypatch.undo()
    full = report_measure.gather_measure(store, report_measure.read_subject(store, NAME), [QUARTER])
    assert len(full["quarters"][0]["evidence"]["firm"]) == len(evidence)


def test_the_page_says_what_was_measured_and_how(reported: dict[str, Any]) -> None:
    subject = reported["subject"]
    [calibration] = subject["quarters"]
    with opened(reported["page"]) as browser:
        header = browser.page.inner_text("header")
        method = browser.page.inner_text("#method")
        quarters = _rows(browser.page, "#quarter-table")
    assert DESCRIPTION in header and f"ftm measure {NAME}" in header
    assert subject["model"] in method and subject["subject_hash"] in method
    assert all(f"{key} {value}" in method for key, value in subject["embedding"].items())
    assert quarters == [
        [
            str(QUARTER),
            f"{calibration['threshold']:.3f}",
            f"{calibration['n_selected']:,} of {calibration['n_sentences']:,}",
            f"{calibration['n_firms']:,}",
            f"{int((reported['panel'].n_sentences >= 2).sum()):,}",
            f"{(reported['panel'].n_sentences >= 2).mean() * 100:.1f}%",
            f"{reported['panel'].share.mean() * 100:.2f}%",
        ]
    ]


def test_a_sentence_with_markup_is_shown_as_text_and_never_run(two_quarters: dict[str, Any]) -> None:
    with opened(two_quarters["page"]) as browser:
        page = browser.page
        page.fill("#firm-search", two_quarters["second"])
        page.keyboard.press("Enter")
        assert browser.errors == []
        assert page.evaluate("window.hacked === undefined")
        assert HOSTILE in page.inner_text("#firm-detail")


def test_a_measure_never_made_is_a_usage_error_that_says_what_to_run(
    reported: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    root = str(reported["root"])
    assert main(["report", "--measure", "tariffs", "--root", root]) == 2
    err = capsys.readouterr().err
    message = " ".join(err.split())
    assert "no measure 'tariffs'" in message and f"(measured here: {NAME})" in message
    assert f'ftm measure "DESCRIPTION" QUARTERS --name tariffs --root {root}' in message
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_quarter_not_in_the_measure_is_a_usage_error_with_the_command_that_adds_it(
    reported: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    root = str(reported["root"])
    assert main(["report", "--measure", NAME, str(LATER), "--root", root]) == 2
    err = capsys.readouterr().err
    message = " ".join(err.split())
    assert f"{LATER} is not in the measure '{NAME}' (its quarters: {QUARTER})" in message
    assert f"ftm measure '{DESCRIPTION}' {QUARTER}..{LATER} --name {NAME} --root {root}" in message
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_without_quarters_or_a_measure_is_a_usage_error(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    assert main(["report", "--root", str(tmp_path)]) == 2
    assert "ftm report --measure NAME" in capsys.readouterr().err


def _report(config: Path, *args: str) -> tuple[int, dict[str, Any] | None]:
    """`ftm report ARGS` in process: the exit code, and the --json summary where asked for."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config", str(config), "report", *args])
    return code, json.loads(out.getvalue()) if "--json" in args and code == 0 else None


def _ranked(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel by exposure: the largest share first, then more sentences, then firm id."""
    return panel.sort_values(["share", "n_sentences", "firm_id"], ascending=[False, False, True])


def _rows(page: Any, where: str) -> list[list[str]]:
    script = "(rows) => rows.map((row) => Array.from(row.cells, (cell) => cell.innerText.trim()))"
    return page.locator(f"{where} tbody tr").evaluate_all(script)
