"""Reporting language apart from investment themes: a theme's `kind`, by a rule that uses no word
lists and no event.

Results, GAAP reconciliations, guidance boilerplate and greetings are talked about by every firm
every quarter. A theme is `reporting` when either holds:

1. **It states numbers.** At least `reduce.reporting_number_share` of its sentences state a number
   of their own (a digit that starts a token, years left out; not "COVID-19" or "Q3"): "revenue
   was $1.2 billion, up 5%", "we expect a tax rate of 24%".
2. **It is what every firm says every quarter.** Its sentences are spread over the quarter's firms
   as evenly as the quarter's own sentences are (evenness at least `reduce.reporting_evenness`),
   and the same language is said as evenly in an ordinary quarter (its centroid within cosine
   `reduce.reporting_ordinary_similarity` of one of the reference's). Evenness alone cannot tell a
   greeting from the pandemic of 2020, which nearly every firm also discussed; the reference
   quarter, which had no pandemic, can. The reference is the bundled sample (173 calls of 2016Q4,
   ftm.sample): its themes spread that evenly, found by this same reduce
   (scripts/ordinary_language.py writes `ordinary_language.npz` beside this module).

Evenness: of m = min(theme sentences, quarter firms) of the theme's sentences, drawn by a seeded
permutation, the share of firms they reach, over the share that m sentences drawn from the whole
quarter would reach in expectation (Σ_f 1 − (1 − n_f/N)^m). Boilerplate is near 1; a subject that
some firms discuss at length and others not at all is well below.

The numbers a theme was classified by are kept in themes.parquet (`number_share`, `evenness`,
`ordinary_similarity`), so a researcher can check or redraw the line.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np

from ftm.settings import ReduceSettings

Kind = Literal["theme", "reporting"]

_REFERENCE = "ordinary_language.npz"


@dataclass(frozen=True)
class OrdinaryLanguage:
    """The themes an ordinary quarter's firms all talk about, as unit vectors in the centred
    embedding space of the model that made them."""

    model: str
    vectors: np.ndarray  # float32, unit rows
    keywords: list[str]  # each reference theme's keywords, joined: for people, not for the rule


def load_ordinary_language() -> OrdinaryLanguage | None:
    """The reference shipped with ftm, or None if the file is missing (a stripped install)."""
    try:
        data = resources.files(__package__).joinpath(_REFERENCE).read_bytes()
    except FileNotFoundError:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return OrdinaryLanguage(
            model=str(arrays["model"]),
            vectors=arrays["vectors"].astype(np.float32),
            keywords=[str(words) for words in arrays["keywords"]],
        )


def evenness(member_firms: np.ndarray, firm_share: np.ndarray, seed: int) -> float:
    """How evenly a theme's sentences (`member_firms`: each one's firm index) spread over the
    quarter's firms (`firm_share`: each firm's share of the quarter's sentences); see above."""
    m = min(len(member_firms), len(firm_share))
    if m == 0:
        return 0.0
    drawn = member_firms[np.random.default_rng(seed).permutation(len(member_firms))[:m]]
    expected = float(np.sum(1.0 - np.power(1.0 - firm_share, m)))
    return len(np.unique(drawn)) / expected if expected > 0 else 0.0


def kind_of(
    number_share: float, even: float, ordinary_similarity: float | None, settings: ReduceSettings
) -> Kind:
    """The rule of the module docstring; `ordinary_similarity` is None where no reference applies."""
    if number_share >= settings.reporting_number_share:
        return "reporting"
    ordinary = (
        ordinary_similarity is not None and ordinary_similarity >= settings.reporting_ordinary_similarity
    )
    return "reporting" if even >= settings.reporting_evenness and ordinary else "theme"
