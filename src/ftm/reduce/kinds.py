"""A theme's `kind`, three ways, by a rule that uses no word lists and no event:

- `theme`: a subject that drew unusual attention this quarter, or a specific subject;
- `routine`: ongoing business language at its ordinary level (margins, customers, cash flow);
- `reporting`: results, reconciliations, guidance boilerplate, safe harbour, greetings.

The rule, the same for every quarter:

1. **Salient themes are themes.** A theme whose salience (salience.py: ln of its attention over its
   ordinary attention) is at least `reduce.salient` is a `theme`, whatever its numbers or spread: a
   subject that more than half the firms suddenly discuss in rates and amounts is news.
2. **Reporting language** is the rest that either
   - **states numbers**: at least `reduce.reporting_number_share` of its sentences state a number
     of their own (a digit that starts a token, years left out; not "COVID-19" or "Q3"): "revenue
     was $1.2 billion, up 5%", "we expect a tax rate of 24%"; or
   - **is what every firm says every quarter**: its sentences are spread over the quarter's firms
     as evenly as the quarter's own sentences are (evenness at least `reduce.reporting_evenness`),
     and the same language is said as evenly in an ordinary quarter (its centroid within cosine
     `reduce.reporting_ordinary_similarity` of one of the reference's). The reference is the
     bundled sample (173 calls of 2016Q4, ftm.sample): its themes spread that evenly, found by this
     same reduce (scripts/ordinary_language.py writes `ordinary_language.npz` beside this module).
3. **Routine** is the rest spread over the firms at least `reduce.routine_evenness` as evenly as
   the quarter's sentences: many firms discussing it at its ordinary level. A subject only some
   firms discuss (an industry's) stays a `theme`: specific, if not unusual.

Without a salience (no reference of ordinary attention for the map's model), rule 1 and the
routine kind do not apply, and a theme is a `theme` or `reporting` as before.

Evenness: of m = min(theme sentences, quarter firms) of the theme's sentences, drawn by a seeded
permutation, the share of firms they reach, over the share that m sentences drawn from the whole
quarter would reach in expectation (Σ_f 1 − (1 − n_f/N)^m). Boilerplate is near 1; a subject that
some firms discuss at length and others not at all is well below.

The numbers a theme was classified by are kept in themes.parquet (`salience`, `number_share`,
`evenness`, `ordinary_similarity`), so a researcher can check or redraw the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ftm.reduce.references import shipped
from ftm.settings import ReduceSettings

Kind = Literal["theme", "routine", "reporting"]
# The default order of kinds: what a researcher looks at first.
KINDS: tuple[Kind, ...] = ("theme", "routine", "reporting")

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
    arrays = shipped(_REFERENCE)
    if arrays is None:
        return None
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
    number_share: float,
    even: float,
    ordinary_similarity: float | None,
    settings: ReduceSettings,
    salience: float | None = None,
) -> Kind:
    """The rule of the module docstring; `ordinary_similarity` is None where no reference applies,
    and `salience` None where no reference of ordinary attention does."""
    if salience is not None and salience >= settings.salient:
        return "theme"
    if number_share >= settings.reporting_number_share:
        return "reporting"
    ordinary = (
        ordinary_similarity is not None and ordinary_similarity >= settings.reporting_ordinary_similarity
    )
    if even >= settings.reporting_evenness and ordinary:
        return "reporting"
    if salience is not None and even >= settings.routine_evenness:
        return "routine"
    return "theme"
