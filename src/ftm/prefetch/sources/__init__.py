"""Where transcripts come from. Every source gives the quarter's calls as small metadata first,
then the components of the calls it is asked for, in the order asked, so that `prefetch` can
process firms in a stable order, a bounded batch at a time, and resume after a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from ftm.quarters import Quarter
from ftm.schemas import InputProblem
from ftm.settings import SourceSettings, StorageSettings

# The manifest lists this many input problems in full and counts the rest.
MAX_LISTED_PROBLEMS = 200

# What a call's date and label may look like in files; said when none can be read.
DATE_FORMATS = "call_date as an ISO date (2016-11-14, or 2016-11-14T09:30:00), fiscal_quarter as 2016Q4"

# How each role label of a source maps to `speaker_type`; anything else is "unknown".
SPEAKER_TYPE_OF_ROLE = {
    "presenter": "presenter",
    "presentation": "presenter",
    "presenter speech": "presenter",
    "question": "question",
    "analyst": "question",
    "answer": "answer",
    "executive": "answer",
    "operator": "operator",
    "operator message": "operator",
}


def speaker_type(role: str | None) -> str:
    return SPEAKER_TYPE_OF_ROLE.get((role or "").strip().lower(), "unknown")


@dataclass(frozen=True)
class Call:
    """One earnings call of the quarter, without its text."""

    firm_id: str
    firm_name: str | None
    transcript_id: str
    call_date: date | None
    permno: int | None = None
    gvkey: str | None = None
    collection_type: str | None = None  # the transcript version read, where the source has several


@dataclass(frozen=True)
class Component:
    """One speaker turn (or one sentence, where the source has no turns)."""

    order: int
    speaker_type: str
    text: str


@dataclass
class CallList:
    """The quarter's calls, and what the source could not use while finding them."""

    calls: list[Call]
    description: dict[str, Any]  # goes in the manifest: kind, path, rules used, counts
    problems: list[InputProblem] = field(default_factory=list)
    n_problems: int = 0
    n_records: int = 0  # records read, usable or not: what the share of problems is of
    # Calls whose date or fiscal_quarter label could not be read, with the first as an example:
    # when no call is left, that is the likely reason, not an empty quarter.
    n_unreadable_dates: int = 0
    unreadable_date: str | None = None


class Source(Protocol):
    def calls(self, quarter: Quarter) -> CallList:
        """The quarter's calls; small enough to hold in memory (no text)."""

    def components(self, calls: Sequence[Call]) -> Iterator[tuple[Call, list[Component]]]:
        """Each call's components, ordered by `order`, in the order the calls were given."""

    def count_components(self, calls: Sequence[Call]) -> int:
        """How many components the calls have, blank ones included (for a dry run)."""

    def close(self) -> None: ...


# A source tells of slow steps the user should know about, such as waiting for a Duo approval:
# (event, message), event being "connecting", "connected" or "reconnecting".
Notify = Callable[[str, str], None]


def open_source(
    settings: SourceSettings, notify: Notify | None = None, storage: StorageSettings | None = None
) -> Source:
    """The configured source; `storage` reaches an s3:// input file (its endpoint and region)."""
    if settings.kind == "files":
        from ftm.prefetch.sources.files import FilesSource

        return FilesSource(settings, storage)
    from ftm.prefetch.sources.wrds import WrdsSource

    return WrdsSource(settings, notify)
