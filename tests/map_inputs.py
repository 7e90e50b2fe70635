"""Prefetched quarters for the map tests, made once per test session, and what those tests do to
them: copy one to a fresh root, break a firm's rows, read back the firm topics.

Twelve firms of the bundled sample (2016Q4), about 80 sentences each: big enough for real topics,
small enough that a local run of two batches takes well under a minute on two cores. And the whole
of 2016Q4 of the shared corpus (173 calls), for the prefetch tests and the whole-path map test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ftm import layout, sample
from ftm.cli import main
from ftm.quarters import Quarter
from ftm.schemas import FIRM_TOPICS, PrefetchManifest
from ftm.storage import Store

QUARTER = Quarter.parse("2016Q4")
N_FIRMS = 12
# Small parts, so that a batch of six firms writes three part files and three checkpoints; small
# clusters, so that firms of 20 to 170 sentences have topics; a quick heartbeat, so that the tests
# never wait on one; firms clustered in the batch's own process, since starting worker processes
# would cost each in-process map-batch more than its few firms take (one test uses them).
CONFIG = """\
[preprocess]
workers = 1
[embedding]
device = "cpu"
[topics]
hdbscan_min_cluster_size = 5
[map]
firms_per_part = 2
heartbeat_s = 1.0
cluster_processes = 1
"""

_cache: dict[str, Path] = {}


def sample_firms(n: int = N_FIRMS) -> list[str]:
    with gzip.open(sample.PATH, "rt") as lines:
        return sorted({json.loads(line)["ticker"] for line in lines})[:n]


def write_config(folder: Path, extra: str = "") -> Path:
    path = folder / "ftm.toml"
    path.write_text(CONFIG + extra)
    return path


def prefetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prefetched quarter (a local root), made on first use and shared by the session."""
    if "root" not in _cache:
        folder = tmp_path_factory.mktemp("prefetched")
        config = write_config(folder)
        root = folder / "root"
        args = ["--config", str(config), "prefetch", str(QUARTER), "--input", str(sample.PATH)]
        assert main([*args, "--root", str(root), "--firms", ",".join(sample_firms())]) == 0
        _cache["root"] = root
    return _cache["root"]


def prefetch_quarter(corpus: Path, folder: Path) -> Store:
    """Every 2016Q4 call of `corpus` prefetched into `folder`, in chunks of 50 firms."""
    config = folder / "ftm.toml"
    config.write_text("[prefetch]\nfirms_per_chunk = 50\ncheckpoint_every = 20\n")
    root = str(folder / "root")
    args = ["--config", str(config), "prefetch", str(QUARTER), "--source", "files", "--input", str(corpus)]
    assert main([*args, "--root", root, "--json"]) == 0
    return Store(root)


def quarter_firms(corpus: Path) -> set[str]:
    """Firms with a call in 2016Q4, found independently of ftm's reader."""
    firms = set()
    with gzip.open(corpus, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            day = record["call_date"]
            if day and "2016-10-01" <= day < "2017-01-01":
                firms.add(record["ticker"])
    return firms


def copy_prefetch(source: Path, target: Store) -> Store:
    """The prefetched quarter copied into another root (a folder or S3), nothing else."""
    origin = Store(str(source))
    for path in origin.list(layout.prefetch_folder(QUARTER)):
        target.write_bytes(path, origin.read_bytes(path))
    return target


def manifest(store: Store) -> PrefetchManifest:
    return PrefetchManifest.model_validate(store.read_json(layout.prefetch_manifest(QUARTER)))


def edit_firm_rows(store: Store, firm_id: str, change: str) -> None:
    """Breaks one firm's rows in its chunk, as a damaged or hand-edited file would:
    "null_raw_text" (one sentence without raw_text, which the contract forbids) or "drop" (the
    firm's rows gone, while the manifest still points at the chunk)."""
    path = f"{layout.prefetch_folder(QUARTER)}/{manifest(store).firm_to_chunk[firm_id]}"
    table = store.read_table(path)
    mine = pc.equal(table.column("firm_id"), firm_id)
    if change == "drop":
        table = table.filter(pc.invert(mine))
    elif change == "null_raw_text":
        first = table.column("firm_id").to_pylist().index(firm_id)
        texts = table.column("raw_text").to_pylist()
        texts[first] = None
        index = table.schema.get_field_index("raw_text")
        table = table.set_column(index, pa.field("raw_text", pa.string()), pa.array(texts, pa.string()))
    else:
        raise ValueError(change)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)  # around Store.write_table, which would refuse the broken rows
    store.write_bytes(path, sink.getvalue().to_pybytes())


def topic_rows(store: Store) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (firm, topic) row of the quarter's part files, checked against FIRM_TOPICS, without
    processing_timestamp; a (firm, topic) written twice fails the test."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for path in store.list(layout.firm_topics_folder(QUARTER)):
        table = store.read_table(path, FIRM_TOPICS)  # checks every column's name and type
        for row in table.to_pylist():
            row.pop("processing_timestamp")
            key = (row["firm_id"], row["topic_id"])
            assert key not in rows, f"{key} is written twice (again in {path})"
            rows[key] = row
    return rows
