"""Reduce benchmark: `ftm reduce` over a full quarter's sentences (5,000 firms × 400 sentences =
2,000,000) on 2 cores: wall time and peak memory (goal: under 5 minutes, under 4 GB).

The quarter is synthesised from a real one. The seed is any mapped quarter with its sentence
embeddings (`--seed-root`, by default the root `benchmarks/themes.py` keeps, else a map of
`--seed-firms` corpus firms of 2021Q3 made once in a cache folder). Each synthetic firm takes
its sentences mostly from one seed firm (`--own`, 70 %) and the rest from any seed sentence, so
that both firm-specific talk and subjects shared across firms are there; each sentence keeps its
seed's raw and cleaned text and gets the seed's embedding plus Gaussian noise of norm `--noise`
(0.3), renormalised, in float16 as the map stores it. Around them, per the data contracts: a
prefetch (chunks of 200 firms, a manifest), a plan of 1,000-firm batches, finished checkpoints,
sentence-embedding parts and firm-topic parts of 50 firms (20 topics a firm), so the command runs
exactly as on a real quarter.

`ftm reduce` runs as a child process pinned to `--cores` cores; its wall time includes Python's
start and imports, and its peak memory is the child's maximum resident set size. `--compare N`
also times other k-means for the micro-clusters on N sentences of the quarter: faiss's (ftm's),
scikit-learn's MiniBatchKMeans and KMeans.

    .venv/bin/python benchmarks/reduce.py                          # 5,000 firms × 400 sentences
    .venv/bin/python benchmarks/reduce.py --firms 1000 --json
    .venv/bin/python benchmarks/reduce.py --seed-root /tmp/ftm-bench-themes --compare 200000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ftm import layout
from ftm.cli import main as ftm_main
from ftm.map import records
from ftm.plan import make_plan, write_plan
from ftm.prefetch import read_manifest
from ftm.quarters import Quarter
from ftm.schemas import (
    SENTENCE_EMBEDDINGS,
    SENTENCES,
    Batch,
    BatchCheckpoint,
    ChunkInfo,
    PrefetchManifest,
    embedding_type,
)
from ftm.storage import Store

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/corpus.py: the test corpus
import corpus  # noqa: E402

CORPUS = corpus.PATH
QUARTER = Quarter.parse("2016Q4")  # of the synthetic quarter
SEED_QUARTER = "2021Q3"  # the corpus quarter with the most firms (ECTSum, 411 calls)
THEMES_ROOT = Path("/tmp/ftm-bench-themes")  # benchmarks/themes.py's default root
FIRMS_PER_CHUNK = 200
FIRMS_PER_BATCH = 1000
FIRMS_PER_PART = 50
TOPICS_PER_FIRM = 20
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=5000)
    parser.add_argument("--sentences-per-firm", type=int, default=400)
    parser.add_argument(
        "--own", type=float, default=0.7, help="share of a firm's sentences from its seed firm"
    )
    parser.add_argument("--noise", type=float, default=0.3, help="norm of the noise added to embeddings")
    parser.add_argument("--cores", type=int, default=2, help="cores the reduce may use")
    parser.add_argument("--seed-root", type=Path, help="a storage root with a mapped quarter")
    parser.add_argument(
        "--seed-quarter", default=SEED_QUARTER, help="a mapped quarter, or several joined: 2020Q3,2021Q3"
    )
    parser.add_argument("--seed-firms", type=int, default=120, help="corpus firms mapped for the seed")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ftm-bench-reduce-seed")
    parser.add_argument("--keep", type=Path, help="build the synthetic quarter here and keep it")
    parser.add_argument("--compare", type=int, default=0, help="also time other k-means on N sentences")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    seed_quarters = [Quarter.parse(text.strip()) for text in args.seed_quarter.split(",")]
    seed_root = args.seed_root or _default_seed(args.cache, args.seed_firms, seed_quarters[0])
    seed = _joined_seeds([_read_seed(Store(str(seed_root)), quarter) for quarter in seed_quarters])
    log(f"seed: {len(seed['firm']):,} real sentences of {seed['n_firms']} firms ({seed_root})")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ftm-bench-reduce-"))
    started = time.perf_counter()
    built = _write_quarter(Store(str(folder)), seed, args)
    log(
        f"built {args.firms:,} firms × {args.sentences_per_firm} sentences"
        f" in {time.perf_counter() - started:.0f} s"
    )
    results: dict[str, Any] = {
        "firms": args.firms,
        "sentences": args.firms * args.sentences_per_firm,
        "seed_sentences": len(seed["firm"]),
        "vocabulary": _vocabulary(seed["cleaned_text"], args.firms * args.sentences_per_firm),
        "noise": args.noise,
        **built,
        "cores": args.cores,
        "load_average_before": os.getloadavg(),
        **_run_reduce(folder, args.cores),
        "load_average_after": os.getloadavg(),
    }
    if args.compare:
        results["compare"] = _compare(Store(str(folder)), args.compare, args.cores)
    if not args.keep:
        shutil.rmtree(folder)  # 2 M sentences and their embeddings: not left behind
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the seed: a real mapped quarter ----------------------------------------------------------


def _default_seed(cache: Path, n_firms: int, quarter: Quarter) -> Path:
    """A map benchmarks/themes.py keeps (in its root's folders keyed by the map's settings), else
    a map of `n_firms` corpus firms made once in `cache`."""
    for root in sorted(THEMES_ROOT.glob("map-*")):
        if (root / layout.sentence_embeddings_folder(quarter)).is_dir():
            return root
    return _mapped_seed(cache, n_firms, quarter)


def _mapped_seed(cache: Path, n_firms: int, quarter: Quarter) -> Path:
    """A real map of the corpus's first `n_firms` firms of the quarter, made once in `cache`."""
    problem = corpus.missing(CORPUS)
    if problem:
        sys.exit(f"{problem}, or pass --seed-root with any mapped quarter")
    root = cache / f"{quarter}-{n_firms}" / "root"
    store = Store(str(root))
    checkpoint = records.read_checkpoint(store, quarter, "batch_000")
    if checkpoint is not None and checkpoint.finished and checkpoint.embedding_files:
        return root
    log(f"mapping {n_firms} corpus firms of {quarter} for the seed (once; kept in {root.parent})…")
    root.parent.mkdir(parents=True, exist_ok=True)
    config = root.parent / "ftm.toml"
    config.write_text(
        '[embedding]\ndevice = "cpu"\n[map]\nfirms_per_part = 50\n[source]\nquarter_rule = "fiscal"\n'
    )
    firms = _corpus_firms(str(quarter), n_firms)
    base = ["--config", str(config)]
    prefetch = [
        "prefetch",
        str(quarter),
        "--input",
        str(CORPUS),
        "--firms",
        ",".join(firms),
        "--root",
        str(root),
    ]
    if ftm_main([*base, *prefetch]) != 0:
        sys.exit("the seed's prefetch failed")
    plan = make_plan(store, quarter, read_manifest(store, quarter), batch_size=n_firms)
    write_plan(store, quarter, plan.batches)
    batch = ["map-batch", "--quarter", str(quarter), "--batch-id", "batch_000", "--root", str(root)]
    if ftm_main([*base, *batch]) != 0:
        sys.exit("the seed's map failed")
    return root


def _corpus_firms(quarter: str, n: int) -> list[str]:
    firms = set()
    with gzip.open(CORPUS, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("fiscal_quarter") == quarter:
                firms.add(record["ticker"])
    return sorted(firms)[:n]


def _read_seed(store: Store, quarter: Quarter) -> dict[str, Any]:
    """The seed's sentences: firm, embedding, raw and cleaned text, aligned by sentence id."""
    parts = [
        store.read_table(p, SENTENCE_EMBEDDINGS)
        for p in store.list(layout.sentence_embeddings_folder(quarter))
    ]
    if not parts:
        sys.exit(f"no sentence embeddings of {quarter} in {store.uri()}: map it with this ftm first")
    embedded = pa.concat_tables(parts)
    texts = pa.concat_tables(
        store.read_table(p, SENTENCES, columns=["sentence_id", "raw_text", "cleaned_text"])
        for p in store.list(layout.prefetch_folder(quarter))
        if p.endswith(".parquet") and "/chunk_" in p
    )
    # Arrow joins no fixed-size lists: join the ids with the row numbers, then take the embeddings.
    keys = pa.table(
        {
            "firm_id": embedded.column("firm_id"),
            "sentence_id": embedded.column("sentence_id"),
            "row": pa.array(np.arange(embedded.num_rows)),
        }
    )
    joined = keys.join(texts, "sentence_id").sort_by([("firm_id", "ascending"), ("sentence_id", "ascending")])
    firm_ids, firm = np.unique(joined.column("firm_id").to_numpy(zero_copy_only=False), return_inverse=True)
    vectors = embedded.column("embedding").combine_chunks().take(joined.column("row").combine_chunks())
    return {
        "n_firms": len(firm_ids),
        "firm": firm,
        "embeddings": vectors.flatten()
        .to_numpy(zero_copy_only=False)
        .reshape(len(firm), -1)
        .astype(np.float32),
        "raw_text": joined.column("raw_text").combine_chunks(),
        "cleaned_text": joined.column("cleaned_text").combine_chunks(),
    }


def _joined_seeds(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several mapped quarters as one seed (a firm of each quarter its own), so that the synthetic
    quarter's vocabulary is nearer a real one of its size (see `vocabulary` in the results)."""
    offsets = np.cumsum([0] + [seed["n_firms"] for seed in seeds])
    return {
        "n_firms": int(offsets[-1]),
        "firm": np.concatenate([seed["firm"] + offset for seed, offset in zip(seeds, offsets, strict=False)]),
        "embeddings": np.concatenate([seed["embeddings"] for seed in seeds]),
        "raw_text": pa.concat_arrays([seed["raw_text"] for seed in seeds]),
        "cleaned_text": pa.concat_arrays([seed["cleaned_text"] for seed in seeds]),
    }


def _vocabulary(cleaned_text: pa.Array, n_synthetic: int) -> dict[str, Any]:
    """How the synthetic quarter's vocabulary compares with a real quarter of its size: it has the
    seed's distinct words only, while a real quarter's grow with its sentences (Heaps' law, fitted
    on the seed's own growth: distinct words at an eighth, a quarter, half and all of it)."""
    import pyarrow.compute as pc

    order = np.random.default_rng(0).permutation(len(cleaned_text))
    words = pc.utf8_split_whitespace(pc.replace_substring(cleaned_text.take(pa.array(order)), "-", " "))
    sizes = [len(order) // 8, len(order) // 4, len(order) // 2, len(order)]
    distinct = [len(pc.unique(pc.list_flatten(words.slice(0, size)))) for size in sizes]
    slope, intercept = np.polyfit(np.log(sizes), np.log(distinct), 1)
    real = float(np.exp(intercept) * n_synthetic**slope)
    return {
        "seed_sentences": len(order),
        "seed_distinct_words": distinct[-1],
        "heaps_exponent": round(float(slope), 3),
        "real_quarter_distinct_words_estimate": int(real),
        "synthetic_over_real": round(distinct[-1] / real, 3),
    }


# --- the synthetic quarter ----------------------------------------------------------------------


def _firm_id(index: int) -> str:
    return f"F{index:05d}"


def _write_quarter(store: Store, seed: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n_firms, per_firm = args.firms, args.sentences_per_firm
    by_firm = [np.flatnonzero(seed["firm"] == f) for f in range(seed["n_firms"])]
    stamp = datetime.now(timezone.utc)
    dims = seed["embeddings"].shape[1]
    firm_to_chunk: dict[str, str] = {}
    chunks: list[ChunkInfo] = []
    embedding_files: dict[str, list[str]] = {}
    part_files: dict[str, list[str]] = {}
    batch_of = {f: f"batch_{f // FIRMS_PER_BATCH:03d}" for f in range(n_firms)}
    for chunk_start in range(0, n_firms, FIRMS_PER_CHUNK):
        firms = range(chunk_start, min(chunk_start + FIRMS_PER_CHUNK, n_firms))
        picks = [
            _sentences_of(rng, by_firm[f % len(by_firm)], len(seed["firm"]), per_firm, args.own)
            for f in firms
        ]
        index = np.concatenate(picks)
        ids = [_firm_id(f) for f in firms for _ in range(per_firm)]
        sentence_ids = [
            f"{firm}/{i}" for firm, i in zip(ids, np.tile(np.arange(per_firm), len(firms)), strict=True)
        ]
        name = layout.chunk_name(len(chunks))
        table = _chunk_table(ids, sentence_ids, seed, index, per_firm)
        size = store.write_table(f"{layout.prefetch_folder(QUARTER)}/{name}", table, SENTENCES)
        chunks.append(ChunkInfo(file=name, n_firms=len(firms), n_rows=len(ids), bytes=size))
        firm_to_chunk.update({_firm_id(f): name for f in firms})
        noise = rng.standard_normal((len(index), dims)).astype(np.float32)
        noise *= args.noise / np.linalg.norm(noise, axis=1, keepdims=True)
        vectors = seed["embeddings"][index] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for part_start in range(0, len(firms), FIRMS_PER_PART):
            rows = slice(part_start * per_firm, min(part_start + FIRMS_PER_PART, len(firms)) * per_firm)
            batch = batch_of[firms[part_start]]
            path = layout.sentence_embeddings_part(QUARTER, batch, len(embedding_files.setdefault(batch, [])))
            store.write_table(path, _embeddings_table(ids[rows], sentence_ids[rows], vectors[rows], dims))
            embedding_files[batch].append(path)
            path = layout.firm_topics_part(QUARTER, batch, len(part_files.setdefault(batch, [])))
            store.write_table(
                path, _topics_table(ids[rows], sentence_ids[rows], vectors[rows], per_firm, stamp)
            )
            part_files[batch].append(path)
    manifest = PrefetchManifest(
        quarter=str(QUARTER),
        n_firms=n_firms,
        n_calls=n_firms,
        n_chunks=len(chunks),
        n_sentences=n_firms * per_firm,
        firm_to_chunk=firm_to_chunk,
        chunks=chunks,
    )
    store.write_json(layout.prefetch_manifest(QUARTER), manifest.to_json())
    plan = make_plan(store, QUARTER, read_manifest(store, QUARTER), batch_size=FIRMS_PER_BATCH)
    write_plan(store, QUARTER, plan.batches)
    for batch in plan.batches:
        _finish(store, batch, part_files.get(batch.batch_id, []), embedding_files.get(batch.batch_id, []))
    return {"chunks": len(chunks), "parts": sum(len(p) for p in embedding_files.values())}


def _sentences_of(rng: np.random.Generator, own: np.ndarray, n_seed: int, n: int, share: float) -> np.ndarray:
    mine = rng.choice(own, size=int(round(n * share)), replace=len(own) < n * share)
    others = rng.integers(0, n_seed, size=n - len(mine))
    return np.concatenate([np.sort(mine), others])


def _chunk_table(
    ids: list[str], sentence_ids: list[str], seed: dict[str, Any], index: np.ndarray, per: int
) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "firm_id": ids,
            "firm_name": ids,
            "permno": pa.array([10_000 + int(f[1:]) for f in ids], pa.int64()),
            "gvkey": [f"{100_000 + int(f[1:]):06d}" for f in ids],
            "transcript_id": ids,
            "transcript_collection": pa.nulls(n, pa.string()),
            "earnings_call_date": pa.nulls(n, pa.date32()),
            "quarter": [str(QUARTER)] * n,
            "sentence_id": sentence_ids,
            "raw_text": seed["raw_text"].take(pa.array(index)),
            "cleaned_text": seed["cleaned_text"].take(pa.array(index)),
            "speaker_type": pa.nulls(n, pa.string()),
            "position": pa.array(np.tile(np.arange(per, dtype=np.int32), n // per)),
        }
    )


def _embeddings_table(ids: list[str], sentence_ids: list[str], vectors: np.ndarray, dims: int) -> pa.Table:
    embedding = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.astype(np.float16).ravel(), pa.float16()), dims
    )
    schema = pa.schema(
        [*SENTENCE_EMBEDDINGS][:2] + [pa.field("embedding", embedding_type(dims), nullable=False)]
    )
    return pa.table({"firm_id": ids, "sentence_id": sentence_ids, "embedding": embedding}, schema=schema)


def _topics_table(
    ids: list[str], sentence_ids: list[str], vectors: np.ndarray, per: int, stamp: datetime
) -> pa.Table:
    """Each firm's sentences cut into TOPICS_PER_FIRM runs, as firm topics with their centroids."""
    size = per // TOPICS_PER_FIRM
    rows = []
    for start in range(0, len(ids), size):
        members = slice(start, start + size)
        centroid = vectors[members].mean(axis=0)
        rows.append(
            {
                "firm_id": ids[start],
                "firm_name": ids[start],
                "quarter": str(QUARTER),
                "permno": None,
                "gvkey": None,
                "earnings_call_date": None,
                "topic_id": (start % per) // size,
                "representation": "synthetic",
                "keywords": ["synthetic"],
                "n_sentences": size,
                "sentence_ids": sentence_ids[members],
                "representative_sentences": [],
                "centroid": (centroid / np.linalg.norm(centroid)).tolist(),
                "processing_timestamp": stamp,
            }
        )
    from ftm.map.batch import topics_schema

    return pa.Table.from_pylist(rows, schema=topics_schema(vectors.shape[1]))


def _finish(store: Store, batch: Batch, parts: list[str], embeddings: list[str]) -> None:
    records.write_checkpoint(
        store,
        QUARTER,
        BatchCheckpoint(
            batch_id=batch.batch_id,
            attempt=1,
            completed_firm_ids=batch.firm_ids,
            part_files=parts,
            embedding_files=embeddings,
            finished=True,
            updated_at=datetime.now(timezone.utc),
        ),
    )


# --- running and comparing ----------------------------------------------------------------------


def _run_reduce(root: Path, cores: int) -> dict[str, Any]:
    """`ftm reduce` in a child process on `cores` cores: wall time, peak memory, its summary."""
    available = sorted(os.sched_getaffinity(0))
    env = {**os.environ, **{name: str(cores) for name in _THREAD_VARIABLES}}
    command = [
        sys.executable,
        "-m",
        "ftm",
        "reduce",
        "--quarter",
        str(QUARTER),
        "--root",
        str(root),
        "--json",
    ]
    log(f"running: {' '.join(command[2:])} on {min(cores, len(available))} core(s)")
    started = time.perf_counter()
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, available[:cores]),
    )  # fmt: skip
    assert child.stdout is not None
    out = child.stdout.read()
    # wait4, not communicate: the rusage of this child alone (Linux: ru_maxrss in KiB).
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"ftm reduce failed with exit code {os.waitstatus_to_exitcode(status)}")
    summary = json.loads(out)
    return {
        "wall_s": round(wall, 1),
        "reduce_s": summary["elapsed_s"],
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "themes": summary["n_themes"],
        "reporting": summary["n_reporting"],
        "theme_sentences": summary["n_theme_sentences"],
        "exposed_firms": summary["n_exposed_firms"],
        "exposure_rows": summary["n_exposure_rows"],
    }


def _compare(store: Store, n: int, cores: int) -> list[dict[str, Any]]:
    """Other k-means for the micro-clusters, on n of the quarter's centred sentence embeddings."""
    from ftm.reduce.clustering import n_cells, unit

    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    paths = store.list(layout.sentence_embeddings_folder(QUARTER))
    vectors = np.concatenate(
        [
            store.read_table(p).column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            .reshape(-1, 384).astype(np.float32)
            for p in paths[: max(1, n // 20_000 + 1)]
        ]
    )[:n]  # fmt: skip
    vectors = unit(vectors - vectors.mean(axis=0))
    k = n_cells(2_000_000, 0)  # the cells of a full quarter
    results = []

    def record(name: str, run: Any) -> None:
        log(f"compare: {name}, {k} cells on {n:,} sentences…")
        started = time.perf_counter()
        run()
        results.append({"method": name, "seconds": round(time.perf_counter() - started, 1), "cells": k})

    def faiss_kmeans() -> None:
        import faiss

        faiss.Kmeans(
            vectors.shape[1], k, niter=20, seed=42, spherical=True, max_points_per_centroid=64
        ).train(vectors)

    def minibatch() -> None:
        from sklearn.cluster import MiniBatchKMeans

        MiniBatchKMeans(k, random_state=42, n_init=1, batch_size=4096).fit(vectors)

    def full() -> None:
        from sklearn.cluster import KMeans

        KMeans(k, random_state=42, n_init=1, max_iter=20).fit(vectors[: 64 * k])

    record("faiss spherical k-means (ftm), 64 points per cell", faiss_kmeans)
    record("sklearn MiniBatchKMeans", minibatch)
    record("sklearn KMeans, 20 iterations, 64 points per cell", full)
    return results


def _print(r: dict[str, Any]) -> None:
    fast = "met" if r["wall_s"] < 300 else "MISSED"
    small = "met" if r["peak_rss_gib"] * 2**30 < 4e9 else "MISSED"
    words = r["vocabulary"]
    print(
        f"ftm reduce over {r['sentences']:,} sentences ({r['firms']:,} firms, {r['parts']} embedding "
        f"parts, {r['chunks']} prefetch chunks), synthesised from {r['seed_sentences']:,} real sentences\n"
        f"  wall time:   {r['wall_s']:7.1f} s on {r['cores']} cores (the command alone: "
        f"{r['reduce_s']:.1f} s)   goal < 300 s: {fast}\n"
        f"  peak memory: {r['peak_rss_gib']:7.2f} GiB   goal < 4 GB: {small}\n"
        f"  vocabulary: {words['seed_distinct_words']:,} distinct words (the seed's), against about "
        f"{words['real_quarter_distinct_words_estimate']:,} in a real quarter of this size (Heaps' law, "
        f"exponent {words['heaps_exponent']}): {words['synthetic_over_real']:.0%} of it\n"
        f"  {r['themes']:,} themes ({r['reporting']:,} reporting), {r['theme_sentences']:,} theme "
        f"sentences; {r['exposed_firms']:,} firms exposed, {r['exposure_rows']:,} panel rows\n"
        f"  load average before {r['load_average_before'][0]:.2f}, after {r['load_average_after'][0]:.2f}"
    )
    for row in r.get("compare", []):
        print(f"  compare: {row['method']:55s} {row['seconds']:7.1f} s")


if __name__ == "__main__":
    main()
