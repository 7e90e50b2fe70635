"""Store on a local folder and on S3 (moto's HTTP server): the same tests, parametrized."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from ftm.errors import DataError, SchemaError, SettingsError
from ftm.schemas import SENTENCES
from ftm.settings import StorageSettings
from ftm.storage import Store


@pytest.fixture
def store(storage_settings: dict[str, str]) -> Store:
    return Store.from_settings(StorageSettings(**storage_settings))


def _sentences(n: int) -> pa.Table:
    return pa.table(
        {
            "firm_id": ["F"] * n,
            "firm_name": ["Firm"] * n,
            "permno": [None] * n,
            "gvkey": ["001234"] * n,
            "transcript_id": ["T1"] * n,
            "transcript_collection": [None] * n,
            "earnings_call_date": [None] * n,
            "quarter": ["2016Q4"] * n,
            "sentence_id": [f"T1/0.{i}" for i in range(n)],
            "raw_text": ["Revenue grew."] * n,
            "cleaned_text": ["revenue grow"] * n,
            "speaker_type": ["answer"] * n,
            "position": list(range(n)),
        },
        schema=SENTENCES,
    )


def test_json_round_trip_and_listing(store: Store) -> None:
    store.write_json("a/b/one.json", {"x": 1})
    store.write_json("a/two.json", [1, 2])
    assert store.read_json("a/b/one.json") == {"x": 1}
    assert store.list("a") == ["a/b/one.json", "a/two.json"]
    assert store.exists("a/two.json") and not store.exists("a/three.json")
    assert store.list("nothing/here") == []


def test_a_folder_lists_its_own_files_and_folders_without_going_below(store: Store) -> None:
    for path in ("t/quarter=A/x.json", "t/quarter=A/_cache/k.json", "t/quarter=B/y.json", "t/z.json"):
        store.write_json(path, {})
    assert store.folders("t") == ["t/quarter=A", "t/quarter=B"]
    assert store.list("t/quarter=A", recursive=False) == ["t/quarter=A/x.json"]
    assert store.list("t/quarter=A") == ["t/quarter=A/_cache/k.json", "t/quarter=A/x.json"]
    assert store.folders("missing") == [] and store.list("missing", recursive=False) == []


def test_json_reads_gzip_compressed_manifests(store: Store) -> None:
    store.write_bytes("manifest.json", gzip.compress(json.dumps({"quarter": "2016Q4"}).encode()))
    assert store.read_json("manifest.json") == {"quarter": "2016Q4"}


def test_create_only_write_refuses_a_second_writer(store: Store) -> None:
    assert store.create_json("claims/batch_000.json", {"owner": "first"})
    assert not store.create_json("claims/batch_000.json", {"owner": "second"})
    assert store.read_json("claims/batch_000.json") == {"owner": "first"}


def test_overwrite_replaces_whole_file_and_leaves_no_temporaries(store: Store) -> None:
    store.write_bytes("f.bin", b"old contents that are longer")
    store.write_bytes("f.bin", b"new")
    assert store.read_bytes("f.bin") == b"new"
    assert store.list("") == ["f.bin"]


def test_parquet_round_trip_checks_the_schema(store: Store) -> None:
    size = store.write_table("t/chunk.parquet", _sentences(5), SENTENCES)
    assert size == store.size("t/chunk.parquet") > 0
    table = store.read_table("t/chunk.parquet", SENTENCES)
    assert table.num_rows == 5 and table.schema.names == SENTENCES.names
    assert table.column("permno").type == pa.int64()


def test_schema_mismatch_names_the_file_and_the_column(store: Store) -> None:
    store.write_table("bad.parquet", _sentences(2).drop_columns(["cleaned_text"]))
    with pytest.raises(SchemaError, match=r"bad\.parquet.*'cleaned_text' is missing"):
        store.read_table("bad.parquet", SENTENCES)
    wrong = _sentences(2).set_column(12, "position", pa.array(["0", "1"]))
    store.write_table("wrong.parquet", wrong)
    with pytest.raises(SchemaError, match=r"wrong\.parquet.*'position' has type string"):
        store.read_table("wrong.parquet", SENTENCES)


def test_a_column_added_later_reads_as_null_from_older_files(store: Store) -> None:
    """Chunks written before `transcript_collection` existed (the earlier pipeline's) stay readable."""
    store.write_table("old.parquet", _sentences(3).drop_columns(["transcript_collection"]))
    table = store.read_table("old.parquet", SENTENCES)
    assert table.schema.names == SENTENCES.names
    assert table.column("transcript_collection").null_count == 3


def test_missing_files_and_bad_json_are_data_errors(store: Store) -> None:
    with pytest.raises(DataError, match="does not exist"):
        store.read_json("absent.json")
    store.write_bytes("broken.json", b"{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        store.read_json("broken.json")


def test_delete_folder_removes_everything_below_it(store: Store) -> None:
    store.write_json("q/a.json", 1)
    store.write_json("q/sub/b.json", 2)
    store.write_json("keep.json", 3)
    store.delete_folder("q")
    assert store.list("") == ["keep.json"]


def test_uri_shows_where_a_path_lives(store: Store, storage_settings: dict[str, str]) -> None:
    assert store.uri("x/y.json").endswith("/x/y.json")
    assert store.uri("x/y.json").startswith("s3://") == storage_settings["root"].startswith("s3://")


def test_s3_objects_land_under_the_prefix(s3_root: str, s3_endpoint: str) -> None:
    import boto3

    Store(s3_root, endpoint_url=s3_endpoint).write_json("runs/r1.json", {"ok": True})
    bucket, prefix = s3_root[len("s3://") :].split("/", 1)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert keys == [f"{prefix}/runs/r1.json"]


@pytest.mark.parametrize("root", ["s3://", "gs://bucket/x"])
def test_unsupported_roots_are_settings_errors(root: str) -> None:
    with pytest.raises(SettingsError):
        Store(root)


@pytest.mark.parametrize("missing", ["403", "404"])
def test_a_role_limited_to_its_prefix_finds_missing_files_missing_and_is_told_what_it_may_not_reach(
    aws_endpoint: str,
    s3_root: str,
    missing: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job role reaches only BUCKET/PREFIX/ (tests/s3_role_stand_in.py models what S3 answers
    it): a missing checkpoint is missing whether S3 says 404 or 403, and a path outside the
    prefix is one line naming it and the identity, exit 4, not a traceback."""
    import boto3

    from ftm import sample
    from ftm.cli import main
    from ftm.map import records
    from ftm.quarters import Quarter
    from s3_role_stand_in import S3RoleStandIn

    bucket = s3_root.split("/")[2]
    with open(sample.PATH, "rb") as calls:
        boto3.client("s3").put_object(Bucket=bucket, Key="raw/calls.jsonl.gz", Body=calls.read())
    role = S3RoleStandIn(aws_endpoint, bucket, "research", missing=missing)
    try:
        store = Store(s3_root, role.url)
        assert records.read_checkpoint(store, Quarter.parse("2016Q4"), "batch_000") is None
        assert not store.exists("progress/x.json")
        with pytest.raises(DataError, match="does not exist"):
            store.read_bytes("progress/x.json")
        store.write_json("progress/x.json", {"done": 1})
        assert store.read_json("progress/x.json") == {"done": 1} and store.list("progress") == [
            "progress/x.json"
        ]
        assert any(line.startswith("HEAD") for line in role.refused) == (missing == "403")

        outside = f"s3://{bucket}/raw/calls.jsonl.gz"
        with pytest.raises(SettingsError, match="access denied to " + outside):
            Store(f"s3://{bucket}/raw", role.url).read_bytes("calls.jsonl.gz")
        monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", role.url)
        assert main(["prefetch", "2016Q4", "--input", outside, "--root", s3_root]) == 4
        err = " ".join(capsys.readouterr().err.split())
        assert f"access denied to {outside}: arn:aws:" in err and "may not read it" in err
        assert "Traceback" not in err
    finally:
        role.stop()


# --- S3 that cannot be used: one line and exit 4 on every command -----------------------------

COMMANDS_ON_STORAGE = [
    ["prefetch", "2016Q4", "--input", "calls.jsonl"],
    ["submit", "--quarter", "2016Q4", "--batch-size", "5"],
    ["map-batch", "--quarter", "2016Q4", "--batch-id", "batch_000"],
    ["reduce", "--quarter", "2016Q4"],
    ["name", "--quarter", "2016Q4"],
    ["watch"],
    ["cancel"],
]


@pytest.mark.parametrize("problem", ["unreachable endpoint", "keys S3 does not know"])
def test_s3_that_cannot_be_used_is_one_line_and_exit_4_on_every_command(
    problem: str,
    s3_endpoint: str,
    s3_root: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
) -> None:
    from ftm.cli import main

    if problem == "unreachable endpoint":
        endpoint, expected = "http://127.0.0.1:1", "cannot reach http://127.0.0.1:1"
    else:
        endpoint, expected = s3_endpoint, "refused these AWS credentials"
        import moto.settings

        monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setenv("FTM_STORAGE__ROOT", s3_root)
    monkeypatch.setenv("FTM_STORAGE__ENDPOINT_URL", endpoint)
    (tmp_path / "calls.jsonl").write_text("{}\n")
    for command in COMMANDS_ON_STORAGE:
        code = main(command)
        err = capsys.readouterr().err
        assert code == 4, (command, err)
        assert "Traceback" not in err
        said = " ".join(err.split())
        assert said.startswith("error: ") and expected in said, (command, said)
        assert err.count("error:") == 1
