"""A small range of real transcripts for `ftm run`: a few calls of the bundled sample (2016Q4),
and the same calls of some of those firms three months earlier (2016Q3) under their own ids."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ftm import sample
from ftm.quarters import Quarter

RANGE = "2016Q3..2016Q4"
QUARTERS = [Quarter.parse("2016Q3"), Quarter.parse("2016Q4")]
N_FIRMS = 4  # per quarter; two firms in both
SIZE_RANGE = (7_000, 12_000)  # characters: 60 to 100 sentences, a quick map
CONFIG = """\
[preprocess]
workers = 1
[embedding]
device = "cpu"
[map]
firms_per_part = 2
heartbeat_s = 1.0
cluster_processes = 1
[reduce]
min_firms = 2
[trends]
window = 1  # two quarters: 2016Q4 is flagged against 2016Q3
"""


def write_input(path: Path) -> None:
    records = []
    with gzip.open(sample.PATH, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            if SIZE_RANGE[0] <= sum(len(c["text"]) for c in record["components"]) <= SIZE_RANGE[1]:
                records.append(record)
    records = sorted(records, key=lambda record: record["ticker"])[: N_FIRMS + 2]
    with gzip.open(path, "wt") as out:
        for index, record in enumerate(records):
            if index < N_FIRMS:  # the same call, three months before, under its own id
                year, month, day = map(int, record["call_date"].split("-"))
                early = {**record, "transcript_id": f"{record['transcript_id']}-early"}
                early["call_date"] = f"{year}-{month - 3:02d}-{day:02d}"
                out.write(json.dumps(early) + "\n")
            if index >= 2:
                out.write(json.dumps(record) + "\n")
