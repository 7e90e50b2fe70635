"""What the page of a measured subject shows (`ftm report --measure NAME`), read from
`measures/NAME/` into one JSON-able document, columnar and scaled as content.py's: the subject
and how it was measured (to cite), per quarter its threshold and the series' two numbers, every
firm ranked by exposure, and the closest sentences of the firms with any.

Firms' names are not in the measure's panel; they come from the prefetch where it is still there
(a WRDS firm_id is a number, which no one searches for). Evidence is capped as the theme page's
is (`EVIDENCE_BUDGET` sentences a page): each firm's closest `EVIDENCE_STEPS` sentences, the
first step that fits; `sentences.parquet` holds all of them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ftm import layout
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.reduce import read_firm_keys
from ftm.report.content import EVIDENCE_BUDGET, Firms, clip, iso_day, scaled, without_missing
from ftm.schemas import MEASURE_FIRM_QUARTER, MEASURE_SENTENCES, MeasureSubject
from ftm.storage import Store

# A firm is exposed with at least two sentences about the subject: benchmarks/measure.py's
# convention (one sentence is often a passing mention), as a theme's firms are those with two.
EXPOSED_SENTENCES = 2
EVIDENCE_STEPS = (5, 3, 2, 1)  # sentences per firm, the first whose total fits the budget


def read_subject(store: Store, name: str) -> MeasureSubject | None:
    """The measure's record, or None where it was never measured (or is not finished: the record
    is written last)."""
    path = layout.measure_subject(name)
    return MeasureSubject.model_validate(store.read_json(path)) if store.exists(path) else None


def ranked(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel's rows by exposure: largest share first, then more sentences, then firm id; a
    firm without sentences (no share) last."""
    return panel.sort_values(
        ["quarter", "share", "n_sentences", "firm_id"],
        ascending=[True, False, False, True],
        na_position="last",
        ignore_index=True,
    )


def gather_measure(store: Store, subject: MeasureSubject, quarters: list[Quarter]) -> dict[str, Any]:
    """The document of the measure's page over `quarters`, which the measure holds."""
    labels = [str(quarter) for quarter in quarters]
    panel = store.read_table(layout.measure_firm_quarter(subject.name), MEASURE_FIRM_QUARTER).to_pandas()
    panel = ranked(panel[panel.quarter.isin(labels)])
    evidence = store.read_table(layout.measure_sentences(subject.name), MEASURE_SENTENCES).to_pandas()
    evidence = evidence[evidence.quarter.isin(labels)]
    names = _firm_names(store, quarters)
    firms = Firms()
    firms.add(
        without_missing(panel[["firm_id", "permno", "gvkey"]].assign(firm_name=panel.firm_id.map(names)))
    )
    calibrations = {calibration.quarter: calibration for calibration in subject.quarters}
    budget = EVIDENCE_BUDGET // len(labels)
    pages = []
    for label in labels:
        rows = panel[panel.quarter == label]
        exposed = int((rows.n_sentences >= EXPOSED_SENTENCES).sum())
        calibration = calibrations[label]
        said = _evidence(evidence[evidence.quarter == label], rows, budget)
        pages.append(
            {
                "quarter": label,
                "threshold": calibration.threshold,
                "n_sentences": calibration.n_sentences,
                "n_selected": calibration.n_selected,
                "n_firms": len(rows),
                "n_firms_exposed": exposed,
                # The series: plain fractions, a few numbers a quarter, so not scaled.
                "exposed_share": round(exposed / len(rows), 6) if len(rows) else None,
                "mean_share": None if rows.share.isna().all() else round(float(rows.share.mean()), 6),
                # Every firm of the quarter, ranked (`ranked`): a zero is a measured zero.
                "firms": {
                    "firm": firms.of(rows.firm_id),
                    "n": rows.n_sentences.astype(int).tolist(),
                    "share": scaled(rows.share, 10_000),
                    "tone": scaled(rows.net_tone, 100),
                    "date": [iso_day(value) for value in rows.earnings_call_date],
                },
                "evidence": {
                    "firm": firms.of(said.firm_id),
                    "similarity": [round(float(value), 3) for value in said.similarity],
                    "text": [clip(text) if isinstance(text, str) else "" for text in said.text],
                },
            }
        )
    return {
        "subject": {
            "name": subject.name,
            "description": subject.description,
            "examples": list(subject.examples),
            "model": subject.model,
            "embedding": subject.embedding,
            "rule": subject.rule,
            "subject_hash": subject.subject_hash,
            "ftm_version": subject.ftm_version,
        },
        "firms": firms.columns(),
        "quarters": pages,
    }


def _evidence(sentences: pd.DataFrame, rows: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Each firm's closest sentences, firms in the ranking's order, as many as the budget allows."""
    rank = pd.Series(range(len(rows)), index=rows.firm_id.to_numpy())
    chosen = sentences.assign(firm_rank=sentences.firm_id.map(rank))
    chosen = chosen.sort_values(
        ["firm_rank", "similarity", "sentence_id"], ascending=[True, False, True], ignore_index=True
    )
    within = chosen.groupby("firm_id").cumcount()
    for per_firm in EVIDENCE_STEPS:
        kept = chosen[within < per_firm]
        if len(kept) <= budget:
            return kept
    return kept.head(budget)  # more firms than the budget has sentences: the most exposed


def _firm_names(store: Store, quarters: list[Quarter]) -> dict[str, str]:
    """firm_id → name, from each quarter's prefetch that is still there; a later quarter's wins."""
    names: dict[str, str] = {}
    for quarter in quarters:
        if store.exists(layout.prefetch_manifest(quarter)):
            keys = read_firm_keys(store, quarter, read_manifest(store, quarter))
            names.update({firm: key.firm_name for firm, key in keys.items() if key.firm_name})
    return names
