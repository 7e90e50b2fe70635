"""`ftm measure`: each firm's exposure to subjects the researcher names, quarter by quarter, with
the sentences behind every number.

Per quarter it reads the sentence embeddings the map stored (the parts its checkpoints list) and
never embeds a sentence again; only the descriptions (and their example sentences) are embedded,
with the map's model and embedding path (`Embedder`, the `embedding` settings). Which sentences
are about a subject is `calibration.py`'s rule. A firm's exposure is the share of its prefetched
sentences that are about the subject, as the panel's `share`; their Loughran-McDonald tone is
counted as `ftm trends` counts it. Every prefetched firm gets a row, so a zero is a measured zero.

Each quarter's tables go to `measures/NAME/_quarters/Q/`, then its calibration record, which
marks the quarter done; a rerun (after a kill, or with more quarters) keeps the quarters done for
the same subject and embedding path. The range's files are then written from those, and
`subject.json` last. Every write is atomic (`Store`), and nothing in the files depends on when
or in how many attempts they were made, so a rerun gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ftm import __version__, layout
from ftm.errors import DataError
from ftm.map import Embedder
from ftm.measures.calibration import RULE, Calibrated, calibrate
from ftm.measures.subjects import Subject, subjects_from
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter, parse_quarters
from ftm.reduce import QuarterSentences, mapped_state, read_sentences, texts_of
from ftm.schemas import (
    MEASURE_FIRM_QUARTER,
    MEASURE_SENTENCES,
    MeasureCalibration,
    MeasureSubject,
    content_hash,
    pandas_integers,
)
from ftm.settings import FtmSettings, load_settings
from ftm.storage import Store
from ftm.tone import count_tone, net_tone


@dataclass(frozen=True)
class MeasureProgress:
    phase: str  # "embedding" (the descriptions), "reading" (a quarter's parts), "measuring", "writing"
    quarter: str | None = None
    done: int = 0  # quarters done
    total: int = 0


@dataclass
class MeasureResult:
    quarters: list[str]
    subjects: list[str]
    calibrations: dict[str, list[MeasureCalibration]]  # subject → one per quarter
    reused: list[str] = field(default_factory=list)  # quarters every subject had already
    panels: dict[str, pa.Table] = field(default_factory=dict)  # subject → firm_quarter


def measure(
    store: Store | str,
    quarters: str | Sequence[Quarter | str],
    subjects: Mapping[str, Any] | list[Subject],
    *,
    settings: FtmSettings | None = None,
    on_progress: Callable[[MeasureProgress], None] = lambda progress: None,
) -> pd.DataFrame:
    """Measures `subjects` (name → description, or a table with description and examples, as in a
    subjects TOML file; or `Subject`s) over `quarters` ("2021Q1..2021Q4", or a list) of the storage
    root, writes `measures/NAME/` for each and returns the firm × quarter panels, one below the
    other with a `subject` column first. `settings` default to ./ftm.toml and FTM_* variables."""
    store = Store(store) if isinstance(store, str) else store
    if isinstance(quarters, str):
        wanted = parse_quarters(quarters)
    else:
        wanted = sorted({q if isinstance(q, Quarter) else Quarter.parse(q) for q in quarters})
    result = measure_subjects(
        settings or load_settings(None), store, wanted, subjects_from(subjects), on_progress
    )
    frames = [
        result.panels[name].to_pandas().assign(subject=name)[["subject", *MEASURE_FIRM_QUARTER.names]]
        for name in result.subjects
    ]
    return pd.concat(frames, ignore_index=True)


def measure_subjects(
    settings: FtmSettings,
    store: Store,
    quarters: list[Quarter],
    subjects: list[Subject],
    on_progress: Callable[[MeasureProgress], None] = lambda progress: None,
) -> MeasureResult:
    """The stage: checks every quarter is mapped before any work, embeds the descriptions, measures
    each quarter not done yet, then writes each subject's files (see the module docstring)."""
    manifests, states = {}, {}
    for quarter in quarters:
        manifests[quarter] = read_manifest(store, quarter)  # never prefetched: "run ftm prefetch Q"
        states[quarter] = mapped_state(store, quarter, allow_partial=None)
    on_progress(MeasureProgress("embedding", total=len(quarters)))
    embedder = Embedder(settings.embedding)
    path = {key: embedder.model_info()[key] for key in ("device", "backend", "precision", "dimensions")}
    queries = np.stack([_query(embedder, subject) for subject in subjects])
    hashes = {subject.name: _subject_hash(subject, settings.embedding.model, path) for subject in subjects}
    result = MeasureResult(
        [str(q) for q in quarters], [s.name for s in subjects], {s.name: [] for s in subjects}
    )
    for done, quarter in enumerate(quarters):
        due = [i for i, s in enumerate(subjects) if _done(store, s.name, quarter, hashes[s.name]) is None]
        if due:
            on_progress(MeasureProgress("reading", str(quarter), done, len(quarters)))
            sentences = read_sentences(
                store, quarter, manifests[quarter], states[quarter].embedding_files, with_text=False
            )
            if sentences.n == 0:
                raise DataError(
                    f"the map of {quarter} embedded no sentence of any firm: `ftm watch` shows why"
                )
            on_progress(MeasureProgress("measuring", str(quarter), done, len(quarters)))
            calibrated = calibrate(sentences.embeddings, queries[due], path["device"])
            _measure_quarter(store, quarter, sentences, [subjects[i] for i in due], calibrated, hashes)
            del sentences  # 1.5 GB at 2,000,000 sentences: gone before the next quarter's
        else:
            result.reused.append(str(quarter))
        for subject in subjects:
            record = _done(store, subject.name, quarter, hashes[subject.name])
            assert record is not None
            result.calibrations[subject.name].append(record)
    on_progress(MeasureProgress("writing", done=len(quarters), total=len(quarters)))
    for subject in subjects:
        result.panels[subject.name] = _write_range(
            store, subject, quarters, result.calibrations[subject.name], hashes[subject.name], settings, path
        )
    return result


def _query(embedder: Embedder, subject: Subject) -> np.ndarray:
    """The description and its examples, embedded and averaged into one unit vector."""
    vectors = embedder.encode([subject.description, *subject.examples])
    mean = vectors.mean(axis=0)
    return mean / np.linalg.norm(mean)


def _subject_hash(subject: Subject, model: str, path: dict[str, str]) -> str:
    what = {"description": subject.description, "examples": list(subject.examples), "model": model}
    return content_hash({**what, "embedding": path, "rule": RULE})[:16]


def _done(store: Store, name: str, quarter: Quarter, subject_hash: str) -> MeasureCalibration | None:
    """The quarter's calibration record when it was measured for this very subject."""
    path = layout.measure_calibration(name, quarter)
    if not store.exists(path):
        return None
    record = MeasureCalibration.model_validate(store.read_json(path))
    return record if record.subject_hash == subject_hash else None


def _measure_quarter(
    store: Store,
    quarter: Quarter,
    sentences: QuarterSentences,
    subjects: list[Subject],
    calibrated: list[Calibrated],
    hashes: dict[str, str],
) -> None:
    """Writes each subject's two tables of the quarter, then its calibration record."""
    selected = [np.flatnonzero(c.selected) for c in calibrated]
    rows = np.unique(np.concatenate(selected)) if selected else np.zeros(0, np.int64)
    ids = sentences.sentence_ids.take(pa.array(rows)).to_pylist()
    texts = texts_of(store, quarter, ids)
    text_of_row = dict(zip(rows.tolist(), (texts.get(i) for i in ids), strict=True))
    tone_of_row = dict(zip(rows.tolist(), count_tone([texts.get(i) or "" for i in ids]), strict=True))
    firm_ids = sorted(sentences.firms)  # every prefetched firm, mapped or not
    place = np.searchsorted(firm_ids, sentences.firm_ids)  # mapped firm index → its place there
    for subject, calibration, picked in zip(subjects, calibrated, selected, strict=True):
        firm_of = place[sentences.firm[picked]]
        counts = np.bincount(firm_of, minlength=len(firm_ids))
        tone = np.zeros((len(firm_ids), 3), np.int64)
        if len(picked):
            np.add.at(tone, firm_of, np.stack([tone_of_row[row] for row in picked.tolist()]))
        keys = [sentences.firms[firm] for firm in firm_ids]
        total = np.array([key.n_sentences for key in keys], np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, counts / total, np.nan)
        firms = pa.table(
            {
                "quarter": [str(quarter)] * len(firm_ids),
                "firm_id": firm_ids,
                "permno": [key.permno for key in keys],
                "gvkey": [key.gvkey for key in keys],
                "earnings_call_date": [key.earnings_call_date for key in keys],
                "n_sentences": counts.astype(np.int32),
                "share": pa.array(share, pa.float64(), from_pandas=True),
                "positive": tone[:, 0].astype(np.int32),
                "negative": tone[:, 1].astype(np.int32),
                "uncertainty": tone[:, 2].astype(np.int32),
                "net_tone": pa.array(net_tone(tone[:, 0], tone[:, 1]), pa.float64(), from_pandas=True),
            },
            schema=MEASURE_FIRM_QUARTER.with_metadata(pandas_integers("permno")),
        )
        evidence = pa.table(
            {
                "quarter": [str(quarter)] * len(picked),
                "firm_id": [sentences.firm_ids[i] for i in sentences.firm[picked]],
                "sentence_id": sentences.sentence_ids.take(pa.array(picked, pa.int64())),
                "similarity": calibration.similarity[picked].astype(np.float32),
                "text": [text_of_row[row] for row in picked.tolist()],
            },
            schema=MEASURE_SENTENCES,
        )
        store.write_table(layout.measure_quarter_firms(subject.name, quarter), firms)
        store.write_table(layout.measure_quarter_sentences(subject.name, quarter), evidence)
        record = MeasureCalibration(
            quarter=str(quarter),
            subject_hash=hashes[subject.name],
            threshold=round(calibration.threshold, 6),
            pseudo_relevant_similarity=round(calibration.pseudo_relevant_similarity, 6),
            n_sentences=sentences.n,
            n_selected=len(picked),
            n_firms=len(firm_ids),
            n_firms_exposed=int((counts > 0).sum()),
        )
        store.write_json(layout.measure_calibration(subject.name, quarter), record.model_dump(mode="json"))


def _write_range(
    store: Store,
    subject: Subject,
    quarters: list[Quarter],
    calibrations: list[MeasureCalibration],
    subject_hash: str,
    settings: FtmSettings,
    path: dict[str, str],
) -> pa.Table:
    """The subject's files for the range, from its quarters' tables; subject.json last."""
    tables = {}
    for schema, part, whole in (
        (MEASURE_FIRM_QUARTER, layout.measure_quarter_firms, layout.measure_firm_quarter),
        (MEASURE_SENTENCES, layout.measure_quarter_sentences, layout.measure_sentences),
    ):
        table = pa.concat_tables([store.read_table(part(subject.name, q), schema) for q in quarters])
        if schema is MEASURE_FIRM_QUARTER:
            table = table.replace_schema_metadata(pandas_integers("permno"))
        store.write_table(whole(subject.name), table)
        tables[schema] = table
    record = MeasureSubject(
        name=subject.name,
        description=subject.description,
        examples=list(subject.examples),
        subject_hash=subject_hash,
        model=settings.embedding.model,
        embedding=path,
        rule=RULE,
        quarters=calibrations,
        ftm_version=__version__,
    )
    store.write_json(layout.measure_subject(subject.name), json.loads(record.model_dump_json()))
    return tables[MEASURE_FIRM_QUARTER]
