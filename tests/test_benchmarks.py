"""Smoke test of the benchmarks: every script in benchmarks/ runs to its end on its smallest
arguments and prints its table.

The benchmarks run on demand, never in CI, so nothing else would notice that one broke: a setting
renamed, a schema or a file's place in the layout changed, a flag gone from a command they call.
Each runs here as its docstring says to run it, `python benchmarks/X.py ...` from the repository
root in a subprocess, with arguments that make its work tiny (some exist for this test: --calls,
--demo-firms, --firms), and must exit 0 and print its table with numbers in it: the headers and
rows checked below appear only when the run produced results. Timings, and what the numbers say,
are not checked.

A script that maps pays for a process start, torch's import and numba's compilation however few
its firms are, so the scripts run two at a time (a 2-core CI machine's cores; each is mostly one
busy process), in the tests' order, from the first of these tests on; each test waits for its own
script. Each script has a folder of its own for its --root, --cache, --folder or --keep and its
TMPDIR, runs spaCy and the clustering in the process that asks for them (FTM_PREPROCESS__WORKERS,
FTM_MAP__CLUSTER_PROCESSES), and reaches no network (HF_HUB_OFFLINE, tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import corpus

REPO = Path(__file__).resolve().parents[1]
PARALLEL = max(1, min(2, len(os.sched_getaffinity(0))))  # scripts at once
TIMEOUT_S = 400  # a script's own limit, inside pytest-timeout's 600 s per test
# One spaCy process per prefetch and no clustering processes beside a map-batch's own: each would
# import spaCy, torch or umap again, which takes longer than the few firms here.
ENVIRONMENT = {"FTM_PREPROCESS__WORKERS": "1", "FTM_MAP__CLUSTER_PROCESSES": "1"}
NUMBER = r"[\d,]+(?:\.\d+)?"


@dataclass(frozen=True)
class Benchmark:
    # Split at spaces, then "{folder}" is the script's own folder and "{corpus}" the test corpus
    # (scripts without --corpus read tests/corpus.py's PATH, the same).
    args: str
    table: tuple[str, ...]  # regular expressions (per line: re.M) its stdout must match
    needs_corpus: bool = True  # reads the test corpus


# Longest first: two at a time, the longest ones are not left to run alone at the end.
BENCHMARKS = {
    "themes.py": Benchmark(
        "--quarters 2021Q3 --firms 3 --workers 1 --root {folder}/root --corpus {corpus}",
        (
            rf"^2021Q3: 3 firms, {NUMBER} sentences \(map \d+ s\)$",
            r"^event +exposed \| +ftm +\| +global BERTopic +\| +seed's reduce",
            rf"^pandemic +{NUMBER} \| +{NUMBER} \({NUMBER}/{NUMBER}\)",
            rf"^  global BERTopic: \d+ s, peak {NUMBER} GB, \d+ themes$",
        ),
    ),
    "trends.py": Benchmark(
        "--quarters 2021Q2..2021Q3 --firms 3 --workers 1 --root {folder}/root --corpus {corpus}",
        (
            r"^ftm run 2021Q2\.\.2021Q3: \d+ s ",
            r"^\d+ lineages: \d+ vanish and come back, \d+ have a parent$",
            r"^pandemic: lineage (\d+|None), Spearman measured \S+ \(theme's firms \S+\), "
            r"largest 2020 gap None, a theme in \d of 2 quarters$",
            r"^inflation: lineage (\d+|None), Spearman measured \S+ \(theme's firms \S+\), ",
        ),
    ),
    "measure.py": Benchmark(
        "--quarters 2021Q3 --firms 3 --workers 1 --root {folder}/root --out {folder}/out --scale 10000 "
        "--corpus {corpus}",
        (
            r"^ftm measure over 2021Q3: \d+ s on \d+ cores",
            rf"^pandemic +\d+ \| +{NUMBER} \({NUMBER}/{NUMBER}\)",
            r"^scale: calibration over 10,000 random sentences: 1 subject [\d.]+ s, 10 subjects [\d.]+ s$",
        ),
    ),
    "map.py": Benchmark(
        "--firms 1 --calls 2 --workers 1 --precisions fp32 --force --wait 0 --corpus {corpus}",
        (
            r"^1 firms, [\d,]+ sentences$",
            r"^ +ftm fp32 +plain fp32$",
            rf"^wall s +{NUMBER} +{NUMBER}$",
            rf"^mean NPMI \(top 10\) +(-?{NUMBER}|nan) +(-?{NUMBER}|nan)$",
            rf"^ftm fp32 / plain fp32: {NUMBER}x firms/min",
        ),
    ),
    "reduce.py": Benchmark(
        "--seed-firms 1 --firms 30 --sentences-per-firm 40 --cores 1 --cache {folder}/cache "
        "--keep {folder}/quarter",
        (
            r"^ftm reduce over 1,200 sentences \(30 firms, ",
            rf"^  wall time: +{NUMBER} s on 1 cores",
            rf"^  peak memory: +{NUMBER} GiB",
            r"^  \d+ themes \(\d+ reporting\), [\d,]+ theme sentences; \d+ firms exposed",
        ),
    ),
    "small_firms.py": Benchmark(
        "--demo-firms 2 --firms 1 --calls 1 --workers 1 --examples 1 --corpus {corpus}",
        (
            r"^A demo: 2 firms, [\d,]+ sentences",
            r"^B corpus: 1 firms, [\d,]+ sentences",
            r"^rule +ok +no_top +skip +changed",
            rf"^fixed 10 +{NUMBER} +{NUMBER} +{NUMBER}",
            r"^\d+ distinct fits, \d+ s wall on 1 workers",
        ),
    ),
    "map_memory.py": Benchmark(
        "--firms 1 --folder {folder}/memory",
        (rf"^1 firms \({NUMBER} sentences\) in one batch: map {NUMBER} min .*, peak RSS {NUMBER} MB",),
    ),
    "embedding.py": Benchmark(
        "--firms 1 --calls 1 --configs torch:fp32:16 --corpus {corpus}",
        (
            r"^backend precision batch +per-firm /s +stream /s +cos mean",
            rf"^torch fp32 16 +{NUMBER} +{NUMBER} +1\.0000",
        ),
    ),
    "prefetch.py": Benchmark(
        "--limit 2 --workers 1 --corpus {corpus}",
        (
            r"^ +wall s +sent/s +kept/s +words/s$",
            rf"^baseline +{NUMBER} +{NUMBER}",
            rf"^ftm \(1 workers\) +{NUMBER} +{NUMBER}",
            r"^same cleaned output: yes$",  # ftm's preprocessing and a plain nlp.pipe agree
        ),
    ),
    "name.py": Benchmark(
        "--topics 20 --latency 0.01 --sample 2 --corpus {corpus}",
        (
            r"^naming 20 firm topics ",
            rf"^  ftm: +{NUMBER} s +\d+ requests",
            r"^  ftm re-run: .* 0 requests \(every reply cached\)",
            rf"^  ratio: +{NUMBER}x$",
        ),
    ),
    "report.py": Benchmark(
        "--firms 12 --themes 6 --themes-per-firm 3 --sentences-per-firm 10 --loads 1 --keep {folder}/quarter",
        (
            r"^page +MB +drawn in s$",
            rf"^ftm report +{NUMBER} +{NUMBER}$",  # its page, drawn in Debian's chromium
            rf"^plotly bar chart alone \(baseline\) +{NUMBER} +{NUMBER}$",
        ),
        needs_corpus=False,
    ),
    "name_context.py": Benchmark(
        "",
        (
            r"^worst case +longest of 1: 19 topics, prompt .* \([\d,]+ bytes\), reply budget [\d,]+",
            r"^ftm's bound \(naming\.longest_request_tokens\): [\d,]+ tokens$",
        ),
        needs_corpus=False,
    ),
}
ON_THE_CORPUS = [name for name, benchmark in BENCHMARKS.items() if benchmark.needs_corpus]
OFF_THE_CORPUS = [name for name, benchmark in BENCHMARKS.items() if not benchmark.needs_corpus]
# Run by other tests: gpu.py through benchmarks/gpu.sh in tests/test_gpu_script.py.
ELSEWHERE = {"gpu.py"}


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    seconds: float
    cpu_s: float  # of the script and the processes it waited for: what a loaded machine hides


class Runner:
    """Runs the selected benchmarks, PARALLEL at a time in the tests' order, from the first call
    of `result` on: inside a test, so that they get the environment conftest.py's `isolated`
    leaves (no FTM_* variables from outside but the forced embedding path)."""

    def __init__(self, names: list[str], folder: Callable[[str], Path]):
        self.names = names
        self.folder = folder
        self.pool = ThreadPoolExecutor(PARALLEL)
        self.runs: dict[str, Future[Ran]] = {}
        self.running: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()
        self.closed = False

    def result(self, name: str) -> Ran:
        if not self.runs:
            environment = {**os.environ, **ENVIRONMENT}
            missing = corpus.missing(corpus.PATH)
            for each in self.names:
                if not (BENCHMARKS[each].needs_corpus and missing):  # those tests fail on the fixture
                    self.runs[each] = self.pool.submit(self._run, each, self.folder(each), environment)
        return self.runs[name].result()

    def _run(self, name: str, folder: Path, environment: dict[str, str]) -> Ran:
        args = [arg.format(folder=folder, corpus=corpus.PATH) for arg in BENCHMARKS[name].args.split()]
        out, err = folder / "stdout.txt", folder / "stderr.txt"
        started = time.perf_counter()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            with self.lock:
                if self.closed:
                    return Ran(-1, "", "not started: the tests ended first", 0.0, 0.0)
                process = subprocess.Popen(
                    [sys.executable, f"benchmarks/{name}", *args],
                    cwd=REPO,
                    env={**environment, "TMPDIR": str(folder)},  # its temporary files, here
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,  # its own process group: its workers end with it
                )
                self.running.add(process)
            limit = threading.Timer(TIMEOUT_S, _kill, (process,))
            limit.start()
            try:
                # wait4, not Popen.wait: the CPU time of this script and its processes alone.
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = code = os.waitstatus_to_exitcode(status)
            finally:
                limit.cancel()
                with self.lock:
                    self.running.discard(process)
            if code == -signal.SIGKILL and not self.closed:
                stderr.write(f"\nkilled after {TIMEOUT_S} s\n".encode())
        text = {path: path.read_text(encoding="utf-8", errors="replace") for path in (out, err)}
        cpu_s = usage.ru_utime + usage.ru_stime
        return Ran(code, text[out], text[err], time.perf_counter() - started, cpu_s)

    def close(self) -> None:
        """Ends what still runs (the tests stopped early) and what has not started."""
        with self.lock:
            self.closed = True
            for process in self.running:
                _kill(process)
        self.pool.shutdown(wait=True, cancel_futures=True)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    selected = [
        item.callspec.params["script"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    ]
    started = Runner(selected, lambda name: tmp_path_factory.mktemp(name.removesuffix(".py")))
    yield started
    started.close()


def _check(script: str, ran: Ran) -> None:
    print(f"{script}: {ran.seconds:.1f} s, {ran.cpu_s:.1f} s of CPU")  # shown by pytest -rP
    tail = f"stdout:\n{ran.stdout[-3000:]}\nstderr:\n{ran.stderr[-5000:]}"
    assert ran.code == 0, f"benchmarks/{script} exited with {ran.code}\n{tail}"
    missing = [pattern for pattern in BENCHMARKS[script].table if not re.search(pattern, ran.stdout, re.M)]
    assert not missing, f"benchmarks/{script} printed no line matching {missing}\n{tail}"


@pytest.mark.parametrize("script", ON_THE_CORPUS)
def test_a_benchmark_on_the_corpus_runs_and_prints_its_table(
    script: str, shared_corpus: Path, runner: Runner
) -> None:
    _check(script, runner.result(script))


@pytest.mark.parametrize("script", OFF_THE_CORPUS)
def test_a_benchmark_runs_and_prints_its_table(script: str, runner: Runner) -> None:
    _check(script, runner.result(script))


def test_every_benchmark_script_is_smoke_tested() -> None:
    scripts = {path.name for path in (REPO / "benchmarks").glob("*.py")}
    assert scripts - ELSEWHERE == set(BENCHMARKS)
