"""The batch plan: a quarter's firms split into batches of similar work (`batches.jsonl`).

A firm's cost grows with its sentence count, so firms go largest first onto the batch with the
fewest sentences so far (ties: the lower batch index), each batch taking at most `batch_size`
firms; batches then take about the same time, and no worker idles while one slow batch finishes.
With a stable order and stable ties, the plan is a pure function of the manifest and the batch
size: planning again gives the same batches, which is what lets a resubmission resume.

Part of the spine, beside `layout` and `schemas`, because the plan is a data contract between
stages: `submit` (ftm.runs) writes it, `map-batch` (ftm.map) finds its batch in it, `reduce`
(ftm.reduce) checks that every batch in it finished, and `watch` lists its batches. In `runs/`,
map and reduce would import upward. It imports only spine modules.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from dataclasses import dataclass

import pyarrow.compute as pc

from ftm import layout
from ftm.errors import DataError, UsageError
from ftm.quarters import Quarter
from ftm.schemas import SENTENCES, Batch, PrefetchManifest
from ftm.storage import Store

DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class Plan:
    """A quarter's batches, with each batch's sentence count (for the dry run and balance)."""

    quarter: str
    batches: list[Batch]
    sentences: dict[str, int]  # batch id → sentences of its firms

    @property
    def n_firms(self) -> int:
        return sum(len(batch.firm_ids) for batch in self.batches)

    @property
    def n_sentences(self) -> int:
        return sum(self.sentences.values())

    @property
    def batch_ids(self) -> list[str]:
        return [batch.batch_id for batch in self.batches]

    def same_batches(self, other: list[Batch]) -> bool:
        return [(b.batch_id, sorted(b.firm_ids)) for b in self.batches] == [
            (b.batch_id, sorted(b.firm_ids)) for b in other
        ]


def make_plan(store: Store, quarter: Quarter, manifest: PrefetchManifest, batch_size: int) -> Plan:
    """Plans the manifest's firms into batches of at most `batch_size` firms; writes nothing."""
    counts = sentence_counts(store, quarter, manifest)
    batches = partition(counts, batch_size)
    return Plan(str(quarter), batches, _batch_sentences(batches, counts))


def plan_of(store: Store, quarter: Quarter, manifest: PrefetchManifest, batches: list[Batch]) -> Plan:
    """An existing plan's batches with their sentence counts."""
    return Plan(str(quarter), batches, _batch_sentences(batches, sentence_counts(store, quarter, manifest)))


def partition(counts: dict[str, int], batch_size: int) -> list[Batch]:
    """Firms (firm id → sentences) into ceil(n / batch_size) batches with balanced sentences."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 firm, not {batch_size}")
    if not counts:
        raise DataError("the prefetched quarter has no firms to map")
    n_batches = math.ceil(len(counts) / batch_size)
    members: list[list[str]] = [[] for _ in range(n_batches)]
    # (sentences so far, batch index): the heap's order is the tie rule, lower index first.
    lightest = [(0, index) for index in range(n_batches)]
    for firm_id in sorted(counts, key=lambda firm: (-counts[firm], firm)):
        load, index = heapq.heappop(lightest)
        members[index].append(firm_id)
        # A full batch leaves the heap: the total capacity covers every firm, so one is always open.
        if len(members[index]) < batch_size:
            heapq.heappush(lightest, (load + counts[firm_id], index))
    return [Batch(batch_id=layout.batch_id(i), firm_ids=sorted(firms)) for i, firms in enumerate(members)]


def sentence_counts(store: Store, quarter: Quarter, manifest: PrefetchManifest) -> dict[str, int]:
    """Sentences per firm of the manifest, from the chunks' firm_id column alone (one chunk at a time).

    A firm the manifest lists but its chunk lacks counts 0: it is still planned, and its batch
    records it as a failed firm with the reason, rather than it vanishing here."""
    counts: Counter[str] = Counter()
    for chunk in sorted(set(manifest.firm_to_chunk.values())):
        path = f"{layout.prefetch_folder(quarter)}/{chunk}"
        if not store.exists(path):
            continue  # the batch that holds its firms reports the missing chunk
        column = store.read_table(path, SENTENCES, columns=["firm_id"]).column("firm_id")
        for item in pc.value_counts(column).to_pylist():
            counts[item["values"]] += item["counts"]
    return {firm_id: counts.get(firm_id, 0) for firm_id in manifest.firm_to_chunk}


def read_plan(store: Store, quarter: Quarter) -> list[Batch] | None:
    """The quarter's `batches.jsonl`, or None when the quarter was never submitted."""
    path = layout.batch_plan(quarter)
    if not store.exists(path):
        return None
    batches = []
    for number, line in enumerate(store.read_bytes(path).decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            batches.append(Batch.model_validate(json.loads(line)))
        except ValueError as error:
            raise DataError(f"{store.uri(path)} line {number} is not a batch: {error}") from None
    return batches


def write_plan(store: Store, quarter: Quarter, batches: list[Batch]) -> None:
    lines = "".join(json.dumps(batch.to_json(), sort_keys=True) + "\n" for batch in batches)
    store.write_bytes(layout.batch_plan(quarter), lines.encode())


def find_batch(store: Store, quarter: Quarter, batch: str | int) -> Batch:
    """One batch of the quarter's plan, by id (batch_007) or by index (7), as map-batch is told."""
    batches = read_plan(store, quarter)
    if batches is None:
        raise UsageError(
            f"{quarter} has no batch plan in {store.uri()}: "
            f"run `{store.command(f'submit --quarter {quarter}')}` first"
        )
    if isinstance(batch, int) or batch.isdigit():
        index = int(batch)
        if not 0 <= index < len(batches):
            raise UsageError(
                f"batch index {index} is outside the plan of {quarter} (0 to {len(batches) - 1})"
            )
        return batches[index]
    for candidate in batches:
        if candidate.batch_id == batch:
            return candidate
    first, last = batches[0].batch_id, batches[-1].batch_id
    raise UsageError(f"{batch!r} is not a batch of {quarter}'s plan (it has {first} to {last})")


def _batch_sentences(batches: list[Batch], counts: dict[str, int]) -> dict[str, int]:
    return {batch.batch_id: sum(counts.get(firm, 0) for firm in batch.firm_ids) for batch in batches}
