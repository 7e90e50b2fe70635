"""`ftm reduce` on a quarter mapped by the real map stage (tests/reduce_inputs.py), and the
clustering on its own: themes span enough firms, every theme topic exists, exposure shares are
shares, PERMNO and GVKEY come through, an incomplete map is refused, runs repeat byte for byte,
and firms given the same sentences about a made-up regulation share one theme."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from ftm import layout
from ftm.cli import main
from ftm.map import records
from ftm.plan import sentence_counts
from ftm.prefetch import read_manifest
from ftm.reduce.themes import METADATA_KEY, average_linkage, cluster_topics, nearest_neighbours
from ftm.schemas import FIRM_THEME_EXPOSURE, FIRM_TOPICS, THEME_TOPICS, THEMES
from ftm.settings import ReduceSettings
from ftm.storage import Store
from reduce_inputs import QUARTER, batch_ids, mapped

MIN_FIRMS = ReduceSettings().min_firms
OUTPUTS = ("themes", "theme_topics", "firm_theme_exposure")


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
        "theme_topics": store.read_table(layout.theme_topics(QUARTER), THEME_TOPICS).to_pylist(),
        "exposure": store.read_table(layout.firm_theme_exposure(QUARTER), FIRM_THEME_EXPOSURE).to_pylist(),
        "topics": _firm_topics(store),
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
        columns = ["firm_id", "topic_id", "n_sentences", "keywords", "representative_sentences"]
        for row in store.read_table(path, FIRM_TOPICS, columns=columns).to_pylist():
            rows[(row["firm_id"], row["topic_id"])] = row
    return rows


# --- on the mapped quarter ----------------------------------------------------------------------


def test_planted_regulation_topics_of_several_firms_form_one_theme(
    reduced: dict[str, Any], source: tuple[Path, Path, dict[str, dict[str, Any]]]
) -> None:
    planted_firms = {firm for firm, given in source[2].items() if given["planted"]}
    planted_topics = {
        key
        for key, row in reduced["topics"].items()
        if "quillon" in " ".join(row["keywords"] + row["representative_sentences"]).lower()
    }
    # The map found the regulation as a topic in every firm that talks about it...
    assert {firm for firm, _ in planted_topics} == planted_firms
    # ...and reduce puts all those topics in one theme, of those firms only.
    theme_of = {(r["firm_id"], r["topic_id"]): r["theme_id"] for r in reduced["theme_topics"]}
    assert {theme_of.get(key) for key in planted_topics} == {theme_of[min(planted_topics)]}
    theme_id = theme_of[min(planted_topics)]
    theme = reduced["themes"][theme_id]
    assert {r["firm_id"] for r in reduced["theme_topics"] if r["theme_id"] == theme_id} == planted_firms
    assert theme["n_firms"] == len(planted_firms)
    assert "quillon" in theme["keywords"][:5]
    assert len({s for s in theme["representative_sentences"]}) >= 2
    assert all("Quillon" in sentence for sentence in theme["representative_sentences"])


def test_every_theme_spans_min_firms_and_every_theme_topic_exists(reduced: dict[str, Any]) -> None:
    themes, members, topics = reduced["themes"], reduced["theme_topics"], reduced["topics"]
    assert themes and [t["theme_id"] for t in themes] == list(range(len(themes)))
    by_theme: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in members:
        assert (row["firm_id"], row["topic_id"]) in topics  # points at an existing firm topic
        by_theme[row["theme_id"]].append(row)
    assert len({(r["firm_id"], r["topic_id"]) for r in members}) == len(members)  # one theme per topic
    for theme in themes:
        rows = by_theme[theme["theme_id"]]
        assert theme["n_firms"] == len({r["firm_id"] for r in rows}) >= MIN_FIRMS
        assert theme["n_topics"] == len(rows)
        assert theme["n_sentences"] == sum(topics[(r["firm_id"], r["topic_id"])]["n_sentences"] for r in rows)
        assert theme["keywords"] and theme["representation"] == "_".join(theme["keywords"][:4])
        assert np.isclose(np.linalg.norm(theme["centroid"]), 1.0, atol=1e-5)
        assert all(-1.0 <= r["similarity"] <= 1.0 + 1e-6 for r in rows)


def test_exposure_shares_are_shares_with_permno_and_gvkey_carried_through(
    reduced: dict[str, Any], source: tuple[Path, Path, dict[str, dict[str, Any]]]
) -> None:
    store, given = reduced["store"], source[2]
    totals = sentence_counts(store, QUARTER, read_manifest(store, QUARTER))
    in_theme: dict[tuple[str, int], int] = defaultdict(int)
    for row in reduced["theme_topics"]:
        in_theme[(row["firm_id"], row["theme_id"])] += reduced["topics"][(row["firm_id"], row["topic_id"])][
            "n_sentences"
        ]
    exposure = reduced["exposure"]
    assert {(r["firm_id"], r["theme_id"]) for r in exposure} == set(in_theme)  # one row per pair
    per_firm: dict[str, float] = defaultdict(float)
    for row in exposure:
        assert row["quarter"] == str(QUARTER)
        assert row["n_sentences"] == in_theme[(row["firm_id"], row["theme_id"])]
        assert 0.0 <= row["share"] <= 1.0
        assert row["share"] == pytest.approx(row["n_sentences"] / totals[row["firm_id"]])
        per_firm[row["firm_id"]] += row["share"]
        assert (row["permno"], row["gvkey"]) == (
            given[row["firm_id"]]["permno"],
            given[row["firm_id"]]["gvkey"],
        )
    assert all(total <= 1.0 + 1e-9 for total in per_firm.values())
    linked = [row for row in exposure if row["permno"] is not None]
    assert linked and len(linked) < len(exposure)  # both kinds of firms are in the panel


def test_two_runs_give_identical_files(reduced: dict[str, Any], source: tuple[Path, Path, Any]) -> None:
    folder = reduced["root"] / layout.themes_folder(QUARTER)
    first = {name: (folder / f"{name}.parquet").read_bytes() for name in OUTPUTS}
    assert _reduce(reduced["root"], source[1])[0] == 0
    assert {name: (folder / f"{name}.parquet").read_bytes() for name in OUTPUTS} == first
    metadata = json.loads(pq.read_schema(folder / "themes.parquet").metadata[METADATA_KEY])
    assert metadata["partial"] is False and metadata["missing_batches"] == []
    assert reduced["summary"]["partial"] is False and reduced["summary"]["n_themes"] == len(reduced["themes"])


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
        path = f"{layout.themes_folder(QUARTER)}/{name}.parquet"
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
    assert not store.list(layout.themes_folder(QUARTER))

    code, summary = _reduce(root, source[1], "--allow-partial", "--json")
    assert code == 0 and summary is not None
    assert summary["partial"] is True
    assert (summary["missing_batches"], summary["unfinished_batches"]) == ([second], [first])
    for name in OUTPUTS:
        schema = pq.read_schema(root / layout.themes_folder(QUARTER) / f"{name}.parquet")
        metadata = json.loads(schema.metadata[METADATA_KEY])
        assert (metadata["partial"], metadata["missing_batches"]) == (True, [second])
    # Only the first batch's firms: the parts its checkpoint lists.
    firms = {row["firm_id"] for row in store.read_table(layout.theme_topics(QUARTER)).to_pylist()}
    assert firms <= set(checkpoint.completed_firm_ids)


def test_reduce_of_a_quarter_never_submitted_says_to_submit_first(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["reduce", "--quarter", str(QUARTER), "--root", str(tmp_path / "empty")]) == 2
    assert f"run `ftm submit --quarter {QUARTER}` first" in " ".join(capsys.readouterr().err.split())


# --- the clustering alone -----------------------------------------------------------------------


def _blobs(n_centres: int, per_centre: int, noise: int, similarity: float, seed: int) -> tuple[Any, Any]:
    """Unit vectors around random centres (cosine to their centre ≈ √similarity), plus noise."""
    rng = np.random.default_rng(seed)
    dims = 384
    centres = rng.standard_normal((n_centres, dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.standard_normal((n_centres * per_centre, dims))
    spread *= np.sqrt(1 / similarity - 1) / np.linalg.norm(spread, axis=1, keepdims=True)
    points = np.vstack([np.repeat(centres, per_centre, axis=0) + spread, rng.standard_normal((noise, dims))])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = np.r_[np.repeat(np.arange(n_centres), per_centre), -np.ones(noise, dtype=int)]
    return points.astype(np.float32), labels


def test_average_linkage_over_every_pair_matches_scipy() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage

    points, _ = _blobs(n_centres=8, per_centre=12, noise=30, similarity=0.5, seed=1)
    n = len(points)
    everyone = np.array([[j for j in range(n) if j != i] for i in range(n)])
    for threshold in (0.2, 0.35, 0.5):
        ours = average_linkage(points, everyone, threshold)
        theirs = fcluster(linkage(points, method="average", metric="cosine"), 1 - threshold, "distance")
        assert _partition(ours) == _partition(theirs)


def test_cluster_topics_recovers_planted_clusters_with_the_approximate_search() -> None:
    points, truth = _blobs(n_centres=150, per_centre=55, noise=1000, similarity=0.6, seed=2)
    assert len(points) > 8192  # past the exact search
    found = cluster_topics(points, min_similarity=0.4, n_neighbors=15, random_state=0)
    clustered = truth >= 0
    assert _partition(found[clustered]) == _partition(truth[clustered])
    assert len(set(found[~clustered].tolist())) == (~clustered).sum()  # noise stays alone
    exact = nearest_neighbours(points[:500], 5, random_state=0)
    assert not (exact == np.arange(500)[:, None]).any()


def _partition(labels: Any) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = defaultdict(set)
    for index, label in enumerate(np.asarray(labels).tolist()):
        groups[label].add(index)
    return {frozenset(group) for group in groups.values()}
