"""`ftm prefetch` meets bad input: every case ends in a clear message and the right exit code, or a
recorded problem or skip, never a traceback. Tiny synthetic inputs, through `ftm.cli.main`."""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ftm import layout
from ftm.cli import main
from ftm.quarters import Quarter

QUARTER = Quarter.parse("2016Q4")
SAID = "Demand for cloud storage among hospitals doubled, and pricing held up well."


def _record(
    transcript_id: str, ticker: str, *texts: str | None, call_date: str = "2016-11-01"
) -> dict[str, Any]:
    return {
        "transcript_id": transcript_id,
        "company_name": f"{ticker} Inc.",
        "ticker": ticker,
        "call_date": call_date,
        "fiscal_quarter": None,
        "components": [
            {"order": order, "speaker": None, "role": "unknown", "text": text}
            for order, text in enumerate(texts)
        ],
    }


def _lines(*records: dict[str, Any]) -> list[bytes]:
    return [json.dumps(record).encode("utf-8") for record in records]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


class Run:
    """One `ftm prefetch ... --json` through the CLI: exit code, stdout, and stderr on one line."""

    def __init__(self, capsys: pytest.CaptureFixture, tmp_path: Path, *args: str):
        self.root = tmp_path / "data"
        self.code = main(["prefetch", *args, "--root", str(self.root), "--workers", "1", "--json"])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        self.out = captured.out
        self.err = " ".join(captured.err.split())  # rich wraps long lines: compare words

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.out)

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / layout.prefetch_manifest(QUARTER)).read_text())

    def sentences(self) -> dict[str, list[Any]]:
        chunks = sorted((self.root / layout.prefetch_folder(QUARTER)).glob("chunk_*.parquet"))
        assert chunks, "no chunk was written"
        rows: dict[str, list[Any]] = {}
        for chunk in chunks:
            for name, values in pq.read_table(chunk).to_pydict().items():
                rows.setdefault(name, []).extend(values)
        return rows


def _prefetch(
    capsys: pytest.CaptureFixture, tmp_path: Path, path: Path, *extra: str, quarter: str = "2016Q4"
) -> Run:
    return Run(capsys, tmp_path, quarter, "--source", "files", "--input", str(path), *extra)


def _refused(run: Run, code: int) -> None:
    assert run.code == code, run.err
    assert run.out == ""  # stdout carries only --json documents, and there is none
    assert "error:" in run.err
    assert not (run.root / layout.prefetch_manifest(QUARTER)).exists()


# --- bad records are recorded, the rest is prefetched -----------------------------------------


def test_malformed_json_line_is_listed_with_its_line_number_and_other_calls_are_prefetched(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    lines = _lines(_record("T1", "AAA", SAID), _record("T3", "CCC", SAID))
    lines.insert(1, b'{"transcript_id": "T2", "ticker": "BBB", "components": [')
    run = _prefetch(capsys, tmp_path, _write(tmp_path / "calls.jsonl", lines))

    assert run.code == 0, run.err
    manifest = run.manifest()
    assert sorted(manifest["firm_to_chunk"]) == ["AAA", "CCC"]
    assert [problem["where"] for problem in manifest["input_problems"]] == ["line 2"]
    assert "not valid JSON" in manifest["input_problems"][0]["reason"]
    assert manifest["n_input_problems"] == 1
    assert run.summary["n_input_problems"] == 1
    assert "1 input record(s) could not be used" in run.err and "line 2: not valid JSON" in run.err


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_non_utf8_bytes_on_one_record_are_recorded_and_other_records_prefetched(
    capsys: pytest.CaptureFixture, tmp_path: Path, form: str
) -> None:
    latin1 = "Caf\u00e9 chains in S\u00e3o Paulo bought more espresso machines.".encode("latin-1")
    records = [_record("T1", "AAA", SAID), _record("T2", "BBB", "PLACEHOLDER"), _record("T3", "CCC", SAID)]
    if form == "jsonl":
        path, where = tmp_path / "calls.jsonl", "line 2"
        data = b"".join(line + b"\n" for line in _lines(*records))
    else:
        path, where = tmp_path / "calls.csv", "row 3"  # the header is row 1
        columns = ["transcript_id", "ticker", "company_name", "call_date", "order", "role", "text"]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for record in records:
                writer.writerow({**record, **record["components"][0]})
        data = path.read_bytes()
    path.write_bytes(data.replace(b"PLACEHOLDER", latin1))
    run = _prefetch(capsys, tmp_path, path)

    assert run.code == 0, run.err
    manifest = run.manifest()
    assert sorted(manifest["firm_to_chunk"]) == ["AAA", "CCC"]
    assert [(p["where"], "not valid UTF-8" in p["reason"]) for p in manifest["input_problems"]] == [
        (where, True)
    ]
    assert run.summary["n_input_problems"] == 1
    assert f"{where}: not valid UTF-8" in run.err


def test_empty_and_thank_you_only_transcripts_are_reported_as_skipped_firms(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    records = [
        _record("T1", "EMPTY"),  # components: []
        _record("T2", "GOOD", SAID),
        _record("T3", "NULLS", None, "   "),
        _record("T4", "THANKS", "Thank you."),
    ]
    assert records[0]["components"] == []
    run = _prefetch(capsys, tmp_path, _write(tmp_path / "calls.jsonl", _lines(*records)))

    assert run.code == 0, run.err
    reason = "no sentences left after preprocessing"
    expected = [{"firm_id": firm, "reason": reason} for firm in ("EMPTY", "NULLS", "THANKS")]
    manifest = run.manifest()
    assert manifest["skipped_firms"] == expected
    assert run.summary["skipped_firms"] == expected
    assert list(manifest["firm_to_chunk"]) == ["GOOD"]
    assert (manifest["n_firms"], manifest["n_calls"]) == (1, 4)
    assert manifest["n_empty_components"] == 2
    assert set(run.sentences()["firm_id"]) == {"GOOD"}
    assert f"skipped 3 firm(s): EMPTY ({reason}), NULLS ({reason}), THANKS ({reason})" in run.err


def test_a_200000_character_component_is_prefetched_without_losing_text(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    sentences = [
        "Our margins improved because customers bought more software subscriptions.",
        "Freight costs weighed on the industrial segment during the period.",
        "Hospitals continued to adopt the imaging platform at a steady pace.",
    ]
    said = []
    while sum(len(s) + 1 for s in said) < 200_000:
        said.append(sentences[len(said) % len(sentences)])
    said.append("The zeppelin division finally delivered strong growth.")
    text = " ".join(said)
    assert len(text) > 200_000
    run = _prefetch(capsys, tmp_path, _write(tmp_path / "calls.jsonl", _lines(_record("T1", "LONG", text))))

    assert run.code == 0, run.err
    rows = run.sentences()
    assert run.manifest()["n_sentences"] == len(rows["raw_text"]) == len(said)
    assert " ".join(rows["raw_text"]) == text  # every sentence, whole and in order
    assert rows["raw_text"][-1] == said[-1]
    assert "zeppelin" in rows["cleaned_text"][-1]
    assert rows["sentence_id"][-1] == f"T1/0.{len(said) - 1}"


# --- refused with a clear message -------------------------------------------------------------


@pytest.mark.parametrize("label", ["2023Q5", "23Q1"])
def test_malformed_quarter_is_a_usage_error_explaining_the_format(
    capsys: pytest.CaptureFixture, tmp_path: Path, label: str
) -> None:
    path = _write(tmp_path / "calls.jsonl", _lines(_record("T1", "AAA", SAID)))
    run = _prefetch(capsys, tmp_path, path, quarter=label)
    _refused(run, 2)
    assert f"'{label}' is not a quarter" in run.err
    assert "four-digit year, Q and 1 to 4, as in 2023Q1" in run.err


def test_missing_input_file_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    run = _prefetch(capsys, tmp_path, tmp_path / "missing.jsonl")
    _refused(run, 2)
    assert "missing.jsonl does not exist" in run.err


def test_input_whose_format_cannot_be_told_from_its_name_is_a_usage_error(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    run = _prefetch(capsys, tmp_path, _write(tmp_path / "calls.txt", _lines(_record("T1", "AAA", SAID))))
    _refused(run, 2)
    assert "cannot tell the format" in run.err and "--format jsonl|csv" in run.err


def test_csv_with_a_missing_column_is_refused_naming_the_column(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text("transcript_id,ticker,call_date,order,role\nT1,AAA,2016-11-01,0,answer\n")
    run = _prefetch(capsys, tmp_path, path)
    _refused(run, 2)  # the input's shape is the user's to fix, as a missing file is
    assert "CSV column(s) missing: text." in run.err


@pytest.mark.parametrize("name", ["calls.jsonl", "calls.csv", "calls.jsonl.gz"])
def test_an_empty_input_file_is_refused_saying_it_is_empty(
    name: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as out:
            out.write("\n")
    else:
        path.write_text("" if name.endswith(".csv") else "\n\n")
    run = _prefetch(capsys, tmp_path, path)
    _refused(run, 2)
    assert f"{path} is empty" in run.err


def test_input_with_no_calls_in_the_quarter_is_an_error_saying_so(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    records = [
        _record("T1", "AAA", SAID, call_date="2017-02-01"),
        _record("T2", "BBB", SAID, call_date="2016-09-30"),
    ]
    run = _prefetch(capsys, tmp_path, _write(tmp_path / "calls.jsonl", _lines(*records)))
    _refused(run, 1)
    assert "the input has no calls in 2016Q4" in run.err


def test_truncated_gzip_input_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    records = [_record(f"T{i}", f"F{i:03d}", SAID) for i in range(300)]
    data = gzip.compress(b"".join(line + b"\n" for line in _lines(*records)))
    path = tmp_path / "calls.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    run = _prefetch(capsys, tmp_path, path)
    _refused(run, 1)
    assert "calls.jsonl.gz" in run.err and "damaged or cut short" in run.err


def test_unknown_firm_in_firms_is_refused_naming_it(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = _write(tmp_path / "calls.jsonl", _lines(_record("T1", "AAA", SAID), _record("T2", "BBB", SAID)))
    run = _prefetch(capsys, tmp_path, path, "--firms", "AAA,NOPE")
    _refused(run, 2)
    assert "no calls in 2016Q4 for firm(s) NOPE" in run.err


# --- a finished quarter is left alone ---------------------------------------------------------


def test_rerunning_a_finished_quarter_says_it_is_done_and_changes_nothing(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = _write(tmp_path / "calls.jsonl", _lines(_record("T1", "AAA", SAID), _record("T2", "BBB", SAID)))
    first = _prefetch(capsys, tmp_path, path)
    assert first.code == 0, first.err
    assert first.summary["already_done"] is False

    files = sorted(p for p in first.root.rglob("*") if p.is_file())
    assert any(p.name == "_manifest.json" for p in files) and any(p.suffix == ".parquet" for p in files)
    old = 1_000_000_000  # 2001: any rewrite would move the modification time to now
    for file in files:
        os.utime(file, ns=(old * 10**9, old * 10**9))
    before = {p: p.read_bytes() for p in files}

    again = _prefetch(capsys, tmp_path, path)
    assert again.code == 0, again.err
    assert again.summary["already_done"] is True
    assert again.summary["n_firms"] == first.summary["n_firms"] == 2
    assert "2016Q4 is already prefetched" in again.err and "nothing changed" in again.err
    assert sorted(p for p in first.root.rglob("*") if p.is_file()) == files
    assert {p: p.read_bytes() for p in files} == before
    assert {p: p.stat().st_mtime_ns for p in files} == dict.fromkeys(files, old * 10**9)


# --- input that would poison a quarter is refused before anything is finished -----------------

CSV_COLUMNS = ["transcript_id", "ticker", "company_name", "call_date", "order", "role", "text", "gvkey"]
SAID_TOO = [
    SAID,
    "Freight costs weighed on the industrial segment during the period.",
    "Hospitals continued to adopt the imaging platform at a steady pace.",
]


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _csv_rows(firms: tuple[str, ...] = ("AAA", "BBB", "CCC"), order: Any = None, **fields: Any) -> list[dict]:
    return [
        {
            "transcript_id": f"T-{firm}",
            "ticker": firm,
            "company_name": f"{firm} Inc.",
            "call_date": "2016-11-01",
            "order": index if order is None else order,
            "role": "answer",
            "text": text,
            **fields,
        }
        for firm in firms
        for index, text in enumerate(SAID_TOO)
    ]


def test_csv_whose_order_values_are_all_text_fails_without_a_manifest_and_the_fixed_file_then_runs(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = _csv(tmp_path / "calls.csv", _csv_rows(order="first"))
    bad = _prefetch(capsys, tmp_path, path)
    _refused(bad, 1)
    assert "9 of the input's 9 records could not be used" in bad.err
    assert "prefetch.max_problem_share (50%)" in bad.err
    assert "9× order: Input should be a valid integer" in bad.err and "(first at row 2)" in bad.err
    assert not (bad.root / layout.prefetch_checkpoint(QUARTER)).exists()

    _csv(path, _csv_rows())  # fixed: the same calls, so the same plan, with usable rows
    fixed = _prefetch(capsys, tmp_path, path)
    assert fixed.code == 0, fixed.err
    assert fixed.summary["already_done"] is False
    assert (fixed.summary["n_firms"], fixed.summary["n_sentences"]) == (3, 9)


def test_a_quarter_whose_every_firm_has_no_usable_sentence_fails_and_leaves_nothing_to_resume(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = _write(tmp_path / "calls.jsonl", _lines(_record("T1", "AAA", "Thank you."), _record("T2", "BBB")))
    bad = _prefetch(capsys, tmp_path, path)
    _refused(bad, 1)
    assert "no firm of 2016Q4 has a usable sentence" in bad.err
    assert "2 firm(s): no sentences left after preprocessing" in bad.err
    assert not (bad.root / layout.prefetch_checkpoint(QUARTER)).exists()

    _write(path, _lines(_record("T1", "AAA", SAID), _record("T2", "BBB", SAID)))
    fixed = _prefetch(capsys, tmp_path, path)
    assert fixed.code == 0, fixed.err
    assert fixed.summary["n_firms"] == 2


def test_a_few_bad_records_under_the_share_are_listed_and_the_rest_prefetched(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    rows = _csv_rows()
    rows[0]["order"] = "first"
    run = _prefetch(capsys, tmp_path, _csv(tmp_path / "calls.csv", rows))
    assert run.code == 0, run.err
    assert run.summary["n_input_problems"] == 1


def test_dry_run_counts_the_input_problems_by_kind(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    rows = _csv_rows()
    for row in rows[:4]:
        row["order"] = "first"
    run = _prefetch(capsys, tmp_path, _csv(tmp_path / "calls.csv", rows), "--dry-run")
    assert run.code == 0, run.err
    assert (run.summary["n_records"], run.summary["n_input_problems"]) == (9, 4)
    [kind] = run.summary["common_problems"]
    assert (kind["count"], kind["where"]) == (4, "row 2") and kind["reason"].startswith("order:")
    assert "4 of 9 input records could not be used" in run.err and "first at row 2" in run.err
    assert not run.root.exists()


@pytest.mark.parametrize("change", ["input", "firms"])
def test_a_finished_quarter_asked_for_another_input_or_firms_is_refused_naming_both(
    capsys: pytest.CaptureFixture, tmp_path: Path, change: str
) -> None:
    first_path = _write(tmp_path / "a.jsonl", _lines(_record("T1", "AAA", SAID), _record("T2", "BBB", SAID)))
    first = _prefetch(capsys, tmp_path, first_path)
    assert first.code == 0, first.err
    if change == "input":
        other = _write(tmp_path / "b.jsonl", _lines(_record("T1", "AAA", SAID)))
        again = _prefetch(capsys, tmp_path, other)
        assert str(first_path) in again.err and str(other) in again.err
    else:
        again = _prefetch(capsys, tmp_path, first_path, "--firms", "AAA")
        assert "(all firms)" in again.err and "(firms AAA)" in again.err
    assert again.code == 2, again.err
    assert "2016Q4" in again.err and "--overwrite" in again.err
    run_same = _prefetch(capsys, tmp_path, first_path)  # the same request is still done
    assert run_same.code == 0 and run_same.summary["already_done"] is True


def test_gvkey_written_by_pandas_as_a_float_is_kept_zero_padded(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import pandas as pd

    rows = _csv_rows(("AAA", "BBB"))
    frame = pd.DataFrame(rows)
    frame["gvkey"] = [1234] * 3 + [None] * 3  # a gap makes pandas hold the column as float
    path = tmp_path / "calls.csv"
    frame.to_csv(path, index=False)
    assert "1234.0" in path.read_text()

    run = _prefetch(capsys, tmp_path, path)
    assert run.code == 0, run.err
    assert run.summary["n_input_problems"] == 0
    rows = run.sentences()
    keys = dict(zip(rows["firm_id"], rows["gvkey"], strict=True))
    assert keys == {"AAA": "001234", "BBB": None}


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"call_date": "11/14/2016"}, "call_date '11/14/2016' is not an ISO date"),
        ({"call_date": "", "fiscal_quarter": "Q4 2016"}, "fiscal_quarter 'Q4 2016' is not a quarter"),
    ],
)
def test_unreadable_dates_are_a_usage_error_with_their_count_an_example_and_the_formats(
    capsys: pytest.CaptureFixture, tmp_path: Path, fields: dict[str, str], shown: str
) -> None:
    records = [{**_record(f"T{i}", firm, SAID), **fields} for i, firm in enumerate(("AAA", "BBB"))]
    run = _prefetch(capsys, tmp_path, _write(tmp_path / "calls.jsonl", _lines(*records)))
    _refused(run, 2)
    assert "2 call date(s) or fiscal_quarter label(s) could not be read" in run.err
    assert f"such as line 1: {shown}" in run.err
    assert "2016-11-14" in run.err and "2016Q4" in run.err


def test_firms_match_tickers_whatever_their_case(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = _write(tmp_path / "calls.jsonl", _lines(_record("T1", "HMST", SAID), _record("T2", "BBB", SAID)))
    run = _prefetch(capsys, tmp_path, path, "--firms", "hmst")
    assert run.code == 0, run.err
    assert list(run.manifest()["firm_to_chunk"]) == ["HMST"]
    again = _prefetch(capsys, tmp_path, path, "--firms", "HMST")  # the same request
    assert again.code == 0 and again.summary["already_done"] is True


def test_an_unknown_firm_is_refused_with_the_close_match(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = _write(tmp_path / "calls.jsonl", _lines(_record("T1", "HMST", SAID), _record("T2", "BBB", SAID)))
    run = _prefetch(capsys, tmp_path, path, "--firms", "HMTS")
    _refused(run, 2)
    assert "no calls in 2016Q4 for firm(s) HMTS (HMTS: did you mean HMST?)" in run.err
