"""One batch of the map (`ftm map-batch`): its firms' prefetched sentences in, their topics out.

Firms run in a fixed order (by chunk, then firm id), in groups of `map.firms_per_part`. A group's
sentences are embedded in one `Embedder.encode_firms` stream (many firms at once keep a GPU
busy), then each firm goes through the firm processor. The group's sentence embeddings (float16,
every sentence of every firm not failed: the reduce assigns outliers and firms too small for topics
to themes too) become one part file, its topic rows another, then the failures file is written,
then the checkpoint, never in another order. So a kill at any moment leaves a checkpoint listing
only whole groups whose part files exist. A restart deletes the batch's part files the checkpoint
does not list and redoes the unfinished group from its first firm, with the same topics and
embeddings as an uninterrupted run (a firm's embeddings and topics depend on the firm alone). No
firm is written twice and none is lost.

Firm failures are data. A firm whose rows break the sentence contract, whose embedding fails, or
on which the processor raises is recorded (firm, error type, message) and the batch goes on,
within the failure policy (`map` settings): the circuit breaker stops the batch after
`max_consecutive_failures` failures in a row, or above `max_failure_rate` once
`failure_rate_after` firms were tried. A restart retries the failed firms of the unfinished group.

The map reads only the prefetch (never WRDS): a quarter that was not prefetched is an error.
Memory holds one group and the batch's rows of at most two chunks (`ftm.map.firm_inputs`).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from ftm import layout
from ftm.errors import DataError, FtmError
from ftm.map import records
from ftm.map.firm_inputs import FirmReader
from ftm.map.records import ProgressRecorder, now
from ftm.plan import find_batch
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.schemas import (
    FIRM_TOPICS,
    SENTENCE_EMBEDDINGS,
    Batch,
    BatchCheckpoint,
    BatchProgress,
    FirmFailure,
    PrefetchManifest,
    SkippedFirm,
    centroid_type,
    conform,
    embedding_type,
)
from ftm.settings import FtmSettings, MapSettings, usable_cores
from ftm.storage import Store

if TYPE_CHECKING:  # torch and the clustering libraries load only when a batch has work
    from ftm.map.embedding import Embedder
    from ftm.map.firm_topics import FirmInput, FirmOutcome, FirmProcessorPool


Phase = Literal["loading", "processing", "done"]


@dataclass(frozen=True)
class MapProgress:
    """What the progress callback is told: once the models load, then after every firm."""

    batch_id: str
    phase: Phase
    firms_total: int
    firms_done: int  # processed, with or without topics, this attempt and before
    firms_skipped: int
    firms_failed: int
    rate_per_s: float  # firms handled per second in this attempt
    last_failure: str | None = None


@dataclass(frozen=True)
class BatchResult:
    batch_id: str
    state: Literal["succeeded", "failed"]  # failed: the circuit breaker stopped the batch
    firms_total: int
    firms_done: int
    firms_skipped: int
    failures: list[FirmFailure]
    part_files: list[str]
    attempt: int
    resumed_at: int  # firms found done by an earlier attempt
    already_finished: bool = False
    message: str | None = None

    @property
    def firms_failed(self) -> int:
        return len(self.failures)


class CircuitBreakerTripped(Exception):
    """Raised inside a batch when the failure policy says to stop; becomes a failed BatchResult."""


def run_batch(
    settings: FtmSettings,
    quarter: Quarter,
    batch: str | int,
    *,
    on_progress: Callable[[MapProgress], None] = lambda progress: None,
) -> BatchResult:
    """Runs one batch of the quarter's plan (by id or index); see the module docstring.

    Raises KeyboardInterrupt after recording the batch as stopped, and any unexpected error
    after recording it as failed; firm failures never raise."""
    store = Store.from_settings(settings.storage)
    manifest = read_manifest(store, quarter)  # a quarter that was not prefetched stops here
    planned = find_batch(store, quarter, batch)
    return _BatchRun(settings, store, quarter, manifest, planned, on_progress).run()


def release_freed_memory() -> None:
    """Hands the heap that a group freed back to the system. glibc keeps it otherwise: over a
    990-firm batch a worker's peak resident memory was 2.66 GB without this and 1.85 GB with
    it, most of the difference freed torch activations of varied shapes (embedding 60,000
    sentences alone: 0.65 → 1.86 GB, 0.83 GB with a trim after each call;
    benchmarks/map_memory.py). No-op without glibc."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: macOS, musl
        return None


_malloc_trim = _find_malloc_trim()


def topics_schema(dimensions: int) -> pa.Schema:
    """FIRM_TOPICS with the centroid as long as the embedding model's vectors."""
    return pa.schema(
        [pa.field("centroid", centroid_type(dimensions)) if f.name == "centroid" else f for f in FIRM_TOPICS]
    )


def embeddings_schema(dimensions: int) -> pa.Schema:
    """SENTENCE_EMBEDDINGS with vectors as long as the embedding model's."""
    return pa.schema(
        [
            pa.field("embedding", embedding_type(dimensions), nullable=False) if f.name == "embedding" else f
            for f in SENTENCE_EMBEDDINGS
        ]
    )


class _BatchRun:
    def __init__(
        self,
        settings: FtmSettings,
        store: Store,
        quarter: Quarter,
        manifest: PrefetchManifest,
        batch: Batch,
        on_progress: Callable[[MapProgress], None],
    ):
        self.settings = settings
        self.policy: MapSettings = settings.map
        self.store = store
        self.quarter = quarter
        self.batch = batch
        self.on_progress = on_progress
        self.firm_to_chunk = manifest.firm_to_chunk
        self.checkpoint = records.read_checkpoint(store, quarter, batch.batch_id) or BatchCheckpoint(
            batch_id=batch.batch_id, attempt=0, completed_firm_ids=[], part_files=[], updated_at=now()
        )
        previous = records.read_progress(store, quarter, batch.batch_id)
        self.attempt = max(previous.attempt if previous else 0, self.checkpoint.attempt) + 1
        self.failures = {f.firm_id: f for f in records.read_failures(store, quarter, batch.batch_id)}
        self.done = set(self.checkpoint.completed_firm_ids)
        self.n_skipped = len(self.checkpoint.skipped_firms)
        self.resumed_at = len(self.done) + len(self.checkpoint.failed_firm_ids)
        self.consecutive_failures = 0
        self.handled = 0  # firms handled in this attempt, for the rate
        self.processing_since = time.monotonic()
        self.last_failure = previous.last_failure if previous else None
        self.embedder: Embedder | None = None
        self.processor: FirmProcessorPool | None = None

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> BatchResult:
        firms_total = len(self.batch.firm_ids)
        self.record = ProgressRecorder(
            self.store,
            self.quarter,
            BatchProgress(
                batch_id=self.batch.batch_id,
                firms_total=firms_total,
                firms_done=len(self.done),
                firms_skipped=self.n_skipped,
                firms_failed=len(self.failures),
                attempt=self.attempt,
                host=records.host(),
                pid=records.pid(),
                process_started=records.process_started(),
                state="running",
                last_failure=self.last_failure,
                started_at=now(),
                heartbeat_at=now(),
            ),
            self.policy.heartbeat_s,
        )
        if self.checkpoint.finished:
            self._confirm_finished()
            return self._result("succeeded", already_finished=True)
        self.record.start()
        try:
            self._remove_unlisted_parts()
            groups = self._groups()
            if groups:
                self._report("loading")
                self._prepare()
            self.processing_since = time.monotonic()
            for group in groups:
                self._run_group(group)
                release_freed_memory()
            self.checkpoint = self.checkpoint.model_copy(
                update={"finished": True, "attempt": self.attempt, "updated_at": now()}
            )
            records.write_checkpoint(self.store, self.quarter, self.checkpoint)
        except CircuitBreakerTripped as trip:
            self._forget_unfinished_group()
            self.record.end(state="failed", message=str(trip), **self._counts())
            self._report("done")
            return self._result("failed", message=str(trip))
        except KeyboardInterrupt:
            self._forget_unfinished_group()
            self.record.end(state="stopped", message="interrupted; resubmit to go on", **self._counts())
            raise
        except BaseException as error:
            self.record.end(state="failed", message=_describe(error), **self._counts())
            raise
        finally:
            if self.processor is not None:
                self.processor.close()
        self.record.end(state="succeeded", message=None, **self._counts())
        self._report("done")
        return self._result("succeeded")

    def _confirm_finished(self) -> None:
        """Leaves a finished batch's records as they are, but for a progress record that does not
        say succeeded (a worker killed after the last checkpoint, or a pending mark)."""
        previous = records.read_progress(self.store, self.quarter, self.batch.batch_id)
        if previous is not None and previous.state == "succeeded":
            return
        base = previous or self.record.current
        done = base.model_copy(
            update={
                "state": "succeeded",
                "message": None,
                "attempt": self.checkpoint.attempt,
                "firms_done": len(self.done),
                "firms_skipped": self.n_skipped,
                "firms_failed": len(self.failures),
                "heartbeat_at": now(),
            }
        )
        records.write_progress(self.store, self.quarter, done)

    def _forget_unfinished_group(self) -> None:
        """A restart redoes the group under way: count only what the checkpoint holds."""
        self.done = set(self.checkpoint.completed_firm_ids)
        self.n_skipped = len(self.checkpoint.skipped_firms)

    def _groups(self) -> list[list[str]]:
        """The firms still to do, in the fixed order, cut into the groups an uninterrupted run makes.

        Only whole groups are ever checkpointed, so the firms left start at a group boundary."""
        finished = self.done | set(self.checkpoint.failed_firm_ids)
        order = sorted(self.batch.firm_ids, key=lambda firm: (self.firm_to_chunk.get(firm, ""), firm))
        remaining = [firm for firm in order if firm not in finished]
        size = self.policy.firms_per_part
        return [remaining[start : start + size] for start in range(0, len(remaining), size)]

    def _remove_unlisted_parts(self) -> None:
        """Deletes part files of this batch that the checkpoint does not list: a kill came between
        writing one and the checkpoint, so its firms are about to be done (and written) again."""
        listed = set(self.checkpoint.part_files) | set(self.checkpoint.embedding_files)
        prefix = f"{self.batch.batch_id}_part_"
        for folder in (
            layout.firm_topics_folder(self.quarter),
            layout.sentence_embeddings_folder(self.quarter),
        ):
            for path in self.store.list(folder):
                if path.rsplit("/", 1)[-1].startswith(prefix) and path not in listed:
                    self.store.delete(path)

    def _prepare(self) -> None:
        from ftm.map.embedding import Embedder
        from ftm.map.firm_topics import FirmProcessorPool

        self.embedder = Embedder(self.settings.embedding)
        processes = self.policy.cluster_processes or usable_cores()
        self.processor = FirmProcessorPool(self.settings.topics, processes)
        self.reader = FirmReader(self.store, self.quarter, self.firm_to_chunk, set(self.batch.firm_ids))
        self.schema = topics_schema(self.embedder.dimensions)
        self.embeddings_schema = embeddings_schema(self.embedder.dimensions)

    # --- one group, one part file ------------------------------------------------------------

    def _run_group(self, group: list[str]) -> None:
        inputs: list[tuple[str, FirmInput | Exception]] = []
        for firm_id in group:
            try:
                inputs.append((firm_id, self.reader.firm(firm_id)))
            except DataError as error:
                inputs.append((firm_id, error))
        embeddings = self._embed([firm for _, firm in inputs if not isinstance(firm, Exception)])
        assert self.processor is not None
        ready = [
            (firm, embeddings[firm.firm_id])
            for _, firm in inputs
            if not isinstance(firm, Exception) and not isinstance(embeddings[firm.firm_id], Exception)
        ]
        outcomes = self.processor.process_all(ready)  # lazily, in the order of `inputs`
        try:
            self._record_group(inputs, embeddings, outcomes)
        finally:
            outcomes.close()  # a tripped breaker leaves firms in the pool: cancel them

    def _record_group(
        self,
        inputs: list[tuple[str, FirmInput | Exception]],
        embeddings: dict[str, np.ndarray | Exception],
        outcomes: Iterator[FirmOutcome | Exception],
    ) -> None:
        tables: list[pa.Table] = []
        vectors_of: dict[str, tuple[FirmInput, np.ndarray]] = {}
        recovered = False
        done: list[str] = []
        skipped: list[SkippedFirm] = []
        failed: list[str] = []
        for firm_id, firm in inputs:
            try:
                if isinstance(firm, Exception):
                    raise firm
                vectors = embeddings[firm_id]
                if isinstance(vectors, Exception):
                    raise vectors
                outcome = next(outcomes)
                if isinstance(outcome, Exception):
                    raise outcome
                table, skip = self._table(firm, outcome)
            except Exception as error:  # any firm's failure is data; the batch goes on
                failed.append(firm_id)
                self._fail(firm_id, error)
                continue
            done.append(firm_id)
            vectors_of[firm_id] = (firm, vectors)
            self.done.add(firm_id)
            if skip is not None:
                skipped.append(skip)
                self.n_skipped += 1
            elif table is not None:
                tables.append(table)
            recovered |= self.failures.pop(firm_id, None) is not None  # it failed in an earlier attempt
            self.consecutive_failures = 0
            self._firm_handled()
        self._commit(tables, self._embeddings_table(vectors_of), done, skipped, failed, recovered)

    def _embed(self, firms: list[FirmInput]) -> dict[str, np.ndarray | Exception]:
        """Embeds the group's firms in one stream; if that fails, each firm alone, to find the
        culprit (a firm's embeddings are the same either way: `Embedder.encode_firms`)."""
        assert self.embedder is not None
        try:
            return dict(zip([f.firm_id for f in firms], self._encode(firms), strict=True))
        except Exception:
            pass
        embeddings: dict[str, np.ndarray | Exception] = {}
        for firm in firms:
            try:
                embeddings[firm.firm_id] = self._encode([firm])[0]
            except Exception as error:
                embeddings[firm.firm_id] = error
        return embeddings

    def _encode(self, firms: list[FirmInput]) -> list[np.ndarray]:
        assert self.embedder is not None
        vectors = self.embedder.encode_firms([firm.raw_texts for firm in firms])
        for firm, array in zip(firms, vectors, strict=True):
            if array.shape != (len(firm.raw_texts), self.embedder.dimensions):
                raise DataError(
                    f"the embedder returned an array of shape {array.shape} for "
                    f"{len(firm.raw_texts)} sentence(s)"
                )
        return vectors

    def _table(self, firm: FirmInput, outcome: FirmOutcome) -> tuple[pa.Table | None, SkippedFirm | None]:
        if outcome.firm_id != firm.firm_id:
            raise DataError(f"the firm processor answered for {outcome.firm_id!r}")
        if outcome.status == "skipped" or not outcome.rows:
            default = "every sentence is an outlier: no topics" if outcome.status != "skipped" else "skipped"
            return None, SkippedFirm(firm_id=firm.firm_id, reason=outcome.reason or default)
        stamp = now()
        rows = [{"processing_timestamp": stamp, **row} for row in outcome.rows]
        # Built per firm, so a firm whose rows break the contract fails alone, not its group.
        table = pa.Table.from_pylist(rows, schema=self.schema)
        return conform(table, self.schema, f"firm {firm.firm_id} of {self.batch.batch_id}"), None

    def _embeddings_table(self, vectors_of: dict[str, tuple[FirmInput, np.ndarray]]) -> pa.Table | None:
        """The group's done firms' sentence ids and unit embeddings in float16, in group order."""
        if not vectors_of:
            return None
        firms = list(vectors_of.values())
        ids = [sentence for firm, _ in firms for sentence in firm.sentence_ids]
        vectors = np.concatenate([vectors for _, vectors in firms]).astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float16)
        columns = {
            "firm_id": pa.array([firm.firm_id for firm, _ in firms for _ in firm.sentence_ids], pa.string()),
            "sentence_id": pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(unit.ravel(), pa.float16()), unit.shape[1]
            ),
        }
        return pa.table(columns, schema=self.embeddings_schema)

    def _fail(self, firm_id: str, error: Exception) -> None:
        error_type = getattr(error, "error_type", type(error).__name__)  # FirmError: from a worker
        failure = FirmFailure(firm_id=firm_id, error_type=error_type, message=str(error), at=now())
        self.failures[firm_id] = failure
        self.last_failure = f"{firm_id}: {failure.error_type}: {failure.message}"
        self.consecutive_failures += 1
        # Written at once, so the reason is on storage even if the batch dies before its part.
        records.write_failures(self.store, self.quarter, self.batch.batch_id, self._failure_list())
        self._firm_handled()
        self._check_policy(firm_id, failure)

    def _check_policy(self, firm_id: str, failure: FirmFailure) -> None:
        policy = self.policy
        last = f"the last: {firm_id}: {failure.error_type}: {failure.message}"
        retry = "Fix the cause and submit again: the batch goes on where it stopped."
        if not policy.allow_failures:
            raise CircuitBreakerTripped(
                f"firm {firm_id} failed and map.allow_failures is false ({last}). {retry}"
            )
        if self.consecutive_failures >= policy.max_consecutive_failures:
            raise CircuitBreakerTripped(
                f"circuit breaker: {self.consecutive_failures} firms failed in a row "
                f"(map.max_consecutive_failures = {policy.max_consecutive_failures}); {last}. {retry}"
            )
        tried = len(self.done) + len(self.failures)
        rate = len(self.failures) / tried
        if tried >= policy.failure_rate_after and rate > policy.max_failure_rate:
            raise CircuitBreakerTripped(
                f"circuit breaker: {len(self.failures)} of {tried} firms failed ({rate:.1%}, above "
                f"map.max_failure_rate = {policy.max_failure_rate:.1%}); {last}. {retry}"
            )

    def _commit(
        self,
        tables: list[pa.Table],
        embeddings: pa.Table | None,
        done: list[str],
        skipped: list[SkippedFirm],
        failed: list[str],
        recovered: bool,
    ) -> None:
        """Part files, then failures, then checkpoint: the checkpoint never names what is not there."""
        embedding_files = list(self.checkpoint.embedding_files)
        if embeddings is not None:
            path = layout.sentence_embeddings_part(self.quarter, self.batch.batch_id, len(embedding_files))
            self.store.write_table(path, embeddings, self.embeddings_schema)
            embedding_files.append(path)
        part_files = list(self.checkpoint.part_files)
        if tables:
            path = layout.firm_topics_part(self.quarter, self.batch.batch_id, len(part_files))
            self.store.write_table(path, pa.concat_tables(tables), self.schema)
            part_files.append(path)
        if recovered:  # new failures were written as they came; firms that now worked leave the file
            records.write_failures(self.store, self.quarter, self.batch.batch_id, self._failure_list())
        self.checkpoint = self.checkpoint.model_copy(
            update={
                "attempt": self.attempt,
                "completed_firm_ids": self.checkpoint.completed_firm_ids + done,
                "part_files": part_files,
                "embedding_files": embedding_files,
                "failed_firm_ids": self.checkpoint.failed_firm_ids + failed,
                "skipped_firms": self.checkpoint.skipped_firms + skipped,
                "updated_at": now(),
            }
        )
        records.write_checkpoint(self.store, self.quarter, self.checkpoint)
        self.record.update(force=True, **self._counts())

    # --- progress ----------------------------------------------------------------------------

    def _firm_handled(self) -> None:
        self.handled += 1
        self.record.update(**self._counts())
        self._report("processing")

    def _counts(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.processing_since, 1e-6)
        return {
            "firms_done": len(self.done),
            "firms_skipped": self.n_skipped,
            "firms_failed": len(self.failures),
            "rate_per_s": self.handled / elapsed if self.handled else 0.0,
            "last_failure": self.last_failure,
        }

    def _report(self, phase: Phase) -> None:
        counts = self._counts()
        self.on_progress(
            MapProgress(
                batch_id=self.batch.batch_id,
                phase=phase,
                firms_total=len(self.batch.firm_ids),
                firms_done=counts["firms_done"],
                firms_skipped=counts["firms_skipped"],
                firms_failed=counts["firms_failed"],
                rate_per_s=counts["rate_per_s"],
                last_failure=counts["last_failure"],
            )
        )

    def _failure_list(self) -> list[FirmFailure]:
        return sorted(self.failures.values(), key=lambda failure: failure.firm_id)

    def _result(self, state: Literal["succeeded", "failed"], **extra: Any) -> BatchResult:
        return BatchResult(
            batch_id=self.batch.batch_id,
            state=state,
            firms_total=len(self.batch.firm_ids),
            firms_done=len(self.done),
            firms_skipped=self.n_skipped,
            failures=self._failure_list(),
            part_files=list(self.checkpoint.part_files),
            attempt=self.attempt - 1 if extra.get("already_finished") else self.attempt,
            resumed_at=self.resumed_at,
            **extra,
        )


def _describe(error: BaseException) -> str:
    if isinstance(error, FtmError):
        return str(error)
    return f"{type(error).__name__}: {error}"
