"""Calendar quarters: "2023Q1" to and from half-open date ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from ftm.errors import UsageError

_LABEL = re.compile(r"(\d{4})[Qq]([1-4])")


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

    def __contains__(self, day: date) -> bool:
        return self.start <= day < self.end

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"
