"""A mapped quarter for the reduce tests, made once per test session: real firms of the bundled
sample (2016Q4), prefetched and run through the real map stage (`ftm map-batch`, in process).

Some firms get a PERMNO and a GVKEY (the files source reads them from the records), and ten of
them mention a made-up regulation, the Quillon Freight Safety Act, in two or three sentences each
(no two firms the same sentences), as one more speaker turn: too few for a topic of its own in any
firm, and the reduce must still find it as one theme of exactly those ten firms.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from ftm import sample
from ftm.cli import main
from ftm.plan import make_plan, read_plan, write_plan
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.storage import Store

QUARTER = Quarter.parse("2016Q4")
N_FIRMS = 16
PLANTED_FIRMS = 10
BATCH_SIZE = 8  # two batches
# Firms of 7,000 to 16,000 characters have 60 to 130 sentences: a few topics each, and a
# quick map. Small parts, so that reduce reads across several files.
SIZE_RANGE = (7_000, 16_000)
CONFIG = """\
[preprocess]
workers = 1
[embedding]
device = "cpu"
[map]
firms_per_part = 3
heartbeat_s = 1.0
cluster_processes = 1
"""
# 25 sentences: firm i of the ten planted gets two or three of them, in turn.
PLANTED = [
    "The Quillon Freight Safety Act requires every carrier to install certified brake sensors on trailers.",
    "We expect the Quillon Freight Safety Act to raise our compliance costs for brake sensors next year.",
    "Under the Quillon Freight Safety Act, brake sensor audits will happen every ninety days at each depot.",
    "Our teams have started retrofitting trailers with the brake sensors the Quillon Act mandates.",
    "The Quillon Freight Safety Act penalties for missing brake sensor audits are significant for carriers.",
    "We budgeted for Quillon Freight Safety Act brake sensor retrofits across the whole trailer fleet.",
    "Customers ask how the Quillon brake sensor mandate will affect their delivery schedules.",
    "The Quillon Freight Safety Act certification process for brake sensors takes about six weeks.",
    "We believe the Quillon Freight Safety Act will favour carriers that already use certified sensors.",
    "Compliance with the Quillon Freight Safety Act brake sensor rules is our top operating priority.",
    "The Quillon Freight Safety Act also requires carriers to report brake sensor faults within a day.",
    "Our brake sensor supplier is ramping production to meet demand from the Quillon Freight Safety Act.",
    "Regulators published the final Quillon Freight Safety Act guidance on brake sensor calibration.",
    "The Quillon Act brake sensor inspections add a few minutes to every trailer departure.",
    "We lobbied for a longer Quillon Freight Safety Act phase-in period for older trailers.",
    "Shippers are starting to prefer carriers certified under the Quillon Freight Safety Act.",
    "Insurance premiums fall for fleets that pass the Quillon brake sensor audit on the first try.",
    "The Quillon Freight Safety Act deadline for brake sensor retrofits is the end of next year.",
    "Our depots now train mechanics to service the brake sensors the Quillon Act requires.",
    "A quarter of our trailers already carry Quillon-certified brake sensors.",
    "The cost of Quillon Freight Safety Act compliance is built into our freight rates from January.",
    "We see the Quillon brake sensor rules as a barrier to entry for small carriers.",
    "Quillon Freight Safety Act audits found no brake sensor faults in our southern depots.",
    "We will report our Quillon Act brake sensor compliance rate each quarter from now on.",
    "Leasing companies now offer trailers fitted with Quillon-compliant brake sensors.",
]


def planted_sentences(index: int) -> list[str]:
    """The planted firm `index`'s share of PLANTED: two or three sentences, none shared."""
    start = sum(2 + (i % 2) for i in range(index))
    return PLANTED[start : start + 2 + (index % 2)]


_cache: dict[str, Any] = {}


def permno_of(index: int) -> int:
    return 90_000 + index


def gvkey_of(index: int) -> str:
    return f"{1_000 + index:06d}"


def write_input(path: Path) -> dict[str, dict[str, Any]]:
    """The input file; returns per firm what was given to it: planted, permno, gvkey."""
    records = []
    with gzip.open(sample.PATH, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            size = sum(len(component["text"]) for component in record["components"])
            if SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
                records.append(record)
    records = sorted(records, key=lambda record: record["ticker"])[:N_FIRMS]
    given: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "wt") as out:
        for index, record in enumerate(records):
            planted = index < PLANTED_FIRMS
            if planted:
                order = len(record["components"])
                text = " ".join(planted_sentences(index))
                record["components"].append(
                    {"order": order, "speaker": None, "role": "unknown", "text": text}
                )
            linked = index % 2 == 0
            if linked:
                record["permno"], record["gvkey"] = permno_of(index), gvkey_of(index)
            given[record["ticker"]] = {
                "planted": planted,
                "permno": permno_of(index) if linked else None,
                "gvkey": gvkey_of(index) if linked else None,
            }
            out.write(json.dumps(record) + "\n")
    return given


def mapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, dict[str, Any]]]:
    """(storage root, config file, what each firm was given): a prefetched, planned and mapped
    quarter, made on first use and shared by the session. Copy the root before changing it."""
    if "root" not in _cache:
        folder = tmp_path_factory.mktemp("reduce-input")
        config = folder / "ftm.toml"
        config.write_text(CONFIG)
        given = write_input(folder / "input.jsonl.gz")
        root = folder / "root"
        base = ["--config", str(config)]
        prefetch = ["prefetch", str(QUARTER), "--input", str(folder / "input.jsonl.gz"), "--root", str(root)]
        assert main([*base, *prefetch]) == 0
        # The plan as `ftm submit` makes it, then each batch as a backend runs it.
        store = Store(str(root))
        plan = make_plan(store, QUARTER, read_manifest(store, QUARTER), batch_size=BATCH_SIZE)
        write_plan(store, QUARTER, plan.batches)
        for batch in plan.batches:
            command = ["map-batch", "--quarter", str(QUARTER), "--batch-id", batch.batch_id]
            assert main([*base, *command, "--root", str(root)]) == 0
        _cache.update(root=root, config=config, given=given)
    return _cache["root"], _cache["config"], _cache["given"]


def batch_ids(root: Path) -> list[str]:
    return [batch.batch_id for batch in read_plan(Store(str(root)), QUARTER) or []]
