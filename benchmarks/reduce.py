"""Reduce benchmark: `ftm reduce` over a full quarter's worth of firm topics (5,000 firms × 20
topics = 100,000) on 2 cores: wall time and peak memory (goal: under 2 minutes, under 4 GB).

The topics are synthesised from real ones. The seed is a real map of shared-corpus firms (ftm
prefetch and map-batch on the calls of 2021Q3, made once and kept in a cache folder), or any
mapped quarter (`--seed-root`). Each synthetic topic is a seed topic's centroid plus 0.3 of
another seed topic's plus Gaussian noise of norm `--noise` (0.6 by default, which gives about
the nearest-neighbour similarities of the real topics: both are printed), with the seed's
keywords (the last three taken from the other seed topic), sentence count (scaled to about 400
sentences per firm, × 0.6 to 1.4) and representative sentences. Around them: a prefetch (one row
per sentence, about 2 M rows, text left out), a plan, finished checkpoints, part files of 50
firms, all per the data contracts, so the command runs exactly as on a real quarter.

`ftm reduce` runs as a child process pinned to `--cores` cores; its wall time includes Python's
start and imports, and its peak memory is the child's maximum resident set size.

    .venv/bin/python benchmarks/reduce.py                          # 5,000 firms × 20 topics
    .venv/bin/python benchmarks/reduce.py --firms 1000 --json
    .venv/bin/python benchmarks/reduce.py --seed-root ftm-data --seed-quarter 2016Q4
    .venv/bin/python benchmarks/reduce.py --compare 20000          # also other clusterings, timed
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
from ftm.reduce.themes import centred, cluster_topics
from ftm.schemas import FIRM_TOPICS, SENTENCES, BatchCheckpoint, ChunkInfo, PrefetchManifest, centroid_type
from ftm.settings import ReduceSettings
from ftm.storage import Store

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/corpus.py: the test corpus
import corpus  # noqa: E402

CORPUS = corpus.PATH
QUARTER = Quarter.parse("2016Q4")  # of the synthetic quarter
SEED_QUARTER = "2021Q3"  # the corpus quarter with the most firms (ECTSum, 411 calls)
FIRMS_PER_CHUNK = 200
FIRMS_PER_BATCH = 1000
FIRMS_PER_PART = 50
OUTLIER_SHARE = (0.2, 0.4)  # of a firm's sentences in no topic, as the map leaves them
SENTENCES_PER_FIRM = 400
SEED_COLUMNS = ["firm_id", "keywords", "n_sentences", "representative_sentences", "centroid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=5000)
    parser.add_argument("--topics-per-firm", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.6, help="norm of the noise added to centroids")
    parser.add_argument("--cores", type=int, default=2, help="cores the reduce may use")
    parser.add_argument("--seed-root", type=Path, help="a storage root with a mapped quarter")
    parser.add_argument("--seed-quarter", default=SEED_QUARTER)
    parser.add_argument("--seed-firms", type=int, default=120, help="corpus firms mapped for the seed")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ftm-bench-reduce-seed")
    parser.add_argument("--keep", type=Path, help="build the synthetic quarter here and keep it")
    parser.add_argument("--compare", type=int, default=0, help="also time other clusterings on N topics")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    seed_root = args.seed_root or _mapped_seed(args.cache, args.seed_firms, args.seed_quarter)
    seed = _read_seed(Store(str(seed_root)), Quarter.parse(args.seed_quarter))
    log(f"seed: {len(seed['keywords']):,} real topics of {seed['n_firms']} firms ({seed_root})")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ftm-bench-reduce-"))
    started = time.perf_counter()
    synthetic = _synthesise(seed, args.firms, args.topics_per_firm, args.noise)
    built = _write_quarter(Store(str(folder)), synthetic)
    log(
        f"built {args.firms:,} firms × {args.topics_per_firm} topics in {time.perf_counter() - started:.0f} s"
    )
    results: dict[str, Any] = {
        "firms": args.firms,
        "topics": len(synthetic["firm"]),
        "seed_topics": len(seed["keywords"]),
        "noise": args.noise,
        "nearest_similarity_median": {
            "seed": _nearest_median(seed["centroids"]),
            "synthetic": _nearest_median(synthetic["centroids"]),
        },
        **built,
        "cores": args.cores,
        **_run_reduce(folder, args.cores),
    }
    if not args.keep:
        shutil.rmtree(folder)  # 2 M prefetch rows and 100 part files: not left behind
    if args.compare:
        results["compare"] = _compare(synthetic, args.compare, args.cores)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the seed: real firm topics -----------------------------------------------------------------


def _mapped_seed(cache: Path, n_firms: int, quarter: str) -> Path:
    """A real map of the corpus's first `n_firms` firms of the quarter, made once in `cache`."""
    folder = cache / f"{quarter}-{n_firms}"
    root = folder / "root"
    store = Store(str(root))
    the_quarter = Quarter.parse(quarter)
    if store.exists(layout.batch_checkpoint(the_quarter, "batch_000")):
        checkpoint = records.read_checkpoint(store, the_quarter, "batch_000")
        if checkpoint is not None and checkpoint.finished:
            return root
    corpus.require(CORPUS)
    log(f"mapping {n_firms} corpus firms of {quarter} for the seed (once; kept in {folder})…")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "ftm.toml"
    config.write_text('[embedding]\ndevice = "cpu"\n[map]\nfirms_per_part = 50\n')
    firms = _corpus_firms(quarter, n_firms)
    base = ["--config", str(config)]
    prefetch = ["prefetch", quarter, "--input", str(CORPUS), "--firms", ",".join(firms), "--root", str(root)]
    if ftm_main([*base, *prefetch]) != 0:
        sys.exit("the seed's prefetch failed")
    plan = make_plan(store, the_quarter, read_manifest(store, the_quarter), batch_size=n_firms)
    write_plan(store, the_quarter, plan.batches)
    batch = ["map-batch", "--quarter", quarter, "--batch-id", "batch_000", "--root", str(root)]
    if ftm_main([*base, *batch]) != 0:
        sys.exit("the seed's map failed")
    return root


def _corpus_firms(quarter: str, n: int) -> list[str]:
    firms = set()
    with gzip.open(CORPUS, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            date = record.get("call_date")
            label = f"{date[:4]}Q{(int(date[5:7]) - 1) // 3 + 1}" if date else record.get("fiscal_quarter")
            if label == quarter:
                firms.add(record["ticker"])
    return sorted(firms)[:n]


def _read_seed(store: Store, quarter: Quarter) -> dict[str, Any]:
    tables = [
        store.read_table(path, FIRM_TOPICS, columns=SEED_COLUMNS)
        for path in store.list(layout.firm_topics_folder(quarter))
    ]
    if not tables:
        sys.exit(f"no firm topics of {quarter} in {store.uri()}")
    table = pa.concat_tables(tables)
    centroid = table.column("centroid").combine_chunks()
    return {
        "n_firms": len(set(table.column("firm_id").to_pylist())),
        "centroids": _unit(centroid.flatten().to_numpy().reshape(table.num_rows, -1)),
        "keywords": table.column("keywords").to_pylist(),
        "n_sentences": np.array(table.column("n_sentences").to_pylist()),
        "sentences": table.column("representative_sentences").to_pylist(),
    }


# --- the synthetic quarter ----------------------------------------------------------------------


def _synthesise(seed: dict[str, Any], n_firms: int, per_firm: int, noise: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n_seed = len(seed["keywords"])
    base = np.concatenate(
        [rng.choice(n_seed, size=per_firm, replace=per_firm > n_seed) for _ in range(n_firms)]
    )
    other = rng.integers(n_seed, size=len(base))
    centroids = np.empty((len(base), seed["centroids"].shape[1]), dtype=np.float32)
    for start in range(0, len(base), 10_000):
        part = slice(start, start + 10_000)
        shake = rng.standard_normal((len(base[part]), centroids.shape[1])).astype(np.float32)
        shake *= noise / np.linalg.norm(shake, axis=1, keepdims=True)
        centroids[part] = _unit(seed["centroids"][base[part]] + 0.3 * seed["centroids"][other[part]] + shake)
    # Sentence counts scaled so that a firm has about SENTENCES_PER_FIRM sentences, as in the quarter
    # ftm is sized for (5,000 firms × 400 sentences), whatever the seed firms' sizes.
    per_topic = SENTENCES_PER_FIRM * (1 - np.mean(OUTLIER_SHARE)) / per_firm
    scale = per_topic / seed["n_sentences"].mean()
    spread = rng.uniform(0.6, 1.4, len(base))
    counts = np.maximum(3, np.round(seed["n_sentences"][base] * scale * spread)).astype(int)
    keywords = [seed["keywords"][b][:-3] + seed["keywords"][o][:3] for b, o in zip(base, other, strict=True)]
    firm = np.repeat(np.arange(n_firms), per_firm)
    in_topics = np.bincount(firm, weights=counts)
    totals = np.ceil(in_topics / (1 - rng.uniform(*OUTLIER_SHARE, n_firms))).astype(int)
    return {
        "firm": firm,
        "topic_id": np.tile(np.arange(per_firm), n_firms),
        "centroids": centroids,
        "n_sentences": counts,
        "keywords": keywords,
        "sentences": [seed["sentences"][b] for b in base],
        "totals": totals,
        "n_firms": n_firms,
    }


def _firm_id(index: int) -> str:
    return f"F{index:05d}"


def _write_quarter(store: Store, s: dict[str, Any]) -> dict[str, Any]:
    """Prefetch chunks and manifest, plan, part files and finished checkpoints."""
    n_firms = s["n_firms"]
    firm_to_chunk: dict[str, str] = {}
    chunks = []
    for c, start in enumerate(range(0, n_firms, FIRMS_PER_CHUNK)):
        firms = range(start, min(start + FIRMS_PER_CHUNK, n_firms))
        table = _chunk_table([(_firm_id(f), int(s["totals"][f])) for f in firms])
        path = layout.prefetch_chunk(QUARTER, c)
        size = store.write_table(path, table, SENTENCES)
        name = layout.chunk_name(c)
        chunks.append(ChunkInfo(file=name, n_firms=len(firms), n_rows=table.num_rows, bytes=size))
        firm_to_chunk.update({_firm_id(f): name for f in firms})
    manifest = PrefetchManifest(
        quarter=str(QUARTER),
        source={"kind": "synthetic"},
        n_firms=n_firms,
        n_chunks=len(chunks),
        n_sentences=int(s["totals"].sum()),
        firm_to_chunk=firm_to_chunk,
        chunks=chunks,
    )
    store.write_json(layout.prefetch_manifest(QUARTER), manifest.to_json())

    schema = pa.schema(
        [
            pa.field("centroid", centroid_type(s["centroids"].shape[1])) if f.name == "centroid" else f
            for f in FIRM_TOPICS
        ]
    )
    plan = [
        (layout.batch_id(b), list(range(start, min(start + FIRMS_PER_BATCH, n_firms))))
        for b, start in enumerate(range(0, n_firms, FIRMS_PER_BATCH))
    ]
    write_plan(store, QUARTER, [_batch(batch, firms) for batch, firms in plan])
    first_topic = np.searchsorted(s["firm"], np.arange(n_firms + 1))
    stamp = datetime.now(timezone.utc)
    n_parts = 0
    for batch, firms in plan:
        parts = []
        for p, start in enumerate(range(0, len(firms), FIRMS_PER_PART)):
            rows = range(
                first_topic[firms[start]], first_topic[firms[min(start + FIRMS_PER_PART, len(firms)) - 1] + 1]
            )
            path = layout.firm_topics_part(QUARTER, batch, p)
            store.write_table(path, _part_table(s, rows, schema, stamp), schema)
            parts.append(path)
        n_parts += len(parts)
        records.write_checkpoint(
            store,
            QUARTER,
            BatchCheckpoint(
                batch_id=batch,
                attempt=1,
                completed_firm_ids=[_firm_id(f) for f in firms],
                part_files=parts,
                finished=True,
                updated_at=stamp,
            ),
        )
    return {"chunks": len(chunks), "batches": len(plan), "parts": n_parts, "sentences": manifest.n_sentences}


def _batch(batch_id: str, firms: list[int]):
    from ftm.schemas import Batch

    return Batch(batch_id=batch_id, firm_ids=[_firm_id(f) for f in firms])


def _chunk_table(firms: list[tuple[str, int]]) -> pa.Table:
    ids = [firm for firm, n in firms for _ in range(n)]
    positions = np.concatenate([np.arange(n, dtype=np.int32) for _, n in firms])
    n_rows = len(ids)
    return pa.table(
        {
            "firm_id": ids,
            "firm_name": ids,
            "permno": pa.nulls(n_rows, pa.int64()),
            "gvkey": pa.nulls(n_rows, pa.string()),
            "transcript_id": ids,
            "transcript_collection": pa.nulls(n_rows, pa.string()),
            "earnings_call_date": pa.nulls(n_rows, pa.date32()),
            "quarter": [str(QUARTER)] * n_rows,
            "sentence_id": [f"{firm}-{p}" for firm, p in zip(ids, positions.tolist(), strict=True)],
            "raw_text": ["."] * n_rows,  # reduce reads firm_id alone; the text is left out
            "cleaned_text": [""] * n_rows,
            "speaker_type": pa.nulls(n_rows, pa.string()),
            "position": positions,
        }
    )


def _part_table(s: dict[str, Any], rows: range, schema: pa.Schema, stamp: datetime) -> pa.Table:
    index = np.arange(rows.start, rows.stop)
    firms = [_firm_id(f) for f in s["firm"][index]]
    n = len(index)
    centroids = s["centroids"][index]
    # Firms get a PERMNO and a GVKEY of their own, as linked WRDS firms do.
    return pa.table(
        {
            "firm_id": firms,
            "firm_name": firms,
            "quarter": [str(QUARTER)] * n,
            "permno": (10_000 + s["firm"][index]).astype(np.int64),
            "gvkey": [f"{100_000 + f:06d}" for f in s["firm"][index]],
            "earnings_call_date": pa.nulls(n, pa.date32()),
            "topic_id": s["topic_id"][index].astype(np.int32),
            "representation": ["_".join(s["keywords"][i][:4]) for i in index],
            "keywords": [s["keywords"][i] for i in index],
            "n_sentences": s["n_sentences"][index].astype(np.int32),
            "sentence_ids": [
                [f"{firms[j]}-t{k}" for k in range(s["n_sentences"][i])] for j, i in enumerate(index)
            ],
            "representative_sentences": [s["sentences"][i] for i in index],
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.ravel()), centroids.shape[1]),
            "processing_timestamp": pa.array([stamp] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=schema,
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
        command,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, available[:cores]),
    )
    assert child.stdout is not None
    out = child.stdout.read()
    # wait4, not communicate: the rusage of this child alone (Linux: ru_maxrss in KiB), not of
    # every child so far (the seed's prefetch workers).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"ftm reduce failed with exit code {child.returncode}")
    peak_kib = usage.ru_maxrss
    summary = json.loads(out)
    return {
        "wall_s": round(wall, 1),
        "reduce_s": summary["elapsed_s"],
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "themes": summary["n_themes"],
        "theme_topics": summary["n_theme_topics"],
        "exposed_firms": summary["n_exposed_firms"],
        "exposure_rows": summary["n_exposure_rows"],
    }


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _compare(s: dict[str, Any], n: int, cores: int) -> list[dict[str, Any]]:
    """Other clusterings of the first n topics, timed in this process (pinned to `cores`)."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    vectors = s["centroids"][:n]
    firms = s["firm"][:n]
    config = ReduceSettings()
    threshold = config.min_similarity
    results = []

    def record(name: str, run: Any) -> None:
        log(f"compare: {name} on {n:,} topics…")
        started = time.perf_counter()
        labels = np.asarray(run())
        seconds = time.perf_counter() - started
        themes = [
            label
            for label in set(labels.tolist()) - {-1}
            if len(set(firms[labels == label].tolist())) >= config.min_firms
        ]
        in_themes = np.isin(labels, themes).mean()
        results.append(
            {
                "method": name,
                "seconds": round(seconds, 1),
                "themes": len(themes),
                "in_themes": round(in_themes, 3),
            }
        )

    record(
        "ftm: kNN graph + average linkage",
        lambda: cluster_topics(
            vectors,
            min_similarity=threshold,
            n_neighbors=config.n_neighbors,
            random_state=config.random_state,
        ),
    )

    def agglomerative() -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.neighbors import kneighbors_graph

        z = centred(vectors)
        graph = kneighbors_graph(z, config.n_neighbors, metric="cosine", include_self=False)
        model = AgglomerativeClustering(
            n_clusters=None,
            distance_threshold=1 - threshold,
            metric="cosine",
            linkage="average",
            connectivity=graph,
        )
        return model.fit(z).labels_

    def umap_hdbscan() -> np.ndarray:
        from hdbscan import HDBSCAN
        from umap import UMAP

        embedded = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=42)
        return (
            HDBSCAN(min_cluster_size=config.min_firms).fit(embedded.fit_transform(centred(vectors))).labels_
        )

    def pca_hdbscan() -> np.ndarray:
        from hdbscan import HDBSCAN
        from sklearn.decomposition import PCA

        reduced = PCA(10, random_state=42).fit_transform(centred(vectors))
        return HDBSCAN(min_cluster_size=config.min_firms).fit(reduced).labels_

    record("sklearn AgglomerativeClustering, average, kNN connectivity", agglomerative)
    record("UMAP (5-d, seeded) + HDBSCAN", umap_hdbscan)
    record("PCA (10-d) + HDBSCAN", pca_hdbscan)
    return results


def _nearest_median(centroids: np.ndarray, sample: int = 1000) -> float:
    """Median over a sample of topics of the cosine to their nearest other topic, centred."""
    vectors = centred(centroids)
    rows = np.random.default_rng(0).choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    similarity = vectors[rows] @ vectors.T
    similarity[np.arange(len(rows)), rows] = -np.inf
    return round(float(np.median(similarity.max(axis=1))), 3)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _print(r: dict[str, Any]) -> None:
    near = r["nearest_similarity_median"]
    print(
        f"ftm reduce over {r['topics']:,} firm topics ({r['firms']:,} firms, {r['parts']} part files, "
        f"{r['sentences']:,} prefetched sentences), synthesised from {r['seed_topics']:,} real topics\n"
        f"  median cosine to the nearest topic (centred): seed {near['seed']}, "
        f"synthetic {near['synthetic']}\n"
        f"  wall time:   {r['wall_s']:7.1f} s on {r['cores']} cores "
        f"(the command alone: {r['reduce_s']:.1f} s)   "
        f"goal < 120 s: {'met' if r['wall_s'] < 120 else 'MISSED'}\n"
        f"  peak memory: {r['peak_rss_gib']:7.2f} GiB   goal < 4 GB: "
        f"{'met' if r['peak_rss_gib'] * 2**30 < 4e9 else 'MISSED'}\n"
        f"  {r['themes']:,} themes holding {r['theme_topics']:,} topics; "
        f"{r['exposed_firms']:,} firms exposed, {r['exposure_rows']:,} panel rows"
    )
    for row in r.get("compare", []):
        print(
            f"  compare: {row['method']:60s} {row['seconds']:7.1f} s  {row['themes']:,} themes, "
            f"{row['in_themes']:.0%} of topics in them"
        )


if __name__ == "__main__":
    main()
