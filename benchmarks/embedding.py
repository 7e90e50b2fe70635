"""Benchmark: the map's embedding alone, per backend, precision and batch size, on one thread (as
a map worker runs it), over real call sentences. Run on demand (never by pytest):

    .venv/bin/python benchmarks/embedding.py [--firms 12] [--configs torch:fp32:256,onnx:int8:16]
    .venv/bin/python benchmarks/embedding.py --firms 1 --calls 1 --configs torch:fp32:16  # smoke test

For each configuration: sentences/s with per-firm batches (what the map does: a batch never mixes
firms, so a firm's embeddings are the same bits whatever firms share its group) and with one
length-sorted stream over the whole group (all firms' sentences as one), and the cosine of each
sentence's embedding to torch fp32 with per-firm batches (mean, 1st percentile, minimum).

Firms and sentences as in map.py: `--firms` tickers spread over the corpus (each with all of its
calls, or its first `--calls`: for the smoke test, tests/test_benchmarks.py), split and cleaned by
ftm's preprocessing; the embedding gets `raw_text`. Each configuration embeds once untimed first
(model load, export cache, first-call allocation), then is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import map as map_benchmark  # noqa: E402  (benchmarks/map.py: the same firms and preprocessing)

from ftm.map.cpu import REPORTED_FLAGS, cpu_flags, cpu_model  # noqa: E402
from ftm.settings import EmbeddingSettings  # noqa: E402

DEFAULT_CONFIGS = (
    "torch:fp32:256,torch:fp32:16,torch:bf16:256,torch:bf16:16,"
    "onnx:fp32:16,onnx:int8:256,onnx:int8:32,onnx:int8:16,onnx:int8:8"
)


def measure(firms: list[list[str]], backend: str, precision: str, batch_size: int) -> dict[str, Any]:
    from ftm.map.embedding import Embedder

    embedder = Embedder(
        EmbeddingSettings(backend=backend, precision=precision, batch_size=batch_size, cpu_threads=1)
    )
    embedder.encode(firms[0][:64])  # untimed: first-call allocations
    n = sum(len(f) for f in firms)
    started = time.perf_counter()
    vectors = embedder.encode_firms(firms)
    per_firm_s = time.perf_counter() - started
    started = time.perf_counter()
    embedder.encode([s for firm in firms for s in firm])
    stream_s = time.perf_counter() - started
    return {
        "backend": embedder.backend,
        "precision": embedder.precision,
        "batch_size": batch_size,
        "per_firm_sentences_per_s": n / per_firm_s,
        "stream_sentences_per_s": n / stream_s,
        "vectors": np.concatenate(vectors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=map_benchmark.DEFAULT_CORPUS)
    parser.add_argument("--firms", type=int, default=12, help="tickers, spread over the corpus")
    parser.add_argument("--calls", type=int, help="at most this many calls a firm (default: all)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="backend:precision:batch_size,...")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    map_benchmark.corpus.require(args.corpus)
    os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})

    load_start = os.getloadavg()[0]
    calls = map_benchmark.read_firms(args.corpus, args.firms, args.calls)
    firms = [raw for _, _, raw, _ in map_benchmark.preprocess(calls, len(os.sched_getaffinity(0)))]
    n = sum(len(f) for f in firms)
    flags = cpu_flags()
    results = []
    reference = None
    for config in args.configs.split(","):
        backend, precision, size = config.split(":")
        if precision == "bf16" and not ({"avx512_bf16", "amx_bf16"} & flags):
            continue  # torch would emulate bf16, slower than fp32: not a configuration anyone runs
        result = measure(firms, backend, precision, int(size))
        print(f"{config}: {result['per_firm_sentences_per_s']:.0f} sentences/s", file=sys.stderr)
        if reference is None and (backend, precision) == ("torch", "fp32"):
            reference = result["vectors"]
        results.append(result)
    for result in results:
        vectors = result.pop("vectors")
        if reference is not None:
            cosine = np.sum(vectors * reference, axis=1)
            result |= {
                "cosine_mean": float(cosine.mean()),
                "cosine_p1": float(np.percentile(cosine, 1)),
                "cosine_min": float(cosine.min()),
            }
    report = {
        "cpu": cpu_model(),
        "cpu_flags": [f for f in REPORTED_FLAGS if f in flags],
        "firms": len(firms),
        "sentences": n,
        "load_avg_1m_at_start": load_start,
        "load_avg_1m_at_end": os.getloadavg()[0],
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    flags = ", ".join(report["cpu_flags"])
    print(f"{report['cpu']} ({flags}); {len(firms)} firms, {n:,} sentences, 1 thread")
    header = f"{'per-firm /s':>12}{'stream /s':>12}{'cos mean':>10}{'p1':>8}{'min':>8}"
    print(f"{'backend precision batch':<26}{header}")
    for r in results:
        name = f"{r['backend']} {r['precision']} {r['batch_size']}"
        cells = f"{r['per_firm_sentences_per_s']:>12.0f}{r['stream_sentences_per_s']:>12.0f}"
        if "cosine_mean" in r:
            cells += f"{r['cosine_mean']:>10.4f}{r['cosine_p1']:>8.4f}{r['cosine_min']:>8.4f}"
        print(f"{name:<26}{cells}")
    print(
        f"1-minute load average: {report['load_avg_1m_at_start']:.2f} at the start, "
        f"{report['load_avg_1m_at_end']:.2f} at the end"
    )


if __name__ == "__main__":
    main()
