"""`ftm map-batch` and the plan: poison firms, the circuit breaker, determinism, and a quarter
that was not prefetched; the batches run in this process, on real prefetched sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftm import layout
from ftm.cli import main
from ftm.map import records
from ftm.plan import partition, read_plan, write_plan
from ftm.schemas import Batch
from ftm.settings import StorageSettings
from ftm.storage import Store
from map_inputs import (
    QUARTER,
    copy_prefetch,
    edit_firm_rows,
    manifest,
    prefetched,
    topic_rows,
    write_config,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prefetched(tmp_path_factory)


def _planned(store: Store, n_firms: int) -> tuple[Store, list[str]]:
    """A plan of one batch: the first firms in the order a batch runs them (one chunk: by id).
    A few firms keep these tests quick; the other firms stay unplanned."""
    firms = sorted(manifest(store).firm_to_chunk)[:n_firms]
    write_plan(store, QUARTER, [Batch(batch_id="batch_000", firm_ids=firms)])
    return store, firms


@pytest.fixture
def one_batch(source: Path, tmp_path: Path) -> tuple[Store, list[str]]:
    return _planned(copy_prefetch(source, Store(str(tmp_path / "root"))), 6)


def _map(store: Store, config: Path, *extra: str) -> int:
    return main(
        ["--config", str(config), "map-batch", "--quarter", str(QUARTER), "--root", store.root, *extra]
    )


# --- the plan ---------------------------------------------------------------------------------


def test_partition_balances_sentences_within_the_batch_size_and_is_deterministic() -> None:
    counts = {f"F{i:02d}": n for i, n in enumerate([900, 500, 400, 300, 300, 200, 100, 50, 50, 10])}
    batches = partition(counts, batch_size=4)
    assert [b.batch_id for b in batches] == ["batch_000", "batch_001", "batch_002"]
    assert sorted(f for b in batches for f in b.firm_ids) == sorted(counts)
    assert all(len(b.firm_ids) <= 4 and b.firm_ids == sorted(b.firm_ids) for b in batches)
    loads = [sum(counts[f] for f in b.firm_ids) for b in batches]
    assert max(loads) - min(loads) <= 100, loads  # the biggest firm alone would be 900 vs 1,810
    assert partition(dict(reversed(counts.items())), batch_size=4) == batches  # input order is moot
    # Equal firms go to the lowest batch index first.
    assert [b.firm_ids for b in partition({"A": 5, "B": 5, "C": 5}, batch_size=1)] == [["A"], ["B"], ["C"]]


def test_map_batch_without_a_prefetch_or_a_plan_says_what_to_run_first(
    tmp_path: Path, source: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_config(tmp_path)
    empty = Store(str(tmp_path / "empty"))
    assert _map(empty, config, "--batch-id", "0") == 2
    said = " ".join(capsys.readouterr().err.split())
    assert f"run `ftm prefetch {QUARTER} --root {empty.root}` first" in said
    store = copy_prefetch(source, Store(str(tmp_path / "unplanned")))
    assert _map(store, config, "--batch-id", "batch_000") == 2
    assert "ftm submit --quarter 2016Q4" in " ".join(capsys.readouterr().err.split())
    assert not store.list("intermediate") and not store.list("progress")


# --- firms that fail --------------------------------------------------------------------------


@pytest.fixture
def s3_or_local(storage_settings: dict[str, str], source: Path) -> tuple[Store, list[str]]:
    return _planned(copy_prefetch(source, Store.from_settings(StorageSettings(**storage_settings))), 6)


def test_poison_firms_are_recorded_and_the_batch_goes_on(
    s3_or_local: tuple[Store, list[str]],
    tmp_path: Path,
    storage_settings: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    store, firms = s3_or_local
    if "endpoint_url" in storage_settings:
        monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", storage_settings["endpoint_url"])
    null_text, missing = firms[1], firms[4]
    edit_firm_rows(store, null_text, "null_raw_text")
    edit_firm_rows(store, missing, "drop")

    assert _map(store, write_config(tmp_path), "--batch-id", "batch_000", "--json") == 3
    captured = capsys.readouterr()
    assert "2 firm(s) of batch_000 failed" in " ".join(captured.err.split())
    assert "Traceback" not in captured.err

    failures = {f.firm_id: f for f in records.read_failures(store, QUARTER, "batch_000")}
    assert set(failures) == {null_text, missing}
    assert failures[null_text].error_type == "DataError" and "raw_text" in failures[null_text].message
    assert "no sentences" in failures[missing].message
    checkpoint = records.read_checkpoint(store, QUARTER, "batch_000")
    assert checkpoint is not None and checkpoint.finished
    assert sorted(checkpoint.failed_firm_ids) == sorted(failures)
    assert set(checkpoint.completed_firm_ids) == set(firms) - set(failures)
    skipped = {s.firm_id: s.reason for s in checkpoint.skipped_firms}
    assert all(skipped.values())
    with_topics = {firm for firm, _ in topic_rows(store)}
    assert with_topics | set(skipped) == set(checkpoint.completed_firm_ids)
    assert not with_topics & set(skipped)
    progress = records.read_progress(store, QUARTER, "batch_000")
    assert progress is not None and progress.state == "succeeded"
    assert (progress.firms_failed, progress.firms_done) == (2, len(firms) - 2)
    assert progress.last_failure and missing in progress.last_failure


def test_circuit_breaker_stops_after_consecutive_failures_and_a_fixed_batch_goes_on(
    one_batch: tuple[Store, list[str]], tmp_path: Path, source: Path, capsys: pytest.CaptureFixture
) -> None:
    store, firms = one_batch
    config = write_config(tmp_path, "max_consecutive_failures = 2\n")  # appended to [map]
    for firm in firms[2:4]:  # the second part's two firms, in a row
        edit_firm_rows(store, firm, "drop")

    assert _map(store, config, "--batch-id", "0") == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "circuit breaker: 2 firms failed in a row" in err and "map.max_consecutive_failures" in err
    assert "Traceback" not in err
    progress = records.read_progress(store, QUARTER, "batch_000")
    assert (
        progress is not None and progress.state == "failed" and "circuit breaker" in (progress.message or "")
    )
    checkpoint = records.read_checkpoint(store, QUARTER, "batch_000")
    assert checkpoint is not None and not checkpoint.finished
    assert checkpoint.completed_firm_ids == firms[:2]  # the first part, and nothing after it
    assert {f.firm_id for f in records.read_failures(store, QUARTER, "batch_000")} == set(firms[2:4])

    copy_prefetch(source, store)  # the cause is fixed: the same command goes on
    assert _map(store, config, "--batch-id", "0") == 0
    checkpoint = records.read_checkpoint(store, QUARTER, "batch_000")
    assert checkpoint is not None and checkpoint.finished and checkpoint.attempt == 2
    assert sorted(checkpoint.completed_firm_ids) == firms and not checkpoint.failed_firm_ids
    assert records.read_failures(store, QUARTER, "batch_000") == []


# --- determinism and restarts -----------------------------------------------------------------


def test_two_runs_of_a_batch_give_identical_topics_whatever_the_batches_and_groups(
    one_batch: tuple[Store, list[str]], source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, firms = one_batch
    second = copy_prefetch(source, Store(str(tmp_path / "second")))
    write_plan(second, QUARTER, read_plan(first, QUARTER) or [])
    config = write_config(tmp_path)
    assert _map(first, config, "--batch-id", "batch_000") == 0
    assert _map(second, config, "--batch-id", "batch_000") == 0
    rows = topic_rows(first)
    assert rows and rows == topic_rows(second)
    assert [path.rsplit("/", 1)[1] for path in first.list(layout.firm_topics_folder(QUARTER))] == [
        path.rsplit("/", 1)[1] for path in second.list(layout.firm_topics_folder(QUARTER))
    ]

    # Other batches, groups of three firms instead of two, clustered in two worker processes:
    # each firm's topics are the same.
    third = copy_prefetch(source, Store(str(tmp_path / "third")))
    halves = [
        Batch(batch_id="batch_000", firm_ids=firms[3:]),
        Batch(batch_id="batch_001", firm_ids=firms[:3]),
    ]
    write_plan(third, QUARTER, halves)
    monkeypatch.setenv("FTM_MAP__FIRMS_PER_PART", "3")
    monkeypatch.setenv("FTM_MAP__CLUSTER_PROCESSES", "2")
    assert (
        _map(third, config, "--batch-id", "batch_000") == _map(third, config, "--batch-id", "batch_001") == 0
    )
    assert topic_rows(third) == rows


def test_a_finished_batch_is_left_alone_and_found_by_its_array_index(
    one_batch: tuple[Store, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = _planned(one_batch[0], 2)
    config = write_config(tmp_path)
    assert _map(store, config, "--batch-id", "batch_000") == 0
    parts = {path: store.read_bytes(path) for path in store.list(layout.firm_topics_folder(QUARTER))}
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "2")
    assert _map(store, config, "--index-offset", "-2") == 0  # index 2 - 2: batch_000, already finished
    assert {path: store.read_bytes(path) for path in parts} == parts
    assert _map(store, config) == 2  # index 2: no such batch in a plan of one
