"""The files source on its own: JSON Lines and CSV, plain and gzip, quarter rules, firm ids,
roles, ordering, duplicates and the PERMNO/GVKEY keys. Small synthetic inputs in tmp_path."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ftm.errors import UsageError
from ftm.prefetch.sources import Call, CallList, Component
from ftm.prefetch.sources.files import FilesSource
from ftm.quarters import Quarter
from ftm.settings import SourceSettings

Q4 = Quarter.parse("2016Q4")


def _component(order: int, text: str, role: str | None = "presenter") -> dict[str, Any]:
    return {"order": order, "speaker": None, "role": role, "text": text}


# Six calls that exercise every quarter rule in 2016Q4:
#   T1, T2  AAA by call_date (two calls of one firm), components out of order, PERMNO and GVKEY
#   T3      BBB by fiscal_quarter only
#   T4      CCC call_date in 2017Q1 but fiscal_quarter 2016Q4
#   T5      DDD neither a date nor a label
#   T6      EEE call_date in 2016Q4 but fiscal_quarter 2017Q1
RECORDS: list[dict[str, Any]] = [
    {
        "transcript_id": "T1",
        "ticker": "AAA",
        "company_name": "Alpha Inc.",
        "call_date": "2016-11-02",
        "fiscal_quarter": None,
        "permno": 10001,
        "gvkey": "1690",
        "components": [
            _component(2, "Margins, as you can see, expanded.", "answer"),
            _component(0, "Welcome to the call.", "operator"),
            _component(1, "What drove margins?", "analyst"),
        ],
    },
    {
        "transcript_id": "T2",
        "ticker": "AAA",
        "company_name": "Alpha Inc.",
        "call_date": "2016-12-15",
        "fiscal_quarter": None,
        "permno": 10001,
        "gvkey": "1690",
        "components": [_component(0, "A second call of Alpha in the same quarter.")],
    },
    {
        "transcript_id": "T3",
        "ticker": "BBB",
        "company_name": "Beta Corp",
        "call_date": None,
        "fiscal_quarter": "2016Q4",
        "components": [_component(0, "Beta speaks.\nOn two lines.", "unknown")],
    },
    {
        "transcript_id": "T4",
        "ticker": "CCC",
        "company_name": "Gamma plc",
        "call_date": "2017-01-20",
        "fiscal_quarter": "2016Q4",
        "components": [_component(0, "Gamma speaks.")],
    },
    {
        "transcript_id": "T5",
        "ticker": "DDD",
        "company_name": "Delta LLC",
        "call_date": None,
        "fiscal_quarter": None,
        "components": [_component(0, "Delta has no time key.")],
    },
    {
        "transcript_id": "T6",
        "ticker": "EEE",
        "company_name": "Epsilon SA",
        "call_date": "2016-10-05",
        "fiscal_quarter": "2017Q1",
        "components": [_component(0, "Epsilon speaks.")],
    },
]

CSV_COLUMNS = [
    "transcript_id",
    "ticker",
    "company_name",
    "call_date",
    "fiscal_quarter",
    "permno",
    "gvkey",
    "order",
    "role",
    "speaker",
    "text",
]


def _write_jsonl(path: Path, records: list[dict[str, Any]], *, compress: bool = False) -> Path:
    data = "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _csv_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per component, with the call's metadata repeated; empty cells for missing values."""
    rows = []
    for record in records:
        for component in record["components"]:
            rows.append(
                {
                    **{key: record.get(key) for key in CSV_COLUMNS if key in record},
                    **component,
                }
            )
    return [{key: ("" if row.get(key) is None else row[key]) for key in CSV_COLUMNS} for row in rows]


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] = CSV_COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read(path: Path, quarter: Quarter = Q4, **settings: Any) -> tuple[CallList, dict[str, list[Component]]]:
    """The quarter's calls and each call's components (by transcript id), source closed after."""
    source = FilesSource(SourceSettings(path=str(path), **settings))
    try:
        found = source.calls(quarter)
        components = {call.transcript_id: parts for call, parts in source.components(found.calls)}
    finally:
        source.close()
    return found, components


def _by_id(calls: list[Call]) -> dict[str, Call]:
    return {call.transcript_id: call for call in calls}


# --- formats ----------------------------------------------------------------------------------


def test_gzip_and_plain_jsonl_give_the_same_calls_and_components(tmp_path: Path) -> None:
    plain = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))
    zipped = _read(_write_jsonl(tmp_path / "calls.jsonl.gz", RECORDS, compress=True))

    assert sorted(_by_id(plain[0].calls)) == ["T1", "T2", "T3", "T6"]
    assert plain[0].calls == zipped[0].calls
    assert plain[1] == zipped[1]
    assert plain[0].description["calls_by"] == zipped[0].description["calls_by"]


def test_gzip_content_is_detected_whatever_the_file_name(tmp_path: Path) -> None:
    misnamed = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS, compress=True))
    assert sorted(_by_id(misnamed[0].calls)) == ["T1", "T2", "T3", "T6"]


def test_csv_with_interleaved_rows_gives_the_same_calls_and_components_as_jsonl(tmp_path: Path) -> None:
    rows = _csv_rows(RECORDS)
    # The rows of a call are not contiguous: every other row, then the rest, backwards.
    interleaved = rows[::2] + rows[1::2][::-1]
    assert [row["transcript_id"] for row in interleaved[:3]] != ["T1"] * 3
    from_csv = _read(_write_csv(tmp_path / "calls.csv", interleaved))
    from_jsonl = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))

    assert from_csv[0].problems == []
    assert _by_id(from_csv[0].calls) == _by_id(from_jsonl[0].calls)
    assert from_csv[1] == from_jsonl[1]
    assert from_csv[0].description["calls_by"] == from_jsonl[0].description["calls_by"]
    assert from_csv[0].description["format"] == "csv"


def test_gzip_csv_is_read_like_plain_csv(tmp_path: Path) -> None:
    plain = _write_csv(tmp_path / "calls.csv", _csv_rows(RECORDS))
    zipped = tmp_path / "calls.csv.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    from_zipped, from_plain = _read(zipped), _read(plain)
    assert len(from_plain[0].calls) == 4
    assert from_zipped[0].calls == from_plain[0].calls
    assert from_zipped[1] == from_plain[1]


def test_csv_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Spreadsheet programs save "CSV UTF-8" with a BOM before the first column name.
    path = tmp_path / "calls.csv"
    plain = _write_csv(tmp_path / "plain.csv", _csv_rows(RECORDS))
    path.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    found, components = _read(path)
    assert sorted(_by_id(found.calls)) == ["T1", "T2", "T3", "T6"]
    assert components["T2"][0].text == "A second call of Alpha in the same quarter."


def test_csv_with_an_empty_permno_cell_keeps_the_call_without_a_permno(tmp_path: Path) -> None:
    rows = _csv_rows(RECORDS)
    assert any(row["permno"] == "" for row in rows)  # BBB, CCC, ... have no PERMNO
    found, _ = _read(_write_csv(tmp_path / "calls.csv", rows))
    calls = _by_id(found.calls)
    assert found.problems == []
    assert calls["T3"].permno is None and calls["T3"].gvkey is None
    assert calls["T1"].permno == 10001 and calls["T1"].gvkey == "001690"


def test_csv_without_text_column_is_refused_naming_the_column(tmp_path: Path) -> None:
    columns = [name for name in CSV_COLUMNS if name != "text"]
    path = _write_csv(tmp_path / "calls.csv", _csv_rows(RECORDS), columns)
    with pytest.raises(UsageError, match=r"missing: text\b"):  # the input's shape: exit 2
        _read(path)


def test_csv_without_any_time_column_is_refused_naming_both_choices(tmp_path: Path) -> None:
    columns = [name for name in CSV_COLUMNS if name not in ("call_date", "fiscal_quarter")]
    path = _write_csv(tmp_path / "calls.csv", _csv_rows(RECORDS), columns)
    with pytest.raises(UsageError, match="call_date or fiscal_quarter"):
        _read(path)


def test_csv_call_whose_only_row_is_invalid_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    rows = _csv_rows(RECORDS[:2])
    t2 = next(row for row in rows if row["transcript_id"] == "T2")
    t2["order"] = "first"
    found, components = _read(_write_csv(tmp_path / "calls.csv", rows))
    assert [problem.where for problem in found.problems] == [f"row {rows.index(t2) + 2}"]
    assert "order" in found.problems[0].reason
    assert len(components["T1"]) == 3
    assert components.get("T2", []) == []


# --- quarter rules ----------------------------------------------------------------------------


def test_default_rule_uses_call_date_and_falls_back_to_the_fiscal_label(tmp_path: Path) -> None:
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))
    # T4's label says 2016Q4 but its date is in 2017Q1: the date wins. T6 the other way round.
    assert sorted(_by_id(found.calls)) == ["T1", "T2", "T3", "T6"]
    assert found.description["quarter_rule"] == "call_date_then_fiscal"
    assert found.description["calls_by"] == {"call_date": 3, "fiscal_quarter": 1}
    assert found.description["n_records"] == 6
    assert found.description["n_records_without_quarter"] == 1  # T5
    assert found.description["call_date_range"] == {
        "start": "2016-10-01",
        "end": "2017-01-01",
        "half_open": True,
    }


def test_call_date_rule_ignores_fiscal_labels(tmp_path: Path) -> None:
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS), quarter_rule="call_date")
    assert sorted(_by_id(found.calls)) == ["T1", "T2", "T6"]
    assert found.description["calls_by"] == {"call_date": 3, "fiscal_quarter": 0}
    assert found.description["n_records_without_quarter"] == 2  # T3 and T5


def test_fiscal_rule_ignores_call_dates(tmp_path: Path) -> None:
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS), quarter_rule="fiscal")
    assert sorted(_by_id(found.calls)) == ["T3", "T4"]
    assert found.description["calls_by"] == {"call_date": 0, "fiscal_quarter": 2}
    assert "call_date_range" not in found.description


def test_call_dates_on_quarter_edges_belong_to_the_quarter_they_fall_in(tmp_path: Path) -> None:
    records = [
        {"transcript_id": f"E{i}", "ticker": f"F{i}", "call_date": day, "components": []}
        for i, day in enumerate(["2016-09-30", "2016-10-01", "2016-12-31", "2017-01-01"])
    ]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records))
    assert sorted(_by_id(found.calls)) == ["E1", "E2"]
    assert {call.call_date for call in found.calls} == {date(2016, 10, 1), date(2016, 12, 31)}


def test_malformed_fiscal_label_is_recorded_as_a_problem(tmp_path: Path) -> None:
    records = [
        {"transcript_id": "X1", "ticker": "XXX", "fiscal_quarter": "Q4 2016", "components": []},
        {"transcript_id": "X2", "ticker": "YYY", "fiscal_quarter": "2016q4", "components": []},
    ]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records))
    assert [call.transcript_id for call in found.calls] == ["X2"]
    assert [(p.where, "'Q4 2016'" in p.reason) for p in found.problems] == [("line 1", True)]
    assert found.n_problems == 1


def test_fields_of_the_wrong_json_type_are_problems_not_crashes(tmp_path: Path) -> None:
    records = [
        {"transcript_id": "N1", "ticker": "NUM", "fiscal_quarter": 20164, "components": []},
        {
            "transcript_id": "N2",
            "ticker": "NAM",
            "call_date": "2016-11-01",
            "company_name": 42,
            "components": [],
        },
        {"transcript_id": "OK", "ticker": "GOOD", "call_date": "2016-11-01", "components": []},
    ]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records))
    assert [call.transcript_id for call in found.calls] == ["OK"]
    assert [problem.where for problem in found.problems] == ["line 1", "line 2"]
    assert "20164" in found.problems[0].reason
    assert "company_name" in found.problems[1].reason


def test_a_bad_call_date_is_recorded_as_a_problem(tmp_path: Path) -> None:
    records = [{"transcript_id": "D1", "ticker": "DDD", "call_date": "Nov 2, 2016", "components": []}]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records))
    assert found.calls == []
    assert found.problems[0].where == "line 1"
    assert "not an ISO date" in found.problems[0].reason


# --- firms, roles, ordering, duplicates, keys -------------------------------------------------


def test_firm_id_field_setting_picks_the_firm_key(tmp_path: Path) -> None:
    records = [
        *RECORDS,
        {"transcript_id": "T7", "ticker": "ZZZ", "call_date": "2016-11-30", "components": []},
    ]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records), firm_id_field="company_name")
    calls = _by_id(found.calls)
    assert {call.firm_id for call in found.calls} == {"Alpha Inc.", "Beta Corp", "Epsilon SA"}
    assert calls["T1"].firm_id == calls["T2"].firm_id == "Alpha Inc."
    assert found.description["firm_id_field"] == "company_name"
    # T7 has a ticker but no company name: without its firm id it cannot be used.
    assert "T7" not in calls
    assert [(p.where, p.reason) for p in found.problems] == [
        ("line 7", "no company_name (the firm id field)")
    ]


def test_firm_id_field_setting_applies_to_csv_columns(tmp_path: Path) -> None:
    rows = _csv_rows(RECORDS)
    columns = [name for name in CSV_COLUMNS if name != "ticker"]
    found, _ = _read(_write_csv(tmp_path / "calls.csv", rows, columns), firm_id_field="company_name")
    assert {call.firm_id for call in found.calls} == {"Alpha Inc.", "Beta Corp", "Epsilon SA"}


def test_roles_map_to_speaker_types(tmp_path: Path) -> None:
    roles = ["presenter", "Question", "analyst", "answer", "Operator", "unknown", "moderator", "", None]
    expected = [
        "presenter",
        "question",
        "question",
        "answer",
        "operator",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]
    components = [_component(i, f"Turn {i}.", role) for i, role in enumerate(roles)]
    components.append({"order": len(roles), "text": "No role field at all."})
    records = [{"transcript_id": "R1", "ticker": "ROL", "call_date": "2016-11-01", "components": components}]
    for path in (
        _write_jsonl(tmp_path / "calls.jsonl", records),
        _write_csv(tmp_path / "calls.csv", _csv_rows(records)),
    ):
        _, by_call = _read(path)
        assert [c.speaker_type for c in by_call["R1"]] == [*expected, "unknown"], path.name


def test_components_come_back_sorted_by_order_with_their_text(tmp_path: Path) -> None:
    _, components = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))
    assert components["T1"] == [
        Component(0, "operator", "Welcome to the call."),
        Component(1, "question", "What drove margins?"),
        Component(2, "answer", "Margins, as you can see, expanded."),
    ]
    assert components["T3"] == [Component(0, "unknown", "Beta speaks.\nOn two lines.")]


def test_components_come_in_the_order_the_calls_are_asked_for(tmp_path: Path) -> None:
    source = FilesSource(SourceSettings(path=str(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))))
    try:
        calls = sorted(source.calls(Q4).calls, key=lambda call: call.transcript_id, reverse=True)
        asked = [call.transcript_id for call in calls]
        given = [call.transcript_id for call, _ in source.components(calls)]
    finally:
        source.close()
    assert given == asked == ["T6", "T3", "T2", "T1"]


def test_a_firm_with_two_calls_in_the_quarter_yields_both(tmp_path: Path) -> None:
    found, components = _read(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))
    alpha = sorted((c for c in found.calls if c.firm_id == "AAA"), key=lambda c: c.transcript_id)
    assert [(c.transcript_id, c.call_date) for c in alpha] == [
        ("T1", date(2016, 11, 2)),
        ("T2", date(2016, 12, 15)),
    ]
    assert components["T1"] != components["T2"]


def test_duplicate_transcript_id_is_a_problem_and_the_first_is_kept(tmp_path: Path) -> None:
    first = {
        "transcript_id": "DUP",
        "ticker": "AAA",
        "call_date": "2016-11-01",
        "components": [_component(0, "The first copy.")],
    }
    second = {**first, "ticker": "BBB", "components": [_component(0, "The second copy.")]}
    found, components = _read(_write_jsonl(tmp_path / "calls.jsonl", [first, second]))
    assert [(c.transcript_id, c.firm_id) for c in found.calls] == [("DUP", "AAA")]
    assert components["DUP"] == [Component(0, "presenter", "The first copy.")]
    assert [problem.where for problem in found.problems] == ["line 2"]
    assert "appears twice" in found.problems[0].reason
    assert found.n_problems == 1


def test_permno_and_gvkey_are_carried_with_gvkey_zero_padded(tmp_path: Path) -> None:
    records = [
        {
            "transcript_id": "K1",
            "ticker": "KKK",
            "call_date": "2016-11-01",
            "permno": 14593,
            "gvkey": 1690,
            "components": [],
        },
        {
            "transcript_id": "K2",
            "ticker": "LLL",
            "call_date": "2016-11-01",
            "gvkey": "012141",
            "components": [],
        },
        {"transcript_id": "K3", "ticker": "MMM", "call_date": "2016-11-01", "components": []},
    ]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records))
    calls = _by_id(found.calls)
    assert (calls["K1"].permno, calls["K1"].gvkey) == (14593, "001690")
    assert (calls["K2"].permno, calls["K2"].gvkey) == (None, "012141")
    assert (calls["K3"].permno, calls["K3"].gvkey) == (None, None)


def test_a_gvkey_that_is_not_up_to_six_digits_is_a_problem(tmp_path: Path) -> None:
    records = [
        {
            "transcript_id": "G1",
            "ticker": "GGG",
            "call_date": "2016-11-01",
            "gvkey": "1234567",
            "components": [],
        }
    ]
    found, _ = _read(_write_jsonl(tmp_path / "calls.jsonl", records))
    assert found.calls == []
    assert "gvkey" in found.problems[0].reason and "GVKEY" in found.problems[0].reason


def test_calls_can_be_asked_again_for_another_quarter(tmp_path: Path) -> None:
    source = FilesSource(SourceSettings(path=str(_write_jsonl(tmp_path / "calls.jsonl", RECORDS))))
    try:
        first = source.calls(Q4)
        later = source.calls(Quarter.parse("2017Q1"))
        components = dict((c.transcript_id, parts) for c, parts in source.components(later.calls))
    finally:
        source.close()
    assert len(first.calls) == 4
    assert [call.transcript_id for call in later.calls] == ["T4"]
    assert components == {"T4": [Component(0, "presenter", "Gamma speaks.")]}


def test_dry_run_counts_the_files_quarter_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ftm.cli import main

    path = tmp_path / "calls.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    assert main(["prefetch", "2016Q4", "--input", str(path), "--dry-run", "--json", "--root", "store"]) == 0
    counts = json.loads(capsys.readouterr().out)
    found = FilesSource(SourceSettings(kind="files", path=str(path))).calls(Q4).calls
    assert counts["n_calls"] == len(found) and counts["n_firms"] == len({c.firm_id for c in found})
    assert counts["n_components"] == sum(
        len(r["components"]) for r in RECORDS if r["transcript_id"] in {c.transcript_id for c in found}
    )
    assert counts["n_firms_with_permno"] == len({c.firm_id for c in found if c.permno is not None})
    assert not (tmp_path / "store").exists()


def test_prefetch_says_once_that_calls_were_placed_by_fiscal_label_and_which_firms_have_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ftm.cli import main

    # Whole sentences, so that preprocessing keeps every call.
    talk = "Our revenue grew strongly in every region this quarter and margins improved again."
    records = [{**record, "components": [_component(0, talk)]} for record in RECORDS]
    path = _write_jsonl(tmp_path / "calls.jsonl", records)
    assert main(["prefetch", "2016Q4", "--input", str(path), "--root", str(tmp_path / "root")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    # The quarter's calls are T1, T2, T3 and T6 (see RECORDS): T3 had only a label, and AAA alone
    # (T1, T2) has a PERMNO and a GVKEY of the three firms.
    assert err.count("fiscal_quarter label") == 1
    assert "1 of 4 calls had no call date" in err and "not a calendar quarter" in err, err
    assert "1 of 3 firms have a PERMNO and 1 a GVKEY" in err
