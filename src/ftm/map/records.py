"""The records a batch leaves beside its part files: checkpoint, failures and progress.

The map batch (`batch.py`) writes all three (the progress record through `ProgressRecorder`, with
its heartbeat); `submit` marks a batch pending before a backend starts it, and a backend records
the end of a worker that died without a word. Everyone reads them through here.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ftm import layout
from ftm.quarters import Quarter
from ftm.schemas import BatchCheckpoint, BatchProgress, FirmFailure
from ftm.storage import Store

ProgressState = Literal["pending", "running", "succeeded", "failed", "stopped"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
_PROGRESS_EVERY_S = 1.0  # the most often a running batch rewrites its progress: few puts on S3


def now() -> datetime:
    return datetime.now(timezone.utc)


def read_checkpoint(store: Store, quarter: Quarter, batch_id: str) -> BatchCheckpoint | None:
    path = layout.batch_checkpoint(quarter, batch_id)
    return BatchCheckpoint.model_validate(store.read_json(path)) if store.exists(path) else None


def write_checkpoint(store: Store, quarter: Quarter, checkpoint: BatchCheckpoint) -> None:
    store.write_json(layout.batch_checkpoint(quarter, checkpoint.batch_id), checkpoint.to_json())


def read_failures(store: Store, quarter: Quarter, batch_id: str) -> list[FirmFailure]:
    path = layout.batch_failures(quarter, batch_id)
    if not store.exists(path):
        return []
    return [FirmFailure.model_validate(entry) for entry in store.read_json(path)]


def write_failures(store: Store, quarter: Quarter, batch_id: str, failures: list[FirmFailure]) -> None:
    store.write_json(layout.batch_failures(quarter, batch_id), [failure.to_json() for failure in failures])


def read_progress(store: Store, quarter: Quarter, batch_id: str) -> BatchProgress | None:
    path = layout.batch_progress(quarter, batch_id)
    return BatchProgress.model_validate(store.read_json(path)) if store.exists(path) else None


def write_progress(store: Store, quarter: Quarter, progress: BatchProgress) -> None:
    store.write_json(layout.batch_progress(quarter, progress.batch_id), progress.to_json())


def mark_pending(store: Store, quarter: Quarter, batch_id: str, firms_total: int) -> None:
    """Says that a backend was asked to run the batch: `watch` shows it pending, not as it ended last."""
    previous = read_progress(store, quarter, batch_id)
    checkpoint = read_checkpoint(store, quarter, batch_id)
    write_progress(
        store,
        quarter,
        BatchProgress(
            batch_id=batch_id,
            firms_total=firms_total,
            firms_done=len(checkpoint.completed_firm_ids) if checkpoint else 0,
            firms_skipped=len(checkpoint.skipped_firms) if checkpoint else 0,
            firms_failed=len(checkpoint.failed_firm_ids) if checkpoint else 0,
            attempt=previous.attempt if previous else 0,
            state="pending",
            last_failure=previous.last_failure if previous else None,
            heartbeat_at=now(),
        ),
    )


def mark_ended(
    store: Store, quarter: Quarter, batch_id: str, state: ProgressState, message: str
) -> BatchProgress | None:
    """Records how a worker ended when it could not say so itself (killed, or it died early).

    Leaves a record that already says how the batch ended alone, and says succeeded for a batch
    whose checkpoint is finished (the worker died after its last write)."""
    progress = read_progress(store, quarter, batch_id)
    if progress is not None and progress.state in ENDED:
        return progress
    checkpoint = read_checkpoint(store, quarter, batch_id)
    if checkpoint is not None and checkpoint.finished:
        state, message = "succeeded", None
    base = progress or BatchProgress(batch_id=batch_id, firms_total=0, firms_done=0, heartbeat_at=now())
    ended = base.model_copy(update={"state": state, "message": message, "heartbeat_at": now()})
    write_progress(store, quarter, ended)
    return ended


def host() -> str:
    return socket.gethostname()


def pid() -> int:
    return os.getpid()


def process_started(pid: int | None = None) -> str | None:
    """When a process (default: this one) started, as the kernel says (clock ticks after boot);
    None without /proc (macOS). With the pid it names one process for good: a pid is reused."""
    stat = _stat(os.getpid() if pid is None else pid)
    return stat[1] if stat else None


def process_alive(on_host: str, pid: int, started: str | None) -> bool | None:
    """Whether the process `pid` that started at `started` still runs; None where this machine
    cannot tell, because it ran on another host."""
    if on_host != host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True  # no /proc (macOS): the pid exists, trust it
    # A zombie has ended; another start time means the pid was reused by another process.
    return stat[0] not in ("Z", "X") and (not started or stat[1] == started)


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) from /proc/PID/stat, or None without /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], fields[19]


@dataclass
class ProgressRecorder:
    """The batch's progress record: rewritten at most every second as firms go by, and by a
    heartbeat thread every `map.heartbeat_s` seconds, so a long firm never looks like a dead worker."""

    store: Store
    quarter: Quarter
    current: BatchProgress
    heartbeat_s: float
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _written_at: float = 0.0
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.update(force=True)
        self._thread = threading.Thread(target=self._beat, name="ftm-heartbeat", daemon=True)
        self._thread.start()

    def update(self, force: bool = False, **fields: Any) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self.current = self.current.model_copy(update=fields)
            if force or time.monotonic() - self._written_at >= _PROGRESS_EVERY_S:
                self._write()

    def end(self, **fields: Any) -> None:
        """The last word; nothing is written after it, the heartbeat included."""
        with self._lock:
            self._stop.set()
            self.current = self.current.model_copy(update=fields)
            self._write(strict=True)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                if not self._stop.is_set():
                    self._write()

    def _write(self, strict: bool = False) -> None:
        self.current = self.current.model_copy(update={"heartbeat_at": now()})
        try:
            write_progress(self.store, self.quarter, self.current)
        except Exception:
            # Progress is for the eyes; a storage hiccup here must not fail firms that are fine.
            # The next beat tries again. The last word is the exception: it must land.
            if strict:
                raise
        self._written_at = time.monotonic()
