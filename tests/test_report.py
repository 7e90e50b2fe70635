"""`ftm report`: the page of a reduced and named quarter of real firms (tests/reduce_inputs.py),
opened in a real headless chromium from a file:// URL with networking off (tests/browser.py).
The range's page is tested in tests/test_run.py, on the range `ftm run` made."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from browser import opened, plotted
from ftm import layout, read_names
from ftm.cli import main
from ftm.schemas import FIRM_THEME_EXPOSURE, THEME_NAMES, THEME_SENTENCES, THEMES
from ftm.storage import Store
from reduce_inputs import QUARTER, mapped


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    source, config, given = mapped(tmp_path_factory)
    folder = tmp_path_factory.mktemp("report")
    root = folder / "root"
    shutil.copytree(source, root)
    base = ["--config", str(config)]
    assert main([*base, "reduce", "--quarter", str(QUARTER), "--root", str(root)]) == 0
    assert main([*base, "name", "--quarter", str(QUARTER), "--root", str(root)]) == 0
    out = folder / "copy.html"
    assert main([*base, "report", str(QUARTER), "--root", str(root), "--out", str(out)]) == 0
    store = Store(str(root))
    return {
        "root": root,
        "config": config,
        "given": given,
        "page": root / layout.report(str(QUARTER)),
        "out": out,
        "themes": store.read_table(layout.themes(QUARTER), THEMES).to_pandas(),
        "names": read_names(store, QUARTER, "theme").to_pandas().set_index("theme_id"),
        "exposure": store.read_table(layout.firm_theme_exposure(QUARTER), FIRM_THEME_EXPOSURE).to_pandas(),
        "members": store.read_table(layout.theme_sentences(QUARTER), THEME_SENTENCES).to_pandas(),
    }


def test_the_report_is_written_to_the_storage_root_and_to_out_alike(reported: dict[str, Any]) -> None:
    page, out = reported["page"], reported["out"]
    assert page.is_file() and out.read_bytes() == page.read_bytes()
    text = page.read_text(encoding="utf-8")
    # Self-contained: no script or style is loaded from anywhere.
    assert "<script src" not in text and "<link" not in text
    assert "Plotly" in text and len(text) > 1_000_000  # plotly.js is inlined, not linked


def test_the_quarters_report_opens_offline_with_a_bar_per_investment_theme(reported: dict[str, Any]) -> None:
    themes, names = reported["themes"], reported["names"]
    investment = themes[themes.kind == "theme"].sort_values("theme_id")  # the default order: salience
    assert len(investment) >= 3 and (themes.kind != "theme").any()
    with opened(reported["page"]) as browser:
        page = browser.page
        assert browser.errors == []
        assert set(browser.requests) == {reported["page"].resolve().as_uri()}
        # Drawn bars, as plotly drew them in the SVG, one per theme of kind theme.
        assert page.locator("#theme-bars g.point").count() == len(investment)
        (bars,) = plotted(page, "theme-bars")
        assert bars[0] == investment.n_firms.tolist()
        assert [label.split(". ", 1)[1] for label in bars[1]] == [
            _clipped(names.loc[theme, "name"]) for theme in investment.theme_id
        ]
        # Routine and reporting language apart, every theme of those kinds in its own table.
        reporting = page.locator("#reporting-table tbody tr")
        assert reporting.count() == int((themes.kind != "theme").sum())
        # Ordered by firms on request, the same bars in another order.
        page.select_option("#theme-order", "firms")
        (by_firms,) = plotted(page, "theme-bars")
        assert by_firms[0] == sorted(investment.n_firms.tolist(), reverse=True)
        page.select_option("#theme-order", "salience")
        # The first investment theme is shown, with its firms: one row per firm with a sentence in it.
        first = int(investment.theme_id.iloc[0])
        expected = reported["exposure"][reported["exposure"].theme_id == first]
        assert page.locator("#theme-detail tbody tr").count() == len(expected)
        assert names.loc[first, "name"] in page.inner_text("#theme-detail h2")


def test_a_themes_firm_counts_agree_and_each_says_what_it_counts(reported: dict[str, Any]) -> None:
    """One definition of a theme's firms (the panel's: two sentences or more in it), and the table
    of every firm with a sentence in it names its own count beside that one."""
    themes, exposure = reported["themes"], reported["exposure"]
    talking_per_theme = exposure[exposure.n_sentences_any >= 2].groupby("theme_id").size()
    assert talking_per_theme.reindex(themes.theme_id, fill_value=0).tolist() == themes.n_firms.tolist()
    first = themes[themes.kind == "theme"].sort_values("theme_id").iloc[0]  # the one shown first
    rows = exposure[exposure.theme_id == first.theme_id]
    talking = int(first.n_firms)
    with opened(reported["page"]) as browser:
        detail = browser.page.inner_text("#theme-detail")
    assert f"Talked about by {talking} firms (two sentences or more each)" in detail
    assert f"Every firm with a sentence in it ({len(rows)}; the panel's rows, {talking} of them" in detail


def test_a_themes_firms_sort_by_a_column_when_its_heading_is_clicked(reported: dict[str, Any]) -> None:
    with opened(reported["page"]) as browser:
        page = browser.page
        heading = page.locator("#theme-detail th", has_text="Sentences")
        heading.click()  # numbers sort largest first
        first = _column(page, "#theme-detail", 4)
        heading.click()
        second = _column(page, "#theme-detail", 4)
        assert first == sorted(first, reverse=True) and second == sorted(second)
        assert len(first) >= 2 and first != second


def test_the_firm_search_finds_a_known_firm_with_its_themes_and_evidence(reported: dict[str, Any]) -> None:
    planted = next(ticker for ticker, given in reported["given"].items() if given["planted"])
    exposure, names, themes = reported["exposure"], reported["names"], reported["themes"]
    cells = exposure[exposure.firm_id == planted]
    with opened(reported["page"]) as browser:
        page = browser.page
        page.fill("#firm-search", planted.lower())  # matched whatever the case
        page.keyboard.press("Enter")
        detail = page.locator("#firm-detail")
        assert planted in detail.locator("h2").inner_text()
        shown = detail.locator("tbody tr td:first-child").all_inner_texts()
        exposures = detail.locator("tbody tr td:nth-child(4)").all_inner_texts()
        # Each of its themes once, with its share of the firm's sentences as the panel has it
        # (to the page's one decimal of a percent).
        on_page = sorted((name, float(share[:-1])) for name, share in zip(shown, exposures, strict=True))
        panel = sorted((names.loc[int(c.theme_id), "name"], c.share * 100) for c in cells.itertuples())
        assert [name for name, _ in on_page] == [name for name, _ in panel]
        assert [share for _, share in on_page] == pytest.approx([share for _, share in panel], abs=0.051)
        # The planted subject is one of them, and a quoted sentence says it.
        planted_theme = _planted_theme(reported)
        assert names.loc[planted_theme, "name"] in shown
        quotes = detail.locator("blockquote").all_inner_texts()
        assert any("Quillon" in quote for quote in quotes)
        assert len(quotes) >= min(3, int((themes.kind == "theme").sum()))
        assert browser.errors == []


def test_a_screenshot_of_the_report_is_not_blank(reported: dict[str, Any]) -> None:
    with opened(reported["page"]) as browser:
        shot = browser.page.screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1280)
    # A blank page has variance 0; text, bars and axes give thousands of dark pixels on white.
    assert pixels.var() > 200
    assert (pixels < 128).mean() > 0.02


def test_a_name_with_markup_is_shown_as_text_and_never_run(reported: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(reported["root"], root)
    store = Store(str(root))
    names = read_names(store, QUARTER, "theme")
    hostile = "</script><script>window.hacked = 1</script><!-- <b>bold</b>"
    investment = reported["themes"].query("kind == 'theme'")
    first = int(investment.theme_id.min())
    column = [
        hostile if theme == first else name
        for theme, name in zip(
            names.column("theme_id").to_pylist(), names.column("name").to_pylist(), strict=True
        )
    ]
    names = names.set_column(names.schema.get_field_index("name"), "name", pa.array(column, pa.string()))
    store.write_table(layout.theme_names(QUARTER), names, THEME_NAMES)
    assert main(["--config", str(reported["config"]), "report", str(QUARTER), "--root", str(root)]) == 0
    with opened(root / layout.report(str(QUARTER))) as browser:
        page = browser.page
        assert browser.errors == []
        assert page.evaluate("window.hacked === undefined")
        assert hostile in page.inner_text("#theme-detail h2")


def test_a_quarter_never_reduced_is_a_usage_error_that_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", "2021Q3", "--root", str(tmp_path / "empty")]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "2021Q3 has no themes" in message and "ftm reduce --quarter" in message
    # Nothing was prefetched, so the source is unknown: the run is suggested for files and for WRDS,
    # with the root the command was given.
    assert f"ftm run 2021Q3 --input FILE --root {tmp_path / 'empty'}" in message
    assert f"ftm run 2021Q3 --root {tmp_path / 'empty'}` for WRDS" in message


def test_a_range_without_trends_is_a_usage_error_that_says_to_run_trends(
    reported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Two reduced quarters, the second a copy of the first, and no trends of the two.
    root = tmp_path / "root"
    shutil.copytree(reported["root"], root)
    later = QUARTER.next()
    for name in ("themes", "theme_sentences", "theme_topics", "firm_theme_exposure", "firms", "sentences"):
        shutil.copytree(root / layout.dataset(name, QUARTER), root / layout.dataset(name, later))
    assert main(["report", f"{QUARTER}..{later}", "--root", str(root)]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert f"{QUARTER}..{later} has no trends" in message and f"ftm trends {QUARTER}..{later}" in message


def test_out_into_a_missing_folder_is_a_usage_error(
    reported: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    root = str(reported["root"])
    assert main(["report", str(QUARTER), "--root", root, "--out", "/no/such/folder/page.html"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _planted_theme(reported: dict[str, Any]) -> int:
    planted = {ticker for ticker, given in reported["given"].items() if given["planted"]}
    members = reported["members"]
    firms = members.groupby("theme_id").firm_id.agg(lambda ids: set(ids) & planted).map(len)
    return int(firms.idxmax())


def _column(page: Any, where: str, index: int) -> list[float]:
    texts = page.locator(f"{where} tbody tr td:nth-child({index + 1})").all_inner_texts()
    return [float(text) for text in texts]


def _clipped(name: str, most: int = 48) -> str:
    return name if len(name) <= most else name[: most - 1] + "…"


def test_on_s3_the_page_goes_to_the_bucket_and_out_to_this_machine(
    reported: dict[str, Any], s3_root: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin, bucket = Store(str(reported["root"])), Store(s3_root, endpoint_url=s3_endpoint)
    for folder in ("prefetch", "themes", "names"):
        for path in origin.list(folder):
            bucket.write_bytes(path, origin.read_bytes(path))
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", s3_endpoint)
    out = tmp_path / "here.html"
    assert main(["report", str(QUARTER), "--root", s3_root, "--out", str(out)]) == 0
    page = bucket.read_bytes(layout.report(str(QUARTER)))
    assert out.read_bytes() == page
    # The same page as from the local root, but for the line that says where it comes from.
    local = reported["page"].read_bytes()
    assert _without_provenance(page) == _without_provenance(local)


def _without_provenance(page: bytes) -> bytes:
    return re.sub(rb'"provenance":\{[^}]*\}', b"", page)


def test_an_out_folder_that_cannot_be_written_is_refused_before_the_page_is_made(
    reported: dict[str, Any], immutable: Path, capsys: pytest.CaptureFixture
) -> None:
    command = ["--config", str(reported["config"]), "report", str(QUARTER), "--root", str(reported["root"])]
    before = reported["page"].stat().st_mtime_ns
    code = main([*command, "--out", str(immutable / "x.html")])
    err = capsys.readouterr().err
    assert code == 4, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(immutable) in lines[0] and "Traceback" not in err
    assert list(immutable.iterdir()) == []  # no page, no partial file
    assert reported["page"].stat().st_mtime_ns == before  # refused before the page was made
