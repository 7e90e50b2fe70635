"""The local backend: `ftm map-batch` for each batch, in worker processes on this machine.

A supervisor keeps `workers` processes going until every batch has had its turn. It runs in a
thread of `ftm submit` (which draws the watch table meanwhile, and stops the workers on Ctrl-C),
or, with `detach`, in a process of its own in a new session, so that it outlives the terminal.
Each worker embeds on the GPU when there is one and clusters on its share of the CPU cores; the
workers' BLAS and numba threads are capped to that share, since N workers each using every core
would slow all of them.

The workers get exactly the submitting process's settings for what `map-batch` reads (storage,
embedding, topics, map) as FTM_* variables, so a worker never runs with other settings than the
run record shows. Their output goes to a log per batch; what matters (failed firms, a tripped
breaker, an error) is also in the batch's progress record, where `ftm watch` shows it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from ftm.backends.base import MAP_BATCH_SECTIONS, BackendStatus
from ftm.map import records
from ftm.quarters import Quarter
from ftm.schemas import Batch, RunRecord
from ftm.settings import FtmSettings, config_path, load_settings, section_environment, usable_cores
from ftm.storage import Store

# A stopped worker writes its last records within this; then it is killed (its checkpoint stays).
STOP_GRACE_S = 60.0
POLL_S = 0.2
# Detached supervisors started by this process: held so that Python does not warn, when the
# Popen object goes, that a process it started is still running, which is the point of detaching.
_DETACHED: list[subprocess.Popen[bytes]] = []
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def log_folder(run_id: str) -> Path:
    """Where the workers' output goes: on this machine, whatever the storage root."""
    return Path(tempfile.gettempdir()) / "ftm-runs" / run_id


class LocalBackend:
    name = "local"

    def __init__(
        self,
        settings: FtmSettings,
        *,
        workers: int | None = None,
        detach: bool = False,
        config: Path | None = None,
    ):
        self.settings = settings
        self.workers = workers or settings.map.workers or usable_cores()
        self.detach = detach
        self.config = config
        self._supervisor: Supervisor | None = None
        self._thread: threading.Thread | None = None
        self._run_id: str | None = None

    def submit(self, run: RunRecord, batches: list[Batch]) -> RunRecord:
        workers = max(1, min(self.workers, len(batches)))
        env = worker_environment(self.settings, self.config, workers)
        folder = log_folder(run.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        batch_ids = [batch.batch_id for batch in batches]
        if self.detach:
            with open(folder / "supervisor.log", "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "ftm.backends.local", "--quarter", run.quarter]
                    + ["--workers", str(workers), "--run-id", run.run_id, *batch_ids],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in this terminal and its closing leave it alone
                )
            _DETACHED.append(process)
            job = _job_id(process.pid)
        else:
            store = Store.from_settings(self.settings.storage)
            self._supervisor = Supervisor(store, Quarter.parse(run.quarter), batch_ids, workers, env, folder)
            self._thread = threading.Thread(target=self._supervisor.run, name="ftm-local", daemon=True)
            self._thread.start()
            self._run_id = run.run_id
            job = _job_id(os.getpid())
        return run.model_copy(update={"job_ids": dict.fromkeys(batch_ids, job)})

    def status(self, run: RunRecord) -> BackendStatus:
        if self._thread is not None and self._run_id == run.run_id:
            return BackendStatus(active=self._thread.is_alive())
        states = {_alive(job) for job in set(run.job_ids.values())}
        if True in states:
            return BackendStatus(active=True)
        return BackendStatus(active=None if None in states else False)

    def cancel(self, run: RunRecord) -> None:
        if self._supervisor is not None and self._thread is not None and self._run_id == run.run_id:
            self._supervisor.stop()
            self._thread.join()
            return
        for job in set(run.job_ids.values()):
            if _alive(job):
                os.kill(_pid(job), signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S + 10
        while any(_alive(job) for job in set(run.job_ids.values())) and time.monotonic() < deadline:
            time.sleep(POLL_S)


class Supervisor:
    """Keeps `workers` map-batch processes going, one batch each, until every batch had its turn."""

    def __init__(
        self,
        store: Store,
        quarter: Quarter,
        batch_ids: list[str],
        workers: int,
        env: dict[str, str],
        logs: Path,
    ):
        self.store = store
        self.quarter = quarter
        self.queue = deque(batch_ids)
        self.workers = workers
        self.env = env
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.exit_codes: dict[str, int] = {}
        # Set from another thread or a signal handler; only `run` acts on it, so that no worker
        # is started or signalled halfway.
        self._stop = threading.Event()
        self._stopping = False
        self._kill_at = 0.0
        self._killed: set[str] = set()  # workers this supervisor killed, after STOP_GRACE_S

    def run(self) -> None:
        while True:
            if self._stop.is_set() and not self._stopping:
                self._stopping = True
                self._kill_at = time.monotonic() + STOP_GRACE_S
                for process in self.running.values():
                    process.send_signal(signal.SIGINT)
            if self._stopping and time.monotonic() > self._kill_at:
                for batch_id, process in self.running.items():
                    process.kill()
                    self._killed.add(batch_id)
            while self.queue and len(self.running) < self.workers and not self._stopping:
                self._start(self.queue.popleft())
            for batch_id, process in list(self.running.items()):
                code = process.poll()
                if code is not None:
                    del self.running[batch_id]
                    self.exit_codes[batch_id] = code
                    self._ended(batch_id, code)
            if not self.running and (self._stopping or not self.queue):
                return
            time.sleep(POLL_S)

    @property
    def stopped(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Starts no more workers and asks the running ones to stop (SIGINT, then SIGKILL after
        STOP_GRACE_S); `run` returns once they ended. Safe from any thread and signal handler."""
        self._stop.set()

    def _start(self, batch_id: str) -> None:
        command = [
            sys.executable,
            "-m",
            "ftm",
            "map-batch",
            "--quarter",
            str(self.quarter),
            "--batch-id",
            batch_id,
        ]
        with open(self.logs / f"{batch_id}.log", "ab") as log:
            self.running[batch_id] = subprocess.Popen(
                command, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _ended(self, batch_id: str, code: int) -> None:
        """A worker's end, in its progress record when it could not write it (killed, or died early)."""
        log = self.logs / f"{batch_id}.log"
        interrupted = code in (130, -signal.SIGINT, -signal.SIGTERM) or batch_id in self._killed
        if code in (0, 3):
            state, message = "failed", f"the worker ended without its last record; see {log}"
        elif interrupted or (self._stopping and code > 0):
            state, message = "stopped", "stopped; resubmit to go on from its checkpoint"
        elif code < 0:  # a signal from outside: the OOM killer, a user's kill -9
            state = "failed"
            message = f"the worker was killed by {_signal_name(-code)}; resubmit to go on from its checkpoint"
        else:
            state, message = "failed", f"the worker exited with code {code}: {_last_line(log)} (log: {log})"
        # Storage unreachable: `watch` then sees a stale heartbeat instead.
        with contextlib.suppress(Exception):
            records.mark_ended(self.store, self.quarter, batch_id, state, message)  # type: ignore[arg-type]


def worker_environment(settings: FtmSettings, config: Path | None, workers: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith("FTM_")}
    path = config_path(config)
    if path is not None:
        env["FTM_CONFIG"] = str(path.resolve())
    env.update(section_environment(settings, MAP_BATCH_SECTIONS))
    share = max(1, usable_cores() // workers)
    if not settings.map.cluster_processes:  # the workers share the cores, not each take them all
        env["FTM_MAP__CLUSTER_PROCESSES"] = str(share)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(share))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _job_id(pid: int) -> str:
    return f"local:{records.host()}:{pid}:{records.process_started(pid) or ''}"


def _pid(job: str) -> int:
    return int(job.split(":")[2])


def _alive(job: str) -> bool | None:
    """Whether a supervisor still runs: None when it ran on another machine (cannot tell)."""
    try:
        _, host, pid_text, started = job.split(":")
        pid = int(pid_text)
    except ValueError:
        return None
    return records.process_alive(host, pid, started or None)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


def _main(argv: list[str] | None = None) -> int:
    """The detached supervisor: `python -m ftm.backends.local`, started by `ftm submit --detach`."""
    parser = argparse.ArgumentParser(prog="python -m ftm.backends.local")
    parser.add_argument("--quarter", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("batch_ids", nargs="+")
    args = parser.parse_args(argv)

    settings = load_settings()  # the submitter's, from the FTM_* variables it set
    supervisor = Supervisor(
        Store.from_settings(settings.storage),
        Quarter.parse(args.quarter),
        args.batch_ids,
        args.workers,
        dict(os.environ),
        log_folder(args.run_id),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):  # LocalBackend.cancel sends SIGTERM
        signal.signal(sig, lambda signum, frame: supervisor.stop())
    supervisor.run()
    return 130 if supervisor.stopped else 0


if __name__ == "__main__":
    sys.exit(_main())
