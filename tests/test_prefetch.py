"""Prefetch end to end: a full quarter of the shared corpus, a kill and resume, and S3 on moto."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from ftm import layout, sample
from ftm.cli import main
from ftm.quarters import Quarter
from ftm.schemas import SENTENCES, PrefetchManifest
from ftm.settings import StorageSettings
from ftm.storage import Store
from map_inputs import prefetch_quarter, quarter_firms

QUARTER = Quarter.parse("2016Q4")
FOLDER = layout.prefetch_folder(QUARTER)
SMALL_CHUNKS = "[prefetch]\nfirms_per_chunk = 10\ncheckpoint_every = 4\n"


def _sample_firms(n: int) -> list[str]:
    with gzip.open(sample.PATH, "rt") as lines:
        return sorted({json.loads(line)["ticker"] for line in lines})[:n]


SUBSET = _sample_firms(40)


def _prefetch_args(root: str, *extra: str) -> list[str]:
    return [
        "prefetch",
        str(QUARTER),
        "--source",
        "files",
        "--input",
        str(sample.PATH),
        "--root",
        root,
        "--firms",
        ",".join(SUBSET),
        *extra,
    ]


def _files(store: Store) -> dict[str, bytes]:
    return {path: store.read_bytes(path) for path in store.list(FOLDER) if path.endswith(".parquet")}


def _manifest(store: Store) -> dict:
    manifest = store.read_json(layout.prefetch_manifest(QUARTER))
    manifest.pop("created_at")
    return manifest


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "small.toml"
    path.write_text(SMALL_CHUNKS + "[preprocess]\nworkers = 1\n")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, small_config: Path) -> Store:
    """An uninterrupted prefetch of 40 sample firms in chunks of 10: what every other run must equal."""
    root = str(tmp_path_factory.mktemp("reference"))
    assert main(["--config", str(small_config), *_prefetch_args(root)]) == 0
    return Store(root)


@pytest.fixture(scope="module")
def second_prefetch(tmp_path_factory: pytest.TempPathFactory, shared_corpus: Path) -> Store:
    """The same quarter as the session's `full_quarter`, prefetched again into another root."""
    return prefetch_quarter(shared_corpus, tmp_path_factory.mktemp("second"))


@pytest.mark.slow
def test_full_quarter_has_every_firm_in_exactly_one_chunk(full_quarter: Store, shared_corpus: Path) -> None:
    store = full_quarter
    manifest = PrefetchManifest.model_validate(store.read_json(layout.prefetch_manifest(QUARTER)))
    expected = quarter_firms(shared_corpus)
    skipped = {skip.firm_id: skip.reason for skip in manifest.skipped_firms}
    assert set(manifest.firm_to_chunk) | set(skipped) == expected
    assert not set(manifest.firm_to_chunk) & set(skipped)
    assert all(reason for reason in skipped.values())
    assert manifest.n_firms == len(manifest.firm_to_chunk) and manifest.n_chunks == len(manifest.chunks) > 1
    assert manifest.source["quarter_rule"] == "call_date_then_fiscal"
    assert manifest.source["calls_by"] == {"call_date": manifest.n_calls, "fiscal_quarter": 0}

    seen: Counter[str] = Counter()
    total = 0
    for chunk in manifest.chunks:
        table = store.read_table(f"{FOLDER}/{chunk.file}", SENTENCES)  # checks the schema
        firms = table.column("firm_id").to_pylist()
        assert firms == sorted(firms), f"{chunk.file} is not sorted by firm"
        assert len(set(firms)) == chunk.n_firms <= 50 and table.num_rows == chunk.n_rows
        for firm in set(firms):
            assert manifest.firm_to_chunk[firm] == chunk.file
            seen[firm] += 1
            positions = table.filter(pc.equal(table.column("firm_id"), firm)).column("position").to_pylist()
            assert positions == list(range(len(positions)))
        assert set(table.column("quarter").to_pylist()) == {"2016Q4"}
        assert min(len(text.split()) for text in table.column("cleaned_text").to_pylist()) >= 3
        total += table.num_rows
    assert set(seen.values()) == {1}, "a firm is split across chunks"
    assert total == manifest.n_sentences
    ids = [
        sid
        for chunk in manifest.chunks
        for sid in store.read_table(f"{FOLDER}/{chunk.file}").column("sentence_id").to_pylist()
    ]
    assert len(ids) == len(set(ids)) == total


@pytest.mark.slow
def test_full_quarter_gives_identical_chunks_and_sentence_ids_on_a_second_run(
    full_quarter: Store, second_prefetch: Store
) -> None:
    first, second = full_quarter, second_prefetch
    assert _files(first) == _files(second)
    assert _manifest(first)["firm_to_chunk"] == _manifest(second)["firm_to_chunk"]
    assert not first.list(layout.prefetch_staging(QUARTER)) and not first.exists(
        layout.prefetch_checkpoint(QUARTER)
    )


def test_prefetch_resumes_after_sigkill_with_identical_chunks(
    tmp_path: Path, reference: Store, small_config: Path
) -> None:
    root = tmp_path / "killed"
    checkpoint = root / layout.prefetch_checkpoint(QUARTER)
    command = [sys.executable, "-m", "ftm", "--config", str(small_config), *_prefetch_args(str(root))]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill half-way: after a chunk and a later checkpoint
        if checkpoint.is_file():
            state = json.loads(checkpoint.read_text())
            if state["firms_done"] >= 16 and state["chunks"]:
                break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    else:
        pytest.fail("the prefetch never reached its second checkpoint")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    store = Store(str(root))
    assert not store.exists(layout.prefetch_manifest(QUARTER)), "killed before the end, yet a manifest"
    done_at_kill = json.loads(checkpoint.read_text())["firms_done"]
    assert 0 < done_at_kill < len(SUBSET)

    assert main(["--config", str(small_config), *_prefetch_args(str(root), "--json")]) == 0
    assert _files(store) == _files(reference)
    assert _manifest(store) == _manifest(reference)
    assert store.list(FOLDER) == reference.list(FOLDER)  # no staged parts or checkpoint left over


def test_prefetch_to_s3_writes_the_same_chunks_as_a_local_folder(
    s3_root: str, s3_endpoint: str, reference: Store, small_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", s3_endpoint)
    assert main(["--config", str(small_config), *_prefetch_args(s3_root)]) == 0
    store = Store.from_settings(StorageSettings(root=s3_root, endpoint_url=s3_endpoint))
    assert [p for p in store.list(FOLDER)] == reference.list(FOLDER)
    for path, data in _files(reference).items():
        local = reference.read_table(path, SENTENCES)
        assert store.read_table(path, SENTENCES).equals(local), path
        assert len(data) > 0
    assert _manifest(store)["firm_to_chunk"] == _manifest(reference)["firm_to_chunk"]


def test_finished_quarter_is_left_alone_and_overwrite_redoes_it(
    reference: Store, small_config: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest_path = Path(reference.uri(layout.prefetch_manifest(QUARTER)))
    before = manifest_path.stat().st_mtime_ns
    assert main(["--config", str(small_config), *_prefetch_args(reference.root)]) == 0
    assert "already prefetched" in capsys.readouterr().err
    assert manifest_path.stat().st_mtime_ns == before


def test_overwrite_starts_the_quarter_over(tmp_path: Path, reference: Store, small_config: Path) -> None:
    root = str(tmp_path / "again")
    store = Store(root)
    store.write_json(
        layout.prefetch_manifest(QUARTER),
        {"quarter": "2016Q4", "n_firms": 0, "n_chunks": 0, "firm_to_chunk": {}},
    )
    store.write_bytes(layout.prefetch_chunk(QUARTER, 7), b"stale")
    assert main(["--config", str(small_config), *_prefetch_args(root, "--overwrite")]) == 0
    assert _files(store) == _files(reference)


def test_firm_with_two_calls_in_the_quarter_keeps_both(tmp_path: Path) -> None:
    def call(transcript: str, day: str, text: str) -> dict:
        return {
            "transcript_id": transcript,
            "ticker": "ACME",
            "company_name": "Acme Corp",
            "call_date": day,
            "fiscal_quarter": None,
            "components": [{"order": 0, "role": "answer", "text": text}],
        }

    path = tmp_path / "calls.jsonl"
    rows = [
        call("T-late", "2016-12-01", "Our cloud revenue doubled because enterprise demand accelerated."),
        call("T-early", "2016-10-05", "We opened three distribution centers to shorten delivery times."),
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    root = str(tmp_path / "data")
    assert (
        main(
            [
                "prefetch",
                "2016Q4",
                "--source",
                "files",
                "--input",
                str(path),
                "--root",
                root,
                "--workers",
                "1",
            ]
        )
        == 0
    )
    table = Store(root).read_table(layout.prefetch_chunk(QUARTER, 0), SENTENCES)
    assert table.column("transcript_id").to_pylist() == ["T-early", "T-late"]  # by call date
    assert table.column("position").to_pylist() == [0, 1]
    assert [str(d) for d in table.column("earnings_call_date").to_pylist()] == ["2016-10-05", "2016-12-01"]


def test_ctrl_c_stops_cleanly_with_exit_130_and_the_run_resumes(
    tmp_path: Path, reference: Store, small_config: Path
) -> None:
    root = tmp_path / "interrupted"
    checkpoint = root / layout.prefetch_checkpoint(QUARTER)
    command = [
        sys.executable,
        "-m",
        "ftm",
        "--config",
        str(small_config),
        *_prefetch_args(str(root), "--workers", "2"),
    ]
    # A new session, so the signal goes to the whole process group, as Ctrl-C in a terminal does.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (checkpoint.is_file() and json.loads(checkpoint.read_text())["firms_done"] >= 8):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint before the deadline"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert main(["--config", str(small_config), *_prefetch_args(str(root))]) == 0
    assert _files(Store(str(root))) == _files(reference)
