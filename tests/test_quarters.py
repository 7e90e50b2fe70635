"""Quarters as every command takes them: one, an inclusive range, or a list; and the errors a
reversed or malformed range gives (exit 2, saying what was expected)."""

from __future__ import annotations

import pytest

from ftm.cli import main
from ftm.errors import UsageError
from ftm.quarters import Quarter, parse_quarters, quarters_label


def _labels(text: str) -> list[str]:
    return [str(quarter) for quarter in parse_quarters(text)]


def test_a_range_is_inclusive_and_crosses_years() -> None:
    assert _labels("2020Q3..2021Q2") == ["2020Q3", "2020Q4", "2021Q1", "2021Q2"]
    assert _labels("2020Q1..2021Q4")[-1] == "2021Q4" and len(_labels("2020Q1..2021Q4")) == 8


def test_a_list_mixes_quarters_and_ranges_and_comes_back_sorted_once_each() -> None:
    assert _labels("2021Q1, 2020Q1..2020Q2,2020Q1") == ["2020Q1", "2020Q2", "2021Q1"]
    assert _labels("2016Q4") == ["2016Q4"]


def test_the_label_collapses_consecutive_quarters_and_reads_back() -> None:
    quarters = parse_quarters("2020Q1..2020Q3,2021Q1,2021Q3..2022Q1")
    assert quarters_label(quarters) == "2020Q1..2020Q3,2021Q1,2021Q3..2022Q1"
    assert parse_quarters(quarters_label(quarters)) == quarters
    assert quarters_label([Quarter(2020, 4), Quarter(2021, 1)]) == "2020Q4..2021Q1"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2021Q4..2020Q1", "reversed: write the earlier quarter first, as 2020Q1..2021Q4"),
        ("2020Q1..", "not a range of quarters"),
        ("2020Q5..2021Q1", "not a range of quarters"),
        ("2020Q1...2021Q1", "not a range of quarters"),
        ("2020Q1,", "empty item"),
        ("2020-Q1", "not a quarter"),
    ],
)
def test_reversed_and_malformed_ranges_are_usage_errors_that_say_what_was_expected(
    text: str, says: str
) -> None:
    with pytest.raises(UsageError, match=r"as (in )?20") as error:
        parse_quarters(text)
    assert says in str(error.value)


@pytest.mark.parametrize("command", [["reduce", "--quarter"], ["name", "--quarter"], ["submit", "--quarter"]])
def test_commands_refuse_a_reversed_range_with_exit_2(
    command: list[str], tmp_path, capsys: pytest.CaptureFixture
) -> None:
    assert main([*command, "2021Q4..2020Q1", "--root", str(tmp_path)]) == 2
    assert "reversed" in capsys.readouterr().err


def test_reduce_over_a_range_names_the_first_quarter_not_prefetched(
    tmp_path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["reduce", "--quarter", "2020Q1..2020Q2", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "2020Q1 (1 of 2)" in err and "2020Q1" in err.split("error:")[1]


def test_submit_over_a_range_not_prefetched_says_to_prefetch_the_first_quarter(
    tmp_path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["submit", "--quarter", "2020Q1..2020Q2", "--root", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "2020Q1 is not prefetched" in err and "ftm prefetch 2020Q1" in err
