"""`ftm reduce` on a quarter mapped by the real map stage (tests/reduce_inputs.py), and the linkage
on its own: a subject ten firms mention in two or three sentences each is one theme of exactly
those firms; every theme sentence is a prefetched sentence of its firm; exposure shares are the
firm's theme sentences over all its sentences; number-heavy themes are reporting language and come
after the investment themes; keywords are phrases without lemmatizer artefacts; runs repeat byte
for byte, also after a kill; an incomplete map, or one without sentence embeddings, is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from ftm import layout
from ftm.cli import main
from ftm.map import records
from ftm.plan import read_plan, sentence_counts
from ftm.prefetch import read_manifest
from ftm.reduce.clustering import average_linkage
from ftm.reduce.kinds import kind_of
from ftm.reduce.themes import METADATA_KEY, _class_tfidf
from ftm.schemas import (
    FIRM_THEME_EXPOSURE,
    FIRM_TOPICS,
    FIRMS,
    SENTENCES,
    THEME_SENTENCES,
    THEME_TOPICS,
    THEMES,
    FirmFailure,
    SkippedFirm,
)
from ftm.settings import ReduceSettings
from ftm.storage import Store
from reduce_inputs import PLANTED_FIRMS, QUARTER, batch_ids, mapped

SETTINGS = ReduceSettings()
OUTPUTS = ("themes", "theme_sentences", "theme_topics", "firm_theme_exposure", "firms")
WRITE_ORDER = ("theme_sentences", "theme_topics", "firm_theme_exposure", "firms", "themes")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, dict[str, Any]]]:
    return mapped(tmp_path_factory)


@pytest.fixture(scope="module")
def reduced(
    source: tuple[Path, Path, dict[str, dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One `ftm reduce --json` over a copy of the mapped quarter: its root, summary and tables."""
    root = tmp_path_factory.mktemp("reduced") / "root"
    shutil.copytree(source[0], root)
    code, summary = _reduce(root, source[1], "--json")
    assert code == 0
    store = Store(str(root))
    return {
        "root": root,
        "store": store,
        "summary": summary,
        "themes": store.read_table(layout.themes(QUARTER), THEMES).to_pylist(),
        "sentences": store.read_table(layout.theme_sentences(QUARTER), THEME_SENTENCES).to_pylist(),
        "theme_topics": store.read_table(layout.theme_topics(QUARTER), THEME_TOPICS).to_pylist(),
        "exposure": store.read_table(layout.firm_theme_exposure(QUARTER), FIRM_THEME_EXPOSURE).to_pylist(),
        "topics": _firm_topics(store),
        "prefetched": _prefetched(store),
    }


def _reduce(root: Path, config: Path, *extra: str) -> tuple[int, dict[str, Any] | None]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["--config", str(config), "reduce", "--quarter", str(QUARTER), "--root", str(root), *extra]
        )
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None


def _firm_topics(store: Store) -> dict[tuple[str, int], dict[str, Any]]:
    rows = {}
    for path in store.list(layout.firm_topics_folder(QUARTER)):
        columns = ["firm_id", "topic_id", "n_sentences", "keywords", "sentence_ids"]
        for row in store.read_table(path, FIRM_TOPICS, columns=columns).to_pylist():
            rows[(row["firm_id"], row["topic_id"])] = row
    return rows


def _prefetched(store: Store) -> dict[str, dict[str, Any]]:
    rows = {}
    for path in store.list(layout.prefetch_folder(QUARTER)):
        if path.endswith(".parquet"):
            columns = ["firm_id", "sentence_id", "raw_text"]
            for row in store.read_table(path, SENTENCES, columns=columns).to_pylist():
                rows[row["sentence_id"]] = row
    return rows


def _planted_firms(given: dict[str, dict[str, Any]]) -> set[str]:
    return {firm for firm, what in given.items() if what["planted"]}


# --- on the mapped quarter ----------------------------------------------------------------------


def test_a_subject_ten_firms_mention_in_a_few_sentences_is_one_theme_of_exactly_those_firms(
    reduced: dict[str, Any], source: tuple[Path, Path, dict[str, dict[str, Any]]]
) -> None:
    planted = _planted_firms(source[2])
    assert len(planted) == PLANTED_FIRMS
    # Too few sentences for a topic of its own in any firm: the map cannot see it.
    assert not any("quillon" in row["keywords"][:1] for row in reduced["topics"].values())
    quillon = {s for s, row in reduced["prefetched"].items() if "Quillon" in row["raw_text"]}
    themes_of = Counter(row["theme_id"] for row in reduced["sentences"] if row["sentence_id"] in quillon)
    theme_id, held = themes_of.most_common(1)[0]
    assert held == len(quillon)  # every planted sentence is in that one theme
    theme = reduced["themes"][theme_id]
    per_firm = Counter(row["firm_id"] for row in reduced["sentences"] if row["theme_id"] == theme_id)
    talking = {firm for firm, n in per_firm.items() if n >= SETTINGS.firm_min_sentences}
    assert talking == planted and theme["n_firms"] == len(planted)
    assert theme["kind"] == "theme"
    # Absent from every reference quarter, it drew unusual attention: ahead of every routine theme.
    assert theme["salience"] >= SETTINGS.salient
    assert all(theme_id < t["theme_id"] for t in reduced["themes"] if t["kind"] == "routine")
    assert "quillon" in theme["keywords"][:5]
    assert any(" " in word for word in theme["keywords"])  # a phrase, such as "brake sensors"
    assert all("Quillon" in sentence for sentence in theme["representative_sentences"])
    assert len(theme["representative_sentences"]) == SETTINGS.n_representative


def test_every_theme_sentence_is_a_prefetched_sentence_of_its_firm_and_themes_are_counted_right(
    reduced: dict[str, Any],
) -> None:
    themes, rows, prefetched = reduced["themes"], reduced["sentences"], reduced["prefetched"]
    assert themes and [t["theme_id"] for t in themes] == list(range(len(themes)))
    assert len({(r["theme_id"], r["sentence_id"]) for r in rows}) == len(rows)  # no sentence twice
    per_sentence = Counter(r["sentence_id"] for r in rows)
    assert max(per_sentence.values()) <= SETTINGS.memberships
    by_theme: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        assert prefetched[row["sentence_id"]]["firm_id"] == row["firm_id"]
        assert SETTINGS.min_membership - 1e-6 <= row["similarity"] <= 1.0 + 1e-6
        by_theme[row["theme_id"]].append(row)
    for theme in themes:
        members = by_theme[theme["theme_id"]]
        per_firm = Counter(r["firm_id"] for r in members)
        assert theme["n_sentences"] == len(members)
        assert theme["n_firms"] == sum(n >= SETTINGS.firm_min_sentences for n in per_firm.values())
        assert theme["n_firms"] >= SETTINGS.min_firms
        assert theme["keywords"] and theme["representation"] == "_".join(theme["keywords"][:4])
        assert np.isclose(np.linalg.norm(theme["centroid"]), 1.0, atol=1e-5)
        texts = {prefetched[r["sentence_id"]]["raw_text"] for r in members}
        assert set(theme["representative_sentences"]) <= texts
        assert theme["kind"] in ("theme", "routine", "reporting")
        share_of_firms = theme["n_firms"] / reduced["summary"]["n_firms"]
        assert theme["share_of_firms"] == pytest.approx(share_of_firms, abs=1e-6)


def test_exposure_is_the_share_of_a_firms_sentences_whose_primary_theme_it_is_with_permno_and_gvkey(
    reduced: dict[str, Any], source: tuple[Path, Path, dict[str, dict[str, Any]]]
) -> None:
    store, given = reduced["store"], source[2]
    totals = sentence_counts(store, QUARTER, read_manifest(store, QUARTER))
    rows = reduced["sentences"]
    in_theme = Counter((r["firm_id"], r["theme_id"]) for r in rows)
    primary = Counter((r["firm_id"], r["theme_id"]) for r in rows if r["primary"])
    # Each sentence in a theme has exactly one primary theme, its most similar.
    by_sentence: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_sentence[row["sentence_id"]].append(row)
    for memberships in by_sentence.values():
        assert sum(r["primary"] for r in memberships) == 1
        nearest = max(memberships, key=lambda r: (r["similarity"], -r["theme_id"]))
        assert nearest["primary"]
    exposure = reduced["exposure"]
    assert {(r["firm_id"], r["theme_id"]) for r in exposure} == set(in_theme)  # one row per pair
    for row in exposure:
        assert row["quarter"] == str(QUARTER)
        assert row["n_sentences_any"] == in_theme[(row["firm_id"], row["theme_id"])]
        assert row["n_sentences"] == primary[(row["firm_id"], row["theme_id"])] <= row["n_sentences_any"]
        assert row["share"] == pytest.approx(row["n_sentences"] / totals[row["firm_id"]])
        assert 0.0 <= row["share"] <= 1.0
        assert (row["permno"], row["gvkey"]) == (
            given[row["firm_id"]]["permno"],
            given[row["firm_id"]]["gvkey"],
        )
    linked = [row for row in exposure if row["permno"] is not None]
    assert linked and len(linked) < len(exposure)  # both kinds of firms are in the panel
    # A firm's shares over themes add up to at most 1: a sentence counts once.
    per_firm: dict[str, float] = defaultdict(float)
    for row in exposure:
        per_firm[row["firm_id"]] += row["share"]
    assert per_firm and max(per_firm.values()) <= 1.0 + 1e-9


def test_themes_are_numbered_in_the_default_order_by_kind_then_salience(reduced: dict[str, Any]) -> None:
    themes = reduced["themes"]
    kinds = [theme["kind"] for theme in themes]
    assert "theme" in kinds
    assert kinds == sorted(kinds, key=("theme", "routine", "reporting").index)  # kind theme first
    for kind in ("theme", "routine", "reporting"):
        scores = [t["salience"] for t in themes if t["kind"] == kind]
        assert None not in scores  # the reference of ordinary attention applies to the default model
        assert scores == sorted(scores, reverse=True)
    for theme in themes:
        share, baseline = theme["attention_share"], theme["baseline_share"]
        assert 0.0 <= share <= 1.0 and 0.0 <= baseline <= 1.0
        smoothing = SETTINGS.salience_smoothing
        expected = np.log((share + smoothing) / (baseline + smoothing))
        assert theme["salience"] == pytest.approx(expected, abs=1e-4)
        # Whether the sample's results sentences gather into a theme past the number share depends
        # on the embedding path (bf16 on AVX512-BF16 made none): the rule is checked on every theme
        # there is, and on both sides of the line in test_the_kind_rule_on_both_sides_of_each_line.
        if theme["salience"] >= SETTINGS.salient:
            assert theme["kind"] == "theme"
        elif theme["number_share"] >= SETTINGS.reporting_number_share:
            assert theme["kind"] == "reporting"
    # Attention is measured over every sentence: the shares of all themes add up to 1.
    assert sum(t["attention_share"] for t in themes) == pytest.approx(1.0, abs=1e-4)
    summary = reduced["summary"]
    assert summary["n_reporting"] == kinds.count("reporting")
    assert summary["n_routine"] == kinds.count("routine")
    assert [t["theme_id"] for t in summary["top_themes"]] == list(range(len(summary["top_themes"])))
    assert summary["top_themes"][0]["kind"] == "theme"


def test_the_kind_rule_on_both_sides_of_each_line() -> None:
    line, salient = SETTINGS.reporting_number_share, SETTINGS.salient
    # Below salience, numbers alone decide, however unevenly spread and unlike ordinary language.
    assert kind_of(line, 0.0, None, SETTINGS) == "reporting"
    assert kind_of(line, 0.0, None, SETTINGS, salience=salient - 0.01) == "reporting"
    assert kind_of(line - 0.01, 0.0, None, SETTINGS) == "theme"
    # A salient theme is a theme, whatever its numbers, spread or likeness to ordinary language.
    assert kind_of(1.0, 1.0, 1.0, SETTINGS, salience=salient) == "theme"
    # Below the line, only language as even as a quarter's and said in an ordinary quarter is.
    even, ordinary = SETTINGS.reporting_evenness, SETTINGS.reporting_ordinary_similarity
    assert kind_of(0.0, even, ordinary, SETTINGS) == "reporting"
    assert kind_of(0.0, even - 0.01, ordinary, SETTINGS) == "theme"
    assert kind_of(0.0, even, ordinary - 0.01, SETTINGS) == "theme"
    assert kind_of(0.0, even, None, SETTINGS) == "theme"
    # Routine: at its ordinary level and spread over the firms; a subject of some firms stays a theme.
    routine = SETTINGS.routine_evenness
    assert kind_of(0.0, routine, None, SETTINGS, salience=0.0) == "routine"
    assert kind_of(0.0, routine - 0.01, None, SETTINGS, salience=0.0) == "theme"
    assert kind_of(0.0, routine, None, SETTINGS, salience=salient) == "theme"
    assert kind_of(0.0, routine, None, SETTINGS) == "theme"  # no salience: no routine


def test_keywords_of_themes_and_firm_topics_have_no_lemmatizer_artefacts(reduced: dict[str, Any]) -> None:
    words = {w for t in reduced["themes"] for w in t["keywords"]}
    words |= {w for row in reduced["topics"].values() for w in row["keywords"]}
    assert not {"datum", "taxis", "monie", "informatic"} & {w for phrase in words for w in phrase.split()}
    assert any(" " in word for word in words)  # two-word phrases are keywords too


def test_every_theme_topic_exists_and_holds_half_its_sentences_in_its_theme(reduced: dict[str, Any]) -> None:
    members = defaultdict(set)
    for row in reduced["sentences"]:
        members[row["theme_id"]].add(row["sentence_id"])
    rows = reduced["theme_topics"]
    assert rows and len({(r["firm_id"], r["topic_id"]) for r in rows}) == len(rows)
    for row in rows:
        topic = reduced["topics"][(row["firm_id"], row["topic_id"])]
        inside = len(set(topic["sentence_ids"]) & members[row["theme_id"]])
        assert 2 * inside >= len(topic["sentence_ids"])
    counted = Counter(r["theme_id"] for r in rows)
    assert [t["n_topics"] for t in reduced["themes"]] == [counted[t["theme_id"]] for t in reduced["themes"]]


def _file(root: Path, name: str) -> Path:
    """An output of the reduce, by its dataset's name (OUTPUTS)."""
    return root / layout.dataset(name, QUARTER) / f"{name}.parquet"


def test_two_runs_give_identical_files(reduced: dict[str, Any], source: tuple[Path, Path, Any]) -> None:
    root = reduced["root"]
    first = {name: _file(root, name).read_bytes() for name in OUTPUTS}
    assert _reduce(root, source[1])[0] == 0
    assert {name: _file(root, name).read_bytes() for name in OUTPUTS} == first
    metadata = json.loads(pq.read_schema(_file(root, "themes")).metadata[METADATA_KEY])
    assert metadata["partial"] is False and metadata["missing_batches"] == []
    assert reduced["summary"]["partial"] is False and reduced["summary"]["n_themes"] == len(reduced["themes"])


def test_a_reduce_killed_while_writing_then_run_again_writes_the_same_files(
    reduced: dict[str, Any], source: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(source[0], root)
    command = [sys.executable, "-m", "ftm", "--config", str(source[1]), "reduce", "--quarter", str(QUARTER)]
    child = subprocess.Popen([*command, "--root", str(root)], start_new_session=True)
    deadline = time.monotonic() + 300
    while not _file(root, "theme_sentences").exists():  # killed between two of its files
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    # Files appear in WRITE_ORDER, themes last, so `ftm name` never finds a half run: whenever the
    # kill lands, what exists is a prefix of that order (on a fast machine, sometimes all of it).
    written = [_file(root, name).exists() for name in WRITE_ORDER]
    state = dict(zip(WRITE_ORDER, written, strict=True))
    assert written[0] and written == sorted(written, reverse=True), state
    assert _reduce(root, source[1])[0] == 0
    for name in OUTPUTS:
        assert _file(root, name).read_bytes() == _file(reduced["root"], name).read_bytes()


def test_reduce_on_s3_writes_the_same_files(
    reduced: dict[str, Any],
    source: tuple[Path, Path, Any],
    s3_root: str,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local, remote = Store(str(source[0])), Store(s3_root, endpoint_url=s3_endpoint)
    for path in local.list(""):
        remote.write_bytes(path, local.read_bytes(path))
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", s3_endpoint)
    code = main(["--config", str(source[1]), "reduce", "--quarter", str(QUARTER), "--root", s3_root])
    assert code == 0
    for name in OUTPUTS:
        path = f"{layout.dataset(name, QUARTER)}/{name}.parquet"
        assert remote.read_bytes(path) == reduced["store"].read_bytes(path)


def test_an_incomplete_map_is_refused_naming_its_batches_and_accepted_with_allow_partial(
    source: tuple[Path, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "root"
    shutil.copytree(source[0], root)
    store = Store(str(root))
    first, second = batch_ids(root)
    # The first batch stopped half-way (its checkpoint not finished), the second never started.
    checkpoint = records.read_checkpoint(store, QUARTER, first)
    assert checkpoint is not None
    records.write_checkpoint(store, QUARTER, checkpoint.model_copy(update={"finished": False}))
    store.delete(layout.batch_checkpoint(QUARTER, second))

    assert _reduce(root, source[1])[0] == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"without a checkpoint ({second})" in err and f"unfinished ({first})" in err
    assert "--allow-partial" in err and "Traceback" not in err
    assert not store.list(layout.themes_root())

    code, summary = _reduce(root, source[1], "--allow-partial", "--json")
    assert code == 0 and summary is not None
    assert summary["partial"] is True
    assert (summary["missing_batches"], summary["unfinished_batches"]) == ([second], [first])
    for name in OUTPUTS:
        schema = pq.read_schema(_file(root, name))
        metadata = json.loads(schema.metadata[METADATA_KEY])
        assert (metadata["partial"], metadata["missing_batches"]) == (True, [second])
    # Only the first batch's firms: the sentences its checkpoint lists.
    firms = {row["firm_id"] for row in store.read_table(layout.theme_sentences(QUARTER)).to_pylist()}
    assert firms <= set(checkpoint.completed_firm_ids)
    # The firm table says why the second batch's firms are not in the panel.
    plan = {batch.batch_id: batch.firm_ids for batch in read_plan(store, QUARTER) or []}
    table = {row["firm_id"]: row for row in store.read_table(layout.theme_firms(QUARTER), FIRMS).to_pylist()}
    for firm in plan[second]:
        assert (table[firm]["status"], table[firm]["reason"]) == (
            "not_mapped",
            f"its batch {second} had not finished",
        )


def test_a_quarter_mapped_without_sentence_embeddings_is_refused_with_what_to_do(
    source: tuple[Path, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "root"
    shutil.copytree(source[0], root)
    store = Store(str(root))
    first = batch_ids(root)[0]
    # As an ftm before sentence embeddings left it: the checkpoint lists firm topics only.
    checkpoint = records.read_checkpoint(store, QUARTER, first)
    assert checkpoint is not None
    records.write_checkpoint(store, QUARTER, checkpoint.model_copy(update={"embedding_files": []}))
    assert _reduce(root, source[1])[0] == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "did not store sentence embeddings" in err and first in err
    assert f"ftm submit --quarter {QUARTER} --new" in err and "Traceback" not in err


def test_reduce_of_a_quarter_never_submitted_says_to_submit_first(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "empty"
    assert main(["reduce", "--quarter", str(QUARTER), "--root", str(root)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"run `ftm submit --quarter {QUARTER} --root {root}` first" in err


# --- the linkage alone --------------------------------------------------------------------------


def _blobs(n_centres: int, per_centre: int, noise: int, similarity: float, seed: int) -> Any:
    """Unit vectors around random centres (cosine to their centre ≈ √similarity), plus noise."""
    rng = np.random.default_rng(seed)
    dims = 384
    centres = rng.standard_normal((n_centres, dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.standard_normal((n_centres * per_centre, dims))
    spread *= np.sqrt(1 / similarity - 1) / np.linalg.norm(spread, axis=1, keepdims=True)
    points = np.vstack([np.repeat(centres, per_centre, axis=0) + spread, rng.standard_normal((noise, dims))])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def test_average_linkage_over_every_pair_matches_scipy() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage

    points = _blobs(n_centres=8, per_centre=12, noise=30, similarity=0.5, seed=1)
    n = len(points)
    everyone = np.array([[j for j in range(n) if j != i] for i in range(n)])
    for threshold in (0.2, 0.35, 0.5):
        ours = average_linkage(points, np.ones(n), everyone, threshold)
        theirs = fcluster(linkage(points, method="average", metric="cosine"), 1 - threshold, "distance")
        assert _partition(ours) == _partition(theirs)


def test_average_linkage_of_groups_is_that_of_their_members() -> None:
    """Starting from groups (sums and sizes), as the reduce starts from its micro-clusters, gives
    the clusters of linking their members one by one, when the groups are whole clusters of it."""
    from scipy.cluster.hierarchy import fcluster, linkage

    points = _blobs(n_centres=6, per_centre=10, noise=0, similarity=0.6, seed=3)
    theirs = fcluster(linkage(points, method="average", metric="cosine"), 1 - 0.3, "distance")
    groups = np.repeat(np.arange(12), 5)  # halves of each planted cluster
    sums = np.zeros((12, points.shape[1]))
    np.add.at(sums, groups, points)
    everyone = np.array([[j for j in range(12) if j != i] for i in range(12)])
    ours = average_linkage(sums, np.full(12, 5.0), everyone, 0.3)[groups]
    assert _partition(ours) == _partition(theirs)


def _partition(labels: Any) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = defaultdict(set)
    for index, label in enumerate(np.asarray(labels).tolist()):
        groups[label].add(index)
    return {frozenset(group) for group in groups.values()}


def test_class_tfidf_is_bertopics() -> None:
    """reduce writes BERTopic's c-TF-IDF out rather than import BERTopic for it: the same scores."""
    from bertopic.vectorizers import ClassTfidfTransformer

    rng = np.random.default_rng(3)
    dense = rng.poisson(0.3, size=(12, 80)) * (rng.random((12, 80)) < 0.4)
    dense[:, 0] = 1  # no term missing from every class
    counts = sp.csr_matrix(dense)
    expected = ClassTfidfTransformer().fit_transform(counts).toarray()
    assert np.count_nonzero(expected) > 100
    np.testing.assert_allclose(_class_tfidf(counts).toarray(), expected, rtol=1e-12)


def test_the_firm_table_lists_every_firm_with_why_it_is_in_the_panel_or_not(
    source: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    """The panel's denominator: every prefetched or skipped firm, exposed or not, and why."""
    import pandas as pd

    root = tmp_path / "root"
    shutil.copytree(source[0], root)
    store = Store(str(root))
    manifest = read_manifest(store, QUARTER)
    # A firm the prefetch skipped, and one the map failed on (as their records would say).
    chunk = next(iter(manifest.firm_to_chunk.values()))
    edited = manifest.model_copy(
        update={
            "skipped_firms": [SkippedFirm(firm_id="EMPTY", reason="no sentences left after preprocessing")],
            "firm_to_chunk": {**manifest.firm_to_chunk, "BROKE": chunk},
        }
    )
    store.write_json(layout.prefetch_manifest(QUARTER), edited.to_json())
    first = batch_ids(root)[0]
    checkpoint = records.read_checkpoint(store, QUARTER, first)
    assert checkpoint is not None
    records.write_checkpoint(store, QUARTER, checkpoint.model_copy(update={"failed_firm_ids": ["BROKE"]}))
    failure = FirmFailure(firm_id="BROKE", error_type="ValueError", message="bad input", at=records.now())
    records.write_failures(store, QUARTER, first, [failure])

    assert _reduce(root, source[1])[0] == 0
    path = root / layout.theme_firms(QUARTER)
    firms = {row["firm_id"]: row for row in store.read_table(layout.theme_firms(QUARTER), FIRMS).to_pylist()}
    exposure = store.read_table(layout.firm_theme_exposure(QUARTER), FIRM_THEME_EXPOSURE).to_pylist()
    assert set(firms) == set(manifest.firm_to_chunk) | {"EMPTY", "BROKE"}
    assert {firm for firm, row in firms.items() if row["status"] == "exposed"} == {
        r["firm_id"] for r in exposure
    }
    assert (firms["EMPTY"]["status"], firms["EMPTY"]["reason"]) == (
        "skipped",
        "prefetch: no sentences left after preprocessing",
    )
    assert (firms["BROKE"]["status"], firms["BROKE"]["reason"]) == ("failed", "ValueError: bad input")
    prefetched = Counter(row["firm_id"] for row in _prefetched(store).values())
    for firm_id in manifest.firm_to_chunk:
        row = firms[firm_id]
        assert row["n_sentences"] == prefetched[firm_id] and row["status"] in ("exposed", "no_theme")
        assert row["n_themes"] == sum(r["firm_id"] == firm_id for r in exposure)
    # PERMNO stays an integer in pandas, gaps and all, in the firm table and in the panel.
    frame = pd.read_parquet(path)
    assert str(frame["permno"].dtype) == "Int64" and frame["permno"].isna().any()
    assert frame["permno"].notna().any()
    panel = pd.read_parquet(root / layout.firm_theme_exposure(QUARTER))
    assert str(panel["permno"].dtype) == "Int64"
