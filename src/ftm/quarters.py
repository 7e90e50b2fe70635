"""Calendar quarters: "2023Q1" to and from half-open date ranges; ranges ("2020Q1..2021Q4",
inclusive) and lists ("2020Q1,2020Q3") of them, as every command that takes a quarter reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from ftm.errors import UsageError

_LABEL = re.compile(r"(\d{4})[Qq]([1-4])")
RANGE_SEPARATOR = ".."


@dataclass(frozen=True, order=True)
class Quarter:
    """A calendar quarter; `start` is inclusive and `end` exclusive, so quarters never overlap."""

    year: int
    number: int

    @classmethod
    def parse(cls, label: str) -> Quarter:
        match = _LABEL.fullmatch(label.strip())
        if not match:
            raise UsageError(
                f"{label!r} is not a quarter: write the four-digit year, Q and 1 to 4, as in 2023Q1"
            )
        return cls(int(match[1]), int(match[2]))

    @staticmethod
    def is_label(text: str) -> bool:
        """Whether `text` is one quarter's label, as `parse` reads it."""
        return _LABEL.fullmatch(text.strip()) is not None

    @classmethod
    def of(cls, day: date) -> Quarter:
        return cls(day.year, (day.month - 1) // 3 + 1)

    @property
    def start(self) -> date:
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def end(self) -> date:
        if self.number == 4:
            return date(self.year + 1, 1, 1)
        return date(self.year, 3 * self.number + 1, 1)

    def next(self) -> Quarter:
        return Quarter(self.year + 1, 1) if self.number == 4 else Quarter(self.year, self.number + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - 1, 4) if self.number == 1 else Quarter(self.year, self.number - 1)

    def __contains__(self, day: date) -> bool:
        return self.start <= day < self.end

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"


def parse_quarters(text: str) -> list[Quarter]:
    """The quarters a command is asked for, sorted and each once: a quarter ("2023Q1"), an
    inclusive range ("2020Q1..2021Q4"), or a comma-separated list of either ("2020Q1,2020Q3")."""
    found: set[Quarter] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UsageError(
                f"{text!r} has an empty item: list quarters or ranges with commas between them, "
                "as in 2020Q1,2020Q3 or 2020Q1..2021Q4"
            )
        if RANGE_SEPARATOR not in item:
            found.add(Quarter.parse(item))
            continue
        first, _, last = item.partition(RANGE_SEPARATOR)
        if not _LABEL.fullmatch(first.strip()) or not _LABEL.fullmatch(last.strip()):
            raise UsageError(
                f"{item!r} is not a range of quarters: write two quarters joined by '..', the "
                "earlier first, as in 2020Q1..2021Q4 (both included)"
            )
        start, end = Quarter.parse(first), Quarter.parse(last)
        if end < start:
            raise UsageError(f"{item!r} is reversed: write the earlier quarter first, as {end}..{start}")
        while start <= end:
            found.add(start)
            start = start.next()
    return sorted(found)


def quarters_label(quarters: list[Quarter]) -> str:
    """The canonical label of a set of quarters, runs of consecutive quarters as ranges:
    [2020Q1, 2020Q2, 2020Q3, 2021Q1] gives "2020Q1..2020Q3,2021Q1"; `parse_quarters` reads it back."""
    runs: list[list[Quarter]] = []
    for quarter in sorted(set(quarters)):
        if runs and runs[-1][-1].next() == quarter:
            runs[-1].append(quarter)
        else:
            runs.append([quarter])
    return ",".join(f"{run[0]}{RANGE_SEPARATOR}{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
