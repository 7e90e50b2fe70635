"""What a researcher asks to measure: a subject's name, its description in plain words and,
optionally, example sentences; from the command line or a TOML file of many."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ftm.errors import UsageError

# A name is a folder under measures/: letters, digits, _ and -, so it is the same on S3 and disk.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Subject:
    name: str
    description: str
    examples: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise UsageError(
                f"{self.name!r} is not a measure name: use letters, digits, _ and - (at most 64), "
                "as in supply_chain"
            )
        if not self.description.strip():
            raise UsageError(f"the description of {self.name!r} is empty: say in plain words what to measure")
        if any(not example.strip() for example in self.examples):
            raise UsageError(f"an example sentence of {self.name!r} is empty")


def name_from(description: str) -> str:
    """A name for a description given without --name: its first words, joined by _."""
    words = re.findall(r"[A-Za-z0-9]+", description.lower())[:4]
    return "_".join(words) or "subject"


def subjects_from(value: Mapping[str, Any] | list[Subject]) -> list[Subject]:
    """Subjects from a list, or a mapping as the TOML file has it: NAME = "description", or a
    table with `description` and optional `examples` (a list of sentences)."""
    subjects = value if isinstance(value, list) else [_subject(n, e) for n, e in value.items()]
    if not subjects:
        raise UsageError("no subject to measure: give a description, or a --subjects file with one")
    names = [subject.name for subject in subjects]
    if len(set(names)) != len(names):
        raise UsageError(f"two subjects are named alike: {sorted({n for n in names if names.count(n) > 1})}")
    return subjects


def read_subjects(path: Path) -> list[Subject]:
    """The subjects of a TOML file; one clear line for a file that is missing or malformed."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such subjects file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot be read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path} is not valid TOML: {error}") from None
    try:
        return subjects_from(document)
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None


def _subject(name: str, entry: Any) -> Subject:
    if isinstance(entry, str):
        return Subject(name, entry)
    if isinstance(entry, dict) and isinstance(entry.get("description"), str):
        examples = entry.get("examples", [])
        unknown = set(entry) - {"description", "examples"}
        if unknown or not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
            raise UsageError(
                f"subject {name!r}: a table takes `description` (text) and `examples` (a list of "
                f"sentences){f', not {sorted(unknown)}' if unknown else ''}"
            )
        return Subject(name, entry["description"], tuple(examples))
    raise UsageError(
        f'subject {name!r}: write {name} = "a description", or a table with description = "..." '
        "and examples = [...]"
    )
