"""Benchmark: the peak memory of one `ftm map-batch` worker over a 1,000-firm batch.

Run on demand (never by pytest); it takes about as long as the batch does (1,000 firms at
roughly 10 firms a minute on 2 cores):

    .venv/bin/python benchmarks/map_memory.py [--firms 1000] [--folder /tmp/ftm-memory] [--json]

The shared corpus has no quarter with 1,000 firms, so the batch is made of the latest call of
each of the first `--firms` tickers, dated into 2016Q4: real transcripts, one per firm, as a
quarter has. They are prefetched with `ftm prefetch` (the files source), planned as one batch,
and mapped by one `ftm map-batch` process, exactly what a worker of either backend runs. Its
resident memory is sampled every 2 s from /proc (with the firms done at that moment, from its
progress record) and its peak is the kernel's own count (`wait4`'s ru_maxrss). The goal
(issue 5): under 3 GB. The memory should stay flat once the first group ran: a worker holds one
group of firms and at most two chunks, never the batch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/corpus.py: the test corpus
import corpus  # noqa: E402

CORPUS = corpus.PATH
QUARTER = "2016Q4"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=1000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/ftm-memory"))
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    corpus.require(CORPUS)

    from ftm import layout
    from ftm.plan import make_plan, write_plan
    from ftm.prefetch import read_manifest
    from ftm.quarters import Quarter
    from ftm.storage import Store

    args.folder.mkdir(parents=True, exist_ok=True)
    root = args.folder / "root"
    calls = _one_call_per_firm(args.firms, args.folder / "calls.jsonl.gz")
    started = time.monotonic()
    ftm = [sys.executable, "-m", "ftm"]
    prefetch = [*ftm, "prefetch", QUARTER, "--input", str(calls), "--root", str(root)]
    subprocess.run(prefetch, check=True, stderr=subprocess.DEVNULL)
    prefetch_s = time.monotonic() - started

    store = Store(str(root))
    quarter = Quarter.parse(QUARTER)
    for folder in (layout.firm_topics_folder(quarter), layout.progress_folder(quarter)):
        store.delete_folder(folder)  # a second run maps again, from nothing
    plan = make_plan(store, quarter, read_manifest(store, quarter), batch_size=args.firms)
    write_plan(store, quarter, plan.batches)
    batch = plan.batches[0]

    started = time.monotonic()
    worker = subprocess.Popen(
        [*ftm, "map-batch", "--quarter", QUARTER, "--batch-id", batch.batch_id, "--root", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=open(args.folder / "map-batch.log", "w"),  # noqa: SIM115
    )
    samples: list[tuple[float, int, int]] = []  # (seconds, firms done, RSS in MB)
    progress_path = layout.batch_progress(quarter, batch.batch_id)
    while True:
        # wait4 rather than Popen.poll: it also gives the kernel's peak RSS of the worker.
        pid, status, usage = os.wait4(worker.pid, os.WNOHANG)
        rss = _rss_mb(worker.pid) if pid == 0 else None
        if rss is not None:
            progress = store.read_json(progress_path) if store.exists(progress_path) else {}
            samples.append((time.monotonic() - started, int(progress.get("firms_done", 0)), rss))
        if pid != 0:
            break
        time.sleep(2.0)
    exit_code = os.waitstatus_to_exitcode(status)
    map_s = time.monotonic() - started
    peak_mb = usage.ru_maxrss / 1024
    by_hundred = {}
    for _, done, rss in samples:
        by_hundred[done // 100 * 100] = max(by_hundred.get(done // 100 * 100, 0), rss)
    result = {
        "firms": len(batch.firm_ids),
        "sentences": plan.sentences[batch.batch_id],
        "prefetch_s": round(prefetch_s, 1),
        "map_s": round(map_s, 1),
        "firms_per_min": round(len(batch.firm_ids) / map_s * 60, 2),
        "peak_rss_mb": round(peak_mb),
        "peak_rss_mb_by_firms_done": by_hundred,
        "exit_code": exit_code,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['firms']} firms ({result['sentences']:,} sentences) in one batch: map "
            f"{map_s / 60:.1f} min ({result['firms_per_min']} firms/min), peak RSS {peak_mb:,.0f} MB "
            f"(goal < 3,000 MB); highest RSS by firms done: {by_hundred}"
        )
    return 0


def _one_call_per_firm(n: int, path: Path) -> Path:
    """The latest call of each of the first n tickers, dated 2016-11-15, as JSON Lines."""
    latest: dict[str, dict] = {}
    with gzip.open(CORPUS, "rt") as lines:
        for line in lines:
            call = json.loads(line)
            known = latest.get(call["ticker"])
            if known is None or (call["call_date"] or "") > (known["call_date"] or ""):
                latest[call["ticker"]] = call
    with gzip.open(path, "wt") as out:
        for ticker in sorted(latest)[:n]:
            call = latest[ticker]
            call["call_date"], call["fiscal_quarter"] = "2016-11-15", None
            out.write(json.dumps(call) + "\n")
    return path


def _rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
