"""Benchmark: ftm's map (Embedder + FirmProcessor) against plain BERTopic per firm, on the same
firms of the shared corpus, on the same CPU cores, in one run, per embedding precision. Run on
demand (never by pytest), on an idle machine:

    .venv/bin/python benchmarks/map.py [--firms 40] [--workers 2] [--precisions fp32,int8] [--json]

Firms: `--firms` tickers spread evenly over the corpus's sorted tickers, each with all of its
calls (or its first `--calls`, an option for the smoke test, tests/test_benchmarks.py). Both
sides get the same sentences: ftm's own preprocessing (spaCy, as `ftm prefetch` does) makes
`raw_text` and `cleaned_text` once, before either clock starts.

Each precision of `--precisions` runs both sides, so that each comparison is at equal precision
(default fp32 and int8, and bf16 where the CPU has it natively); fp32 plain is the baseline as
researchers run it. ftm's backend per precision: torch for fp32 and bf16, onnx for int8.

Plain, as researchers run it: one process looping over the firms, one
`BERTopic(embedding_model=<the local MiniLM folder>).fit_transform(raw sentences)` per firm, which
loads the model and embeds the firm's sentences itself, with BERTopic's default UMAP, HDBSCAN and
vectorizer; torch uses every core for the embedding, as it does by default. In bf16 and int8 the
embedding model is the same weights in that precision (see `plain_embedding_model`).

ftm: `--workers` processes (default: one per core), each with one torch (or onnxruntime) thread,
each embedding all of its share of the firms in one `Embedder.encode_firms` call (default batch
size) and then running `FirmProcessor` per firm. Several single-threaded workers rather than one
process on all cores, because that measured twice the embedding throughput on 2 cores (small
matrix products scale poorly across threads); it is also how the local backend runs batches.

Both wall times run from starting the worker processes to the last firm, imports and model
loading included; the int8 ONNX export is made once before the clocks (a cached file in normal
use). Quality is compared on the same footing: plain's topics get their keywords recomputed from
the cleaned sentences (`update_topics`, outside its clock), as ftm's come from cleaned text. Per
firm: NPMI of each topic's top-10 keywords (words, and for ftm two-word phrases), by document
co-occurrence over the firm's own cleaned sentences (a pair that never co-occurs counts −1),
averaged over pairs, then topics, then firms; topic diversity = unique / total top-10 keywords
over the firm's topics; outlier share; topics per firm. Firms that a side skips or fails on are
counted and left out of quality. Embeddings: each ftm side's cosine to ftm fp32's, per sentence.

The machine: CPU model and the flags that matter (AVX2, AVX-512, VNNI, bf16, AMX), and the
1-minute load average at the start and the end. Above `--max-load` (0.75 per core, 1.5 on 2) the
run waits up to `--wait` seconds, then refuses unless `--force`, and the report warns. The load
at the end includes the benchmark's own last minute, so the report also gives the CPU time that
other processes took during the run (/proc/stat less the benchmark's own), and warns above 5 %.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import json
import math
import multiprocessing
import os
import resource
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ftm.prefetch.sources import Component
from ftm.prefetch.text import Preprocessor
from ftm.settings import EmbeddingSettings, PreprocessSettings, TopicsSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/corpus.py: the test corpus
import corpus  # noqa: E402

DEFAULT_CORPUS = corpus.PATH

# One firm: (ticker, company name, raw sentences, cleaned sentences).
Firm = tuple[str, str, list[str], list[str]]


# --- input ------------------------------------------------------------------------------------


def read_firms(
    path: Path, n_firms: int, max_calls: int | None = None
) -> dict[str, tuple[str, list[list[Component]]]]:
    """`n_firms` tickers spread evenly over the sorted tickers, each with all of its calls (its
    first `max_calls` in the file when given)."""
    calls: dict[str, tuple[str, list[list[Component]]]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            name, found = calls.setdefault(record["ticker"], (record["company_name"], []))
            if max_calls is not None and len(found) >= max_calls:
                continue
            # ECTSum holds prepared remarks only; neither source has operator turns.
            speaker = "presenter" if record["source"] == "ECTSum" else "unknown"
            found.append([Component(c["order"], speaker, c["text"]) for c in record["components"]])
    tickers = sorted(calls)
    step = len(tickers) / n_firms
    chosen = [tickers[int(i * step)] for i in range(min(n_firms, len(tickers)))]
    return {ticker: calls[ticker] for ticker in chosen}


def preprocess(calls: dict[str, tuple[str, list[list[Component]]]], workers: int) -> list[Firm]:
    keyed = [
        ((ticker, i), components) for ticker, (_, firm) in calls.items() for i, components in enumerate(firm)
    ]
    raw: dict[str, list[str]] = defaultdict(list)
    cleaned: dict[str, list[str]] = defaultdict(list)
    # No more spaCy processes than calls: one call runs in this process, with no pool to start.
    preprocessor = Preprocessor(PreprocessSettings(workers=max(1, min(workers, len(keyed)))))
    try:
        for (ticker, _), text in preprocessor.process(keyed):
            for sentence in text.sentences:
                raw[ticker].append(sentence.raw_text)
                cleaned[ticker].append(sentence.cleaned_text)
    finally:
        preprocessor.close()
    return [(ticker, calls[ticker][0], raw[ticker], cleaned[ticker]) for ticker in calls]


# --- the two sides, each in worker processes --------------------------------------------------


@functools.cache
def plain_embedding_model(model: str, precision: str) -> Any:
    """What plain BERTopic embeds with in `precision`. fp32: the model's path, which
    `BERTopic(embedding_model=path)` loads anew for each firm and embeds with sentence-transformers'
    own `encode`, as researchers run it. bf16: the same model in bf16, as
    `model_kwargs={"torch_dtype": torch.bfloat16}` gives it; int8: the same int8 ONNX file as ftm's,
    run by onnxruntime on every core in length-sorted batches of 32 (as `encode` batches), because
    sentence-transformers' own ONNX backend cannot be installed beside transformers 5. These two
    are loaded once per run, not per firm, which favours plain."""
    if precision == "fp32":
        return model
    if precision == "bf16":
        import torch
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    from bertopic.backend import BaseEmbedder

    from ftm.map.embedding import Embedder

    class Int8(BaseEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.embedder = Embedder(EmbeddingSettings(backend="onnx", precision="int8", batch_size=32))

        def embed(self, documents: list[str], verbose: bool = False) -> np.ndarray:
            return self.embedder.encode(list(documents))

    return Int8()


def plain_worker(firms: list[Firm], model: str, precision: str) -> dict[str, Any]:
    """Plain BERTopic per firm. Returns per firm (labels, top-10 words) or an error."""
    warnings.filterwarnings("ignore")
    from bertopic import BERTopic

    results: dict[str, Any] = {}
    quality_s = 0.0
    for ticker, _, raw, cleaned in firms:
        try:
            topic_model = BERTopic(embedding_model=plain_embedding_model(model, precision))
            topics, _ = topic_model.fit_transform(raw)
        except Exception as error:  # plain BERTopic's known small-input failures
            results[ticker] = {"error": f"{type(error).__name__}: {error}"}
            continue
        started = time.perf_counter()  # keywords on ftm's footing, off the clock
        topic_model.update_topics(cleaned, top_n_words=10)
        words = {t: [w for w, _ in topic_model.get_topic(t) if w][:10] for t in set(topics) - {-1}}
        results[ticker] = {"labels": list(topics), "words": [words[t] for t in sorted(words)]}
        quality_s += time.perf_counter() - started
    return {"results": results, "off_clock_s": quality_s, **_usage()}


def ftm_worker(firms: list[Firm], topics: dict[str, Any], embedding: dict[str, Any]) -> dict[str, Any]:
    """ftm: one Embedder call over all of this worker's firms, then FirmProcessor per firm."""
    from ftm.map.embedding import Embedder
    from ftm.map.firm_topics import FirmInput, FirmProcessor

    started = time.perf_counter()
    embedder = Embedder(EmbeddingSettings(cpu_threads=1, **embedding))
    processor = FirmProcessor(TopicsSettings(**topics))
    ready = time.perf_counter()
    vectors = embedder.encode_firms([raw for _, _, raw, _ in firms])
    embedded = time.perf_counter()
    results: dict[str, Any] = {}
    offset = 0
    for (ticker, name, raw, cleaned), firm_vectors in zip(firms, vectors, strict=True):
        ids = [f"{ticker}:{i}" for i in range(len(raw))]
        firm = FirmInput(ticker, name, "all", None, None, None, ids, raw, cleaned)
        outcome = processor.process(firm, firm_vectors)
        offset += len(raw)
        labels = [-1] * len(raw)
        for row in outcome.rows:
            for sid in row["sentence_ids"]:
                labels[int(sid.rsplit(":", 1)[1])] = row["topic_id"]
        results[ticker] = {
            "status": outcome.status,
            "labels": labels,
            "words": [row["keywords"][:10] for row in outcome.rows],
        }
    done = time.perf_counter()
    return {
        "results": results,
        "load_s": ready - started,
        "embed_s": embedded - ready,
        "cluster_s": done - embedded,
        "sentences": offset,
        "backend": embedder.backend,
        "precision": embedder.precision,
        "batch_size": embedder.batch_size,
        "vectors": dict(zip([f[0] for f in firms], vectors, strict=True)),
        **_usage(),
    }


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": _peak_rss_mb(usage), "cpu_s": usage.ru_utime + usage.ru_stime}


def _peak_rss_mb(usage: resource.struct_rusage) -> float:
    """This process's own peak: ru_maxrss survives exec on Linux, so a spawned worker would report
    the parent's peak (the preprocessing's, with spaCy loaded) when that is higher; VmHWM is not."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return usage.ru_maxrss / 1024


def run_plain(firms: list[Firm], model: str, precision: str) -> tuple[float, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with context.Pool(1) as pool:
        report = pool.apply(plain_worker, (firms, model, precision))
    return time.perf_counter() - started - report["off_clock_s"], report


def run_ftm(
    firms: list[Firm], workers: int, topics: dict[str, Any], embedding: dict[str, Any]
) -> tuple[float, list[dict[str, Any]]]:
    shares: list[list[Firm]] = [[] for _ in range(workers)]
    sizes = [0] * workers
    for firm in sorted(firms, key=lambda f: -len(f[2])):  # largest first, to the lightest share
        lightest = sizes.index(min(sizes))
        shares[lightest].append(firm)
        sizes[lightest] += len(firm[2])
    context = multiprocessing.get_context("spawn")
    with one_thread(), context.Pool(workers) as pool:
        started = time.perf_counter()
        reports = pool.starmap(ftm_worker, [(share, topics, embedding) for share in shares if share])
        return time.perf_counter() - started, reports


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One BLAS/OpenMP/numba thread in the worker processes started inside (they inherit it)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- quality ----------------------------------------------------------------------------------


def npmi(words: list[str], documents: list[set[str]]) -> float:
    """Mean NPMI over the word pairs, by document co-occurrence; a pair never seen together is −1."""
    n = len(documents)
    holding = {w: {i for i, doc in enumerate(documents) if w in doc} for w in words}
    values = []
    for a, b in combinations(words, 2):
        both = len(holding[a] & holding[b])
        if both == 0:
            values.append(-1.0)
            continue
        p_ab, p_a, p_b = both / n, len(holding[a]) / n, len(holding[b]) / n
        values.append(1.0 if p_ab == 1 else math.log(p_ab / (p_a * p_b)) / -math.log(p_ab))
    return float(np.mean(values)) if values else float("nan")


def terms(text: str) -> list[str]:
    """A cleaned sentence's words and two-word phrases, as the keyword vectorizers see them (ftm's
    keywords hold phrases; plain's `update_topics` words are among these too): a phrase counts as
    in a sentence where it occurs, rather than never (which would score every phrase pair −1)."""
    return _ANALYZER(text)


def _analyzer() -> Any:
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(ngram_range=(1, 2)).build_analyzer()


_ANALYZER = _analyzer()


def quality(firms: list[Firm], results: dict[str, Any]) -> dict[str, Any]:
    npmis, diversities, outliers, counts = [], [], [], []
    failed = skipped = 0
    for ticker, _, _, cleaned in firms:
        result = results[ticker]
        if "error" in result:
            failed += 1
            continue
        if result.get("status") == "skipped":
            skipped += 1
            continue
        documents = [set(terms(text)) for text in cleaned]
        topic_words = [w for w in result["words"] if w]
        firm_npmi = [npmi(words, documents) for words in topic_words if len(words) >= 2]
        if firm_npmi:
            npmis.append(float(np.mean(firm_npmi)))
        all_words = [w for words in topic_words for w in words]
        if all_words:
            diversities.append(len(set(all_words)) / len(all_words))
        outliers.append(float(np.mean(np.asarray(result["labels"]) == -1)))
        counts.append(len(topic_words))
    return {
        "npmi": float(np.mean(npmis)) if npmis else float("nan"),
        "diversity": float(np.mean(diversities)) if diversities else float("nan"),
        "outlier_share": float(np.mean(outliers)) if outliers else float("nan"),
        "topics_per_firm": float(np.mean(counts)) if counts else float("nan"),
        "firms_with_topics": sum(1 for c in counts if c),
        "skipped": skipped,
        "failed": failed,
    }


# --- machine -----------------------------------------------------------------------------------


# ftm's embedding per precision: the backend that has it (fp32 and bf16 torch, int8 onnx).
BACKENDS = {"fp32": "torch", "bf16": "torch", "int8": "onnx"}


def machine() -> dict[str, Any]:
    from ftm.map.cpu import REPORTED_FLAGS, cpu_flags, cpu_model, int8_target
    from ftm.map.embedding import _cpu_has_bf16

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_flags": [f for f in REPORTED_FLAGS if f in flags],
        "native_bf16": _cpu_has_bf16(),
        "int8_kernels": int8_target(),
        "cpu_cores": len(os.sched_getaffinity(0)),
    }


def wait_for_idle(limit: float, wait_s: float, force: bool) -> float:
    """The 1-minute load average once it is at or below `limit`, waiting up to `wait_s`; above it
    after that, the run is refused, or with `force` goes on with a loud warning."""
    deadline = time.monotonic() + wait_s
    while (load := os.getloadavg()[0]) > limit and time.monotonic() < deadline:
        print(f"load average {load:.2f} > {limit:.2f}: waiting for an idle machine ...", file=sys.stderr)
        time.sleep(15)
    if load > limit:
        if not force:
            raise SystemExit(
                f"load average {load:.2f} is above {limit:.2f}: the timings would measure the other jobs. "
                "Run on an idle machine, or pass --force to run anyway (the report says so)"
            )
        print(
            f"WARNING: load average {load:.2f} above {limit:.2f}; timings are not of an idle machine",
            file=sys.stderr,
        )
    return load


def busy_cpu_s() -> float:
    """CPU seconds every process on the machine has run since boot (user, nice, system, interrupts;
    a VM's steal is not ours), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cosines(vectors: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Each sentence's cosine to the reference side's embedding of it: mean, 1st percentile, minimum."""
    cosine = np.concatenate([np.sum(vectors[t] * reference[t], axis=1) for t in reference])
    return {
        "cosine_to_fp32_mean": float(cosine.mean()),
        "cosine_to_fp32_p1": float(np.percentile(cosine, 1)),
        "cosine_to_fp32_min": float(cosine.min()),
    }


# --- report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--firms", type=int, default=40, help="tickers, spread over the corpus")
    parser.add_argument("--calls", type=int, help="at most this many calls a firm (default: all)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="ftm processes")
    parser.add_argument("--epochs", type=int, default=None, help="override topics.umap_n_epochs")
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma-separated; each runs plain and ftm (default: fp32,int8, and bf16 where native)",
    )
    parser.add_argument("--skip-plain", action="store_true", help="run ftm only")
    parser.add_argument("--max-load", type=float, default=None, help="default: 0.75 per core (1.5 on 2)")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for the load to fall")
    parser.add_argument("--force", action="store_true", help="run above --max-load, warning")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    corpus.require(args.corpus)

    from ftm.map.embedding import Embedder, resolve_model

    model = resolve_model(EmbeddingSettings().model)
    topics: dict[str, Any] = {} if args.epochs is None else {"umap_n_epochs": args.epochs}
    hardware = machine()
    cores = hardware["cpu_cores"]
    precisions = (args.precisions or ("fp32,int8,bf16" if hardware["native_bf16"] else "fp32,int8")).split(
        ","
    )
    limit = 0.75 * cores if args.max_load is None else args.max_load

    started = time.perf_counter()
    firms = preprocess(read_firms(args.corpus, args.firms, args.calls), cores)
    prep_s = time.perf_counter() - started
    n_sentences = sum(len(f[2]) for f in firms)
    print(f"{len(firms)} firms, {n_sentences:,} sentences, preprocessed in {prep_s:.0f} s", file=sys.stderr)
    if "int8" in precisions:  # the ONNX export, once, off the clocks (a cached file in normal use)
        Embedder(EmbeddingSettings(backend="onnx", precision="int8"))
    load_start = wait_for_idle(limit, args.wait, args.force)
    # The load average at the end counts the benchmark's own last minute (plain uses every core),
    # so whether anything else ran is judged from the CPU time the machine spent beyond its own.
    busy_start, own_start, clock_start = busy_cpu_s(), own_cpu_s(), time.perf_counter()

    report: dict[str, Any] = {
        "firms": len(firms),
        "sentences": n_sentences,
        **hardware,
        "load_avg_1m_at_start": load_start,
        "load_avg_1m_at_end": None,
        "max_load": limit,
        "sides": {},
    }
    sides: dict[str, Any] = report["sides"]
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for precision in precisions:
        name = f"ftm {precision}"
        print(f"{name} ...", file=sys.stderr)
        embedding = {"backend": BACKENDS[precision], "precision": precision}
        ftm_s, ftm_reports = run_ftm(firms, args.workers, topics, embedding)
        vectors[name] = {k: v for r in ftm_reports for k, v in r.pop("vectors").items()}
        ftm_results = {k: v for r in ftm_reports for k, v in r["results"].items()}
        sides[name] = {
            "workers": args.workers,
            "backend": ftm_reports[0]["backend"],
            "precision": ftm_reports[0]["precision"],
            "batch_size": ftm_reports[0]["batch_size"],
            "wall_s": ftm_s,
            "firms_per_min": 60 * len(firms) / ftm_s,
            "cpu_s": sum(r["cpu_s"] for r in ftm_reports),
            "peak_worker_rss_mb": max(r["peak_rss_mb"] for r in ftm_reports),
            "embed_sentences_per_s": sum(r["sentences"] / r["embed_s"] for r in ftm_reports),
            "load_s": max(r["load_s"] for r in ftm_reports),
            "embed_s": max(r["embed_s"] for r in ftm_reports),
            "cluster_s": max(r["cluster_s"] for r in ftm_reports),
            "umap_n_epochs": TopicsSettings(**topics).umap_n_epochs,
            **quality(firms, ftm_results),
        }
        if args.skip_plain:
            continue
        name = f"plain {precision}"
        print(f"{name} ...", file=sys.stderr)
        plain_s, plain_report = run_plain(firms, model, precision)
        sides[name] = {
            "workers": 1,
            "backend": BACKENDS[precision],
            "precision": precision,
            "batch_size": 32,
            "wall_s": plain_s,
            "firms_per_min": 60 * len(firms) / plain_s,
            "cpu_s": plain_report["cpu_s"] - plain_report["off_clock_s"],
            "peak_worker_rss_mb": plain_report["peak_rss_mb"],
            **quality(firms, plain_report["results"]),
        }
    if "ftm fp32" in vectors:
        for name, found in vectors.items():
            sides[name] |= cosines(found, vectors["ftm fp32"])
    ratios = report["ratios"] = {}
    for precision in precisions:
        ftm = sides[f"ftm {precision}"]
        for baseline in dict.fromkeys(["fp32", precision]):
            plain = sides.get(f"plain {baseline}")
            if plain:
                ratios[f"ftm {precision} / plain {baseline}"] = {
                    "firms_per_min": ftm["firms_per_min"] / plain["firms_per_min"],
                    "cpu_s": plain["cpu_s"] / ftm["cpu_s"],
                    "npmi_difference": ftm["npmi"] - plain["npmi"],
                    "diversity_difference": ftm["diversity"] - plain["diversity"],
                }
    report["load_avg_1m_at_end"] = os.getloadavg()[0]
    others = (busy_cpu_s() - busy_start) - (own_cpu_s() - own_start)
    report["other_processes_cpu_s"] = max(0.0, others)
    report["other_processes_cpu_share"] = max(0.0, others) / ((time.perf_counter() - clock_start) * cores)
    # 5 % of the cores: what the system's own daemons and unreaped helper processes may take.
    report["idle"] = load_start <= limit and report["other_processes_cpu_share"] <= 0.05

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    sides = report["sides"]
    flags = ", ".join(report["cpu_flags"]) or "none of AVX2, AVX-512, VNNI, bf16, AMX"
    print(f"{report['cpu']}: {report['cpu_cores']} cores; {flags}; int8 kernels {report['int8_kernels']}")
    print(f"{report['firms']} firms, {report['sentences']:,} sentences")
    print(f"{'':<26}" + "".join(f"{name:>14}" for name in sides))
    lines = [
        ("backend", "backend", "{}"),
        ("precision", "precision", "{}"),
        ("processes", "workers", "{}"),
        ("batch size", "batch_size", "{}"),
        ("wall s", "wall_s", "{:.1f}"),
        ("firms/min", "firms_per_min", "{:.2f}"),
        ("CPU s (all processes)", "cpu_s", "{:.1f}"),
        ("embedding sentences/s", "embed_sentences_per_s", "{:.0f}"),
        ("cosine to ftm fp32 mean", "cosine_to_fp32_mean", "{:.4f}"),
        ("cosine 1st percentile", "cosine_to_fp32_p1", "{:.4f}"),
        ("cosine minimum", "cosine_to_fp32_min", "{:.4f}"),
        ("mean NPMI (top 10)", "npmi", "{:.4f}"),
        ("topic diversity", "diversity", "{:.3f}"),
        ("outlier share", "outlier_share", "{:.3f}"),
        ("topics per firm", "topics_per_firm", "{:.1f}"),
        ("firms skipped / failed", None, ""),
        ("peak RSS of a worker MB", "peak_worker_rss_mb", "{:.0f}"),
    ]
    for label, key, form in lines:
        if key is None:
            cells = [f"{side['skipped']} / {side['failed']}" for side in sides.values()]
        else:
            cells = [form.format(side[key]) if key in side else "" for side in sides.values()]
        print(f"{label:<26}" + "".join(f"{cell:>14}" for cell in cells))
    for name, ratio in report["ratios"].items():
        print(
            f"{name}: {ratio['firms_per_min']:.2f}x firms/min, {ratio['cpu_s']:.2f}x less CPU time, "
            f"NPMI {ratio['npmi_difference']:+.4f}, diversity {ratio['diversity_difference']:+.3f}"
        )
    for name, side in sides.items():
        if name.startswith("ftm"):
            print(
                f"{name}: slowest worker {side['load_s']:.0f} s start-up, {side['embed_s']:.0f} s embedding, "
                f"{side['cluster_s']:.0f} s clustering; UMAP epochs {side['umap_n_epochs']}"
            )
    print(
        f"1-minute load average: {report['load_avg_1m_at_start']:.2f} at the start, "
        f"{report['load_avg_1m_at_end']:.2f} at the end (limit {report['max_load']:.2f}, at the start); "
        f"other processes ran {report['other_processes_cpu_s']:.0f} CPU s during the run "
        f"({100 * report['other_processes_cpu_share']:.1f} % of the cores)"
    )
    if not report["idle"]:
        print("WARNING: the machine was not idle: these timings include other jobs' load")


if __name__ == "__main__":
    main()
