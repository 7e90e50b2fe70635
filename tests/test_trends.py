"""`ftm trends` on small reduced quarters written as reduce writes them (the same schemas and
paths): tone counted by hand, lineages that keep their ids when quarters are added, the trend
flags' rule, and a range with a quarter never reduced refused with what to do.

Each quarter here has four subjects, each a theme with its own direction in embedding space
(plus the common direction every earnings-call sentence shares, which lineages must see past).
The end-to-end run on real transcripts is in test_run.py."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftm import layout
from ftm.cli import main
from ftm.map import records
from ftm.plan import write_plan
from ftm.quarters import Quarter, parse_quarters
from ftm.schemas import (
    FIRM_THEME_EXPOSURE,
    SENTENCES,
    THEME_SENTENCES,
    THEMES,
    Batch,
    BatchCheckpoint,
    ChunkInfo,
    PrefetchManifest,
)
from ftm.settings import load_settings
from ftm.storage import Store
from ftm.tone import count_tone, net_tone
from ftm.trends import trends_range

DIMENSIONS = 16
COMMON = np.ones(DIMENSIONS) * 3.0  # what every quarter's themes share
FIRMS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def _subject(number: int, seed: int = 0) -> np.ndarray:
    """Subject `number`'s own direction, a little perturbed by `seed` (another quarter's view).
    Subject 6 is a narrower part of subject 0: mostly its direction, partly its own."""
    if number == 6:
        part = np.zeros(DIMENSIONS)
        part[6] = 0.45
        return _subject(0, seed) + part
    vector = np.zeros(DIMENSIONS)
    vector[number] = 1.0
    vector += np.random.default_rng(1000 * number + seed).normal(0, 0.05, DIMENSIONS)
    return vector


def write_quarter(
    root: Path,
    quarter: str,
    subjects: list[int],
    firms_of: dict[int, list[str]],
    seed: int = 0,
    unthemed: dict[int, list[str]] | None = None,
) -> None:
    """A reduced quarter: theme i is subject `subjects[i]`, talked about by `firms_of[subject]`,
    two sentences per firm; every firm also has one sentence in no theme. Theme sentences carry
    one positive word ("strong") and, in odd subjects, one negative word ("decline"). `unthemed`
    subjects are talked about the same way (two sentences per firm) but are in no theme."""
    store, q = Store(str(root)), Quarter.parse(quarter)
    rows: dict[str, list] = {name: [] for name in SENTENCES.names}
    members: dict[str, list] = {name: [] for name in THEME_SENTENCES.names}
    per_firm: dict[str, list[str]] = {firm: [] for firm in FIRMS}
    vector_of: dict[str, np.ndarray] = {}  # what the map would have embedded
    noise = np.random.default_rng(seed)

    def sentence(firm: str, text: str, subject: int | None = None) -> str:
        sentence_id = f"{firm}-{quarter}/{len(per_firm[firm])}"
        per_firm[firm].append(sentence_id)
        if subject is None:  # about nothing: a direction no subject has
            vector = COMMON + np.concatenate([np.zeros(8), noise.normal(0, 1, DIMENSIONS - 8)])
        else:
            vector = COMMON + _subject(subject, seed) + noise.normal(0, 0.02, DIMENSIONS)
        vector_of[sentence_id] = vector / np.linalg.norm(vector)
        for name, value in {
            "firm_id": firm,
            "firm_name": f"{firm} Inc",
            "permno": 10_000 + FIRMS.index(firm),
            "gvkey": f"{FIRMS.index(firm) + 1:06d}",
            "transcript_id": f"{firm}-{quarter}",
            "transcript_collection": None,
            "earnings_call_date": q.start.replace(day=15),
            "quarter": quarter,
            "sentence_id": sentence_id,
            "raw_text": text,
            "cleaned_text": text.lower(),
            "speaker_type": "answer",
            "position": len(per_firm[firm]) - 1,
        }.items():
            rows[name].append(value)
        return sentence_id

    for theme_id, subject in enumerate(subjects):
        for firm in firms_of[subject]:
            for k in range(2):
                tone = "with a decline in orders" if subject % 2 else "with steady orders"
                text = f"Subject {subject} is strong this quarter, {tone}, part {k}."
                said = sentence(firm, text, subject)
                for name, value in zip(THEME_SENTENCES.names, [theme_id, firm, said, 0.9, True], strict=True):
                    members[name].append(value)
    for subject, firms in (unthemed or {}).items():
        for firm in firms:
            for k in range(2):
                sentence(firm, f"Subject {subject} came up again, part {k}.", subject)
    for firm in FIRMS:
        sentence(firm, "Nothing of note was said here at all.")
    order = np.lexsort((rows["position"], rows["firm_id"]))
    chunk = pa.table({name: [rows[name][i] for i in order] for name in SENTENCES.names}, schema=SENTENCES)
    store.write_table(layout.prefetch_chunk(q, 0), chunk, SENTENCES)
    manifest = PrefetchManifest(
        quarter=quarter,
        n_firms=len(FIRMS),
        n_chunks=1,
        n_sentences=chunk.num_rows,
        firm_to_chunk=dict.fromkeys(FIRMS, layout.chunk_name(0)),
        chunks=[ChunkInfo(file=layout.chunk_name(0), n_firms=len(FIRMS), n_rows=chunk.num_rows, bytes=0)],
    )
    store.write_json(layout.prefetch_manifest(q), manifest.to_json())
    _write_map(store, q, chunk, vector_of)
    store.write_table(layout.theme_sentences(q), pa.table(members, schema=THEME_SENTENCES))
    exposure: dict[str, list] = {name: [] for name in FIRM_THEME_EXPOSURE.names}
    for theme_id, subject in enumerate(subjects):
        for firm in sorted(firms_of[subject]):
            values = [quarter, firm, 10_000 + FIRMS.index(firm), f"{FIRMS.index(firm) + 1:06d}", theme_id]
            values += [2, 2 / len(per_firm[firm]), 2]
            for name, value in zip(FIRM_THEME_EXPOSURE.names, values, strict=True):
                exposure[name].append(value)
    store.write_table(layout.firm_theme_exposure(q), pa.table(exposure, schema=FIRM_THEME_EXPOSURE))
    centroids = [COMMON + _subject(subject, seed) for subject in subjects]
    centroids = [list(c / np.linalg.norm(c)) for c in centroids]
    themes = {
        "theme_id": list(range(len(subjects))),
        "quarter": [quarter] * len(subjects),
        "kind": ["theme"] * len(subjects),
        "keywords": [[f"subject{s}"] for s in subjects],
        "representation": [f"subject{s}" for s in subjects],
        "salience": [None] * len(subjects),
        "attention_share": [None] * len(subjects),
        "baseline_share": [None] * len(subjects),
        "share_of_firms": [len(firms_of[s]) / len(FIRMS) for s in subjects],
        "n_firms": [len(firms_of[s]) for s in subjects],
        "n_topics": [0] * len(subjects),
        "n_sentences": [2 * len(firms_of[s]) for s in subjects],
        "number_share": [0.0] * len(subjects),
        "evenness": [0.0] * len(subjects),
        "ordinary_similarity": [None] * len(subjects),
        "representative_sentences": [[] for _ in subjects],
        "centroid": pa.array(centroids, pa.list_(pa.float32(), DIMENSIONS)),
    }
    fields = [
        f if f.name != "centroid" else pa.field("centroid", pa.list_(pa.float32(), DIMENSIONS))
        for f in THEMES
    ]
    store.write_table(layout.themes(q), pa.table(themes, schema=pa.schema(fields)))


def _write_map(store: Store, quarter: Quarter, chunk: pa.Table, vector_of: dict[str, np.ndarray]) -> None:
    """The map's outputs the trends measure from: one finished batch, its sentence embeddings."""
    ids = chunk.column("sentence_id").to_pylist()
    vectors = np.stack([vector_of[sentence_id] for sentence_id in ids]).astype(np.float16)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float16()), DIMENSIONS)
    part = layout.sentence_embeddings_part(quarter, "batch_000", 0)
    store.write_table(
        part, pa.table({"firm_id": chunk.column("firm_id"), "sentence_id": ids, "embedding": embedding})
    )
    write_plan(store, quarter, [Batch(batch_id="batch_000", firm_ids=FIRMS)])
    checkpoint = BatchCheckpoint(
        batch_id="batch_000",
        attempt=1,
        completed_firm_ids=FIRMS,
        part_files=[],
        embedding_files=[part],
        finished=True,
        updated_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    records.write_checkpoint(store, quarter, checkpoint)


def _settings(root: Path):
    return load_settings(None, overrides={"storage": {"root": str(root)}})


def _read(root: Path, label: str, name: str):
    return pq.read_table(root / "trends" / label / f"{name}.parquet").to_pandas()


# Subject 0 everywhere; subject 1 fades; subject 2 appears in the second quarter and spreads.
SPREAD = {0: FIRMS[:3], 1: FIRMS[:4], 2: FIRMS[:2], 3: FIRMS[1:4]}


def _three_quarters(root: Path) -> None:
    write_quarter(root, "2020Q1", [0, 1, 3], SPREAD, seed=1)
    write_quarter(root, "2020Q2", [2, 0, 1, 3], {**SPREAD, 1: FIRMS[:1]}, seed=2)  # theme ids move
    write_quarter(root, "2020Q3", [3, 2, 0], {**SPREAD, 2: FIRMS}, seed=3)


def test_tone_counts_loughran_mcdonald_words_as_counted_by_hand() -> None:
    # positive: strong, improved, despite (LM lists it); negative: difficult, losses, question;
    # uncertainty: uncertain, may. "Don't" and "long-term" split into words, as LM's lists do.
    text = (
        "Our outlook is strong and margins improved despite a difficult, uncertain market; "
        "we may see losses. Don't question our long-term plan."
    )
    counts = count_tone([text, "Revenue was 12 million dollars.", ""])
    assert counts.tolist() == [[3, 3, 2], [0, 0, 0], [0, 0, 0]]
    assert net_tone(np.array([3, 0, 1]), np.array([1, 0, 1])).tolist()[0] == pytest.approx(0.5)
    assert np.isnan(net_tone(np.array([0]), np.array([0]))[0])  # no tone words: no tone, not 0


def test_lineages_follow_subjects_whose_theme_ids_change_and_new_subjects_start_lineages(
    tmp_path: Path,
) -> None:
    _three_quarters(tmp_path)
    result = trends_range(_settings(tmp_path), parse_quarters("2020Q1..2020Q3"))
    lineages = _read(tmp_path, "2020Q1..2020Q3", "lineages")
    subject = {
        (row.quarter, row.theme_id): int(row.keywords[0].removeprefix("subject"))
        for row in lineages.itertuples()
    }
    by_lineage = lineages.assign(
        subject=[subject[(q, t)] for q, t in zip(lineages.quarter, lineages.theme_id, strict=True)]
    )
    # Each lineage is one subject, and each subject one lineage, whatever its theme ids.
    assert by_lineage.groupby("lineage_id").subject.nunique().max() == 1
    assert by_lineage.groupby("subject").lineage_id.nunique().max() == 1
    assert result.n_lineages == 4 and result.newly_matched == ["2020Q1", "2020Q2", "2020Q3"]
    first = by_lineage[by_lineage.quarter == "2020Q1"].set_index("subject").lineage_id
    assert first.to_dict() == {0: 0, 1: 1, 3: 2}  # numbered in the first quarter's theme order
    assert by_lineage.similarity.isna().sum() == 4  # one start per lineage
    assert (by_lineage.similarity.dropna() >= 0.8).all()  # trends.min_similarity


def test_the_panel_carries_the_lineage_ids_and_tone_of_each_firms_sentences(tmp_path: Path) -> None:
    _three_quarters(tmp_path)
    trends_range(_settings(tmp_path), parse_quarters("2020Q1..2020Q3"))
    panel = _read(tmp_path, "2020Q1..2020Q3", "firm_theme_quarter")
    row = panel[(panel.quarter == "2020Q2") & (panel.firm_id == "BBB") & (panel.theme_id == 3)].iloc[0]
    # Two sentences of subject 3 (odd): "strong" twice, "decline" twice.
    assert (row.positive, row.negative, row.uncertainty, row.net_tone) == (2, 2, 0, 0.0)
    assert (row.permno, row.gvkey, row.earnings_call_date) == (10_001, "000002", date(2020, 4, 15))
    even = panel[(panel.theme_id == 1) & (panel.quarter == "2020Q2")].iloc[0]  # subject 0
    assert (even.positive, even.negative, even.net_tone) == (2, 0, 1.0)
    lineages = _read(tmp_path, "2020Q1..2020Q3", "lineages").set_index(["quarter", "theme_id"]).lineage_id
    keys = zip(panel.quarter, panel.theme_id, panel.lineage_id, strict=True)
    assert all(lineages[(quarter, theme)] == lineage for quarter, theme, lineage in keys)
    assert len(panel) == (3 + 4 + 3) + (2 + 3 + 1 + 3) + (3 + 5 + 3)  # one row per firm and theme


def _lineage_of_subject(root: Path, label: str) -> pd.Series:
    return (
        _read(root, label, "lineages")
        .assign(subject=lambda frame: frame.keywords.map(lambda words: int(words[0].removeprefix("subject"))))
        .groupby("subject")
        .lineage_id.first()
    )


def test_trends_flag_emerging_and_fading_by_the_documented_rule(tmp_path: Path) -> None:
    _three_quarters(tmp_path)
    trends_range(_settings(tmp_path), parse_quarters("2020Q1..2020Q3"))
    trends = _read(tmp_path, "2020Q1..2020Q3", "trends")
    lineage = _lineage_of_subject(tmp_path, "2020Q1..2020Q3")
    grid = trends.set_index(["lineage_id", "quarter"])
    flag, share = grid.trend, grid.share_of_firms
    assert len(trends) == 4 * 3  # every lineage in every quarter
    # The measured share is the firms with 2 sentences about the subject: here, its theme's firms.
    themed = trends.theme_id.notna()
    assert (trends.share_of_firms[themed] == trends.firm_share[themed]).all()
    assert (trends.share_of_firms[~themed] == 0).all()
    # A quarter is flagged only with trends.window (2) quarters before it in the range.
    assert flag[(lineage[0], "2020Q1")] is None and flag[(lineage[0], "2020Q2")] is None
    assert all(flag[(lineage[subject], "2020Q2")] is None for subject in lineage.index)
    assert flag[(lineage[0], "2020Q3")] == "steady" and grid.momentum[(lineage[0], "2020Q3")] == 0
    assert share[(lineage[1], "2020Q2")] == pytest.approx(1 / 5)  # 4 firms, then 1
    # Absent: 0 of 5 firms against 4 and 1 of the same firms before, McNemar's z = -5 / sqrt(5).
    assert flag[(lineage[1], "2020Q3")] == "fading"
    assert grid.momentum[(lineage[1], "2020Q3")] == pytest.approx(0 - 5 / 10)
    assert share[(lineage[2], "2020Q1")] == 0
    assert flag[(lineage[2], "2020Q3")] == "emerging"  # 5 firms against 0, then 2: z = 8 / sqrt(8)
    # Tone over the measured sentences: odd subjects say "strong" and "decline" in each.
    tone = grid.net_tone
    assert tone[(lineage[1], "2020Q1")] == 0.0 and tone[(lineage[0], "2020Q1")] == 1.0
    assert (grid.positive[(lineage[1], "2020Q1")], grid.negative[(lineage[1], "2020Q1")]) == (8, 8)
    assert np.isnan(tone[(lineage[1], "2020Q3")])
    assert grid.net_tone_change[(lineage[0], "2020Q3")] == 0.0


def test_a_subject_talked_about_in_one_quarter_only_is_measured_near_zero_around_it_and_emerging(
    tmp_path: Path,
) -> None:
    write_quarter(tmp_path, "2021Q1", [0, 1], SPREAD, seed=1)
    write_quarter(tmp_path, "2021Q2", [0, 2, 1], {**SPREAD, 2: FIRMS}, seed=2)
    write_quarter(tmp_path, "2021Q3", [1, 0], SPREAD, seed=3)
    settings = load_settings(None, overrides={"storage": {"root": str(tmp_path)}, "trends": {"window": 1}})
    result = trends_range(settings, parse_quarters("2021Q1..2021Q3"))
    lineage = _lineage_of_subject(tmp_path, "2021Q1..2021Q3")[2]
    rows = _read(tmp_path, "2021Q1..2021Q3", "trends").set_index(["lineage_id", "quarter"]).loc[lineage]
    assert rows.share_of_firms.tolist() == [0.0, 1.0, 0.0]
    assert rows.measured_sentences.tolist() == [0, 10, 0]
    assert rows.trend.tolist() == [None, "emerging", "fading"]
    assert result.flagged_quarters == ["2021Q2", "2021Q3"] and result.unflagged_reason is None
    assert result.rising[0]["lineage_id"] != lineage  # it fell in the last quarter
    assert {row["lineage_id"] for row in result.rising} >= {lineage}


def test_a_lineage_without_a_theme_in_a_quarter_still_has_its_measured_share_there(tmp_path: Path) -> None:
    write_quarter(tmp_path, "2021Q1", [0, 1], SPREAD, seed=1)
    # Three firms still talk about subject 1 in 2021Q2, but no theme of that quarter holds it.
    write_quarter(tmp_path, "2021Q2", [0], SPREAD, seed=2, unthemed={1: FIRMS[2:]})
    write_quarter(tmp_path, "2021Q3", [1, 0], SPREAD, seed=3)
    trends_range(_settings(tmp_path), parse_quarters("2021Q1..2021Q3"))
    lineage = _lineage_of_subject(tmp_path, "2021Q1..2021Q3")[1]
    rows = _read(tmp_path, "2021Q1..2021Q3", "trends").set_index(["lineage_id", "quarter"]).loc[lineage]
    assert rows.theme_id.isna().tolist() == [False, True, False]
    assert rows.share_of_firms.tolist() == [4 / 5, 3 / 5, 4 / 5]
    assert rows.firm_share.tolist() == [4 / 5, 0.0, 4 / 5]


def test_a_narrower_theme_that_starts_a_lineage_links_to_its_parent(tmp_path: Path) -> None:
    write_quarter(tmp_path, "2021Q1", [0, 1], SPREAD, seed=1)
    # Subject 6 is a part of subject 0 (see _subject), beside subject 0's own theme.
    write_quarter(tmp_path, "2021Q2", [0, 6, 1], {**SPREAD, 6: FIRMS[3:]}, seed=2)
    trends_range(_settings(tmp_path), parse_quarters("2021Q1..2021Q2"))
    lineage = _lineage_of_subject(tmp_path, "2021Q1..2021Q2")
    lineages = _read(tmp_path, "2021Q1..2021Q2", "lineages").set_index("lineage_id")
    parents = lineages.parent_lineage_id.groupby(level=0).first()
    assert parents[lineage[6]] == lineage[0]
    assert parents.drop(lineage[6]).isna().all()
    trends = _read(tmp_path, "2021Q1..2021Q2", "trends")
    assert (trends[trends.lineage_id == lineage[6]].parent_lineage_id == lineage[0]).all()


def test_a_quarter_added_later_keeps_every_earlier_lineage_id(tmp_path: Path) -> None:
    write_quarter(tmp_path, "2020Q2", [2, 0, 1, 3], SPREAD, seed=2)
    write_quarter(tmp_path, "2020Q3", [3, 2, 0], SPREAD, seed=3)
    trends_range(_settings(tmp_path), parse_quarters("2020Q2..2020Q3"))
    before = _read(tmp_path, "2020Q2..2020Q3", "lineages")
    # A quarter after the range and one before it, with a subject never seen (4).
    write_quarter(tmp_path, "2020Q4", [0, 4, 2], {**SPREAD, 4: FIRMS[2:]}, seed=4)
    write_quarter(tmp_path, "2020Q1", [4, 1, 0], {**SPREAD, 4: FIRMS[2:]}, seed=1)
    result = trends_range(_settings(tmp_path), parse_quarters("2020Q1..2020Q4"))
    after = _read(tmp_path, "2020Q1..2020Q4", "lineages")
    assert result.newly_matched == ["2020Q1", "2020Q4"]
    kept = after[after.quarter.isin(["2020Q2", "2020Q3"])].reset_index(drop=True)
    assert kept[["lineage_id", "quarter", "theme_id"]].equals(before[["lineage_id", "quarter", "theme_id"]])
    subject_4 = after[after.keywords.map(lambda words: words[0] == "subject4")].lineage_id
    assert subject_4.nunique() == 1 and subject_4.iloc[0] == before.lineage_id.max() + 1
    # The earlier range's own files are rewritten the same.
    trends_range(_settings(tmp_path), parse_quarters("2020Q2..2020Q3"))
    assert _read(tmp_path, "2020Q2..2020Q3", "lineages").equals(before)


def test_running_trends_again_writes_byte_identical_files(tmp_path: Path) -> None:
    _three_quarters(tmp_path)
    folder = tmp_path / "trends" / "2020Q1..2020Q3"
    trends_range(_settings(tmp_path), parse_quarters("2020Q1..2020Q3"))
    first = {path.name: path.read_bytes() for path in folder.iterdir()}
    trends_range(_settings(tmp_path), parse_quarters("2020Q1..2020Q3"))
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == first
    assert set(first) == {"lineages.parquet", "trends.parquet", "firm_theme_quarter.parquet"}


def test_a_range_with_a_quarter_not_reduced_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_quarter(tmp_path, "2020Q1", [0, 1], SPREAD)
    assert main(["trends", "2020Q1..2020Q3", "--root", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())  # as one line, however the terminal wrapped it
    assert "2020Q2, 2020Q3 of 2020Q1..2020Q3 have no themes" in err and "ftm run 2020Q1..2020Q3" in err
    assert f"--root {tmp_path}" in err  # the hint runs where the data is
    assert not (tmp_path / "trends").exists()


def test_a_range_too_short_for_flags_has_none_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _three_quarters(tmp_path)
    assert main(["trends", "2020Q2..2020Q3", "--root", str(tmp_path)]) == 0
    assert _read(tmp_path, "2020Q2..2020Q3", "trends").trend.isna().all()
    assert "no emerging or fading flags" in " ".join(capsys.readouterr().err.split())
