"""Benchmark: ftm's map (Embedder + FirmProcessor) against plain BERTopic per firm, on the same
firms of the shared corpus, on the same CPU cores, in one run. Run on demand (never by pytest):

    .venv/bin/python benchmarks/map.py [--firms 40] [--workers 2] [--epochs N] [--json]

Firms: `--firms` tickers spread evenly over the corpus's sorted tickers, each with all of its
calls. Both sides get the same sentences: ftm's own preprocessing (spaCy, as `ftm prefetch` does)
makes `raw_text` and `cleaned_text` once, before either clock starts.

Plain, as researchers run it: one process looping over the firms, one
`BERTopic(embedding_model=<the local MiniLM folder>).fit_transform(raw sentences)` per firm, which
loads the model and embeds the firm's sentences itself, with BERTopic's default UMAP, HDBSCAN and
vectorizer; torch uses every core for the embedding, as it does by default.

ftm: `--workers` processes (default: one per core), each with one torch thread, each embedding all
of its share of the firms in one `Embedder.encode_firms` call and then running `FirmProcessor` per firm.
Several single-threaded workers rather than one process on all cores, because that measured twice
the embedding throughput on 2 cores (small matrix products scale poorly across threads); it is
also how the local backend runs batches.

Both wall times run from starting the worker processes to the last firm, imports and model
loading included. Quality is compared on the same footing: plain's topics get their keywords
recomputed from the cleaned sentences (`update_topics`, outside its clock), as ftm's come from
cleaned text. Per firm: NPMI of each topic's top-10 words, by document co-occurrence over the
firm's own cleaned sentences (a pair that never co-occurs counts −1), averaged over pairs, then
topics, then firms; topic diversity = unique / total top-10 words over the firm's topics; outlier
share; topics per firm. Firms that a side skips or fails on are counted and left out of quality.
"""

from __future__ import annotations

import argparse
import contextlib
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


def read_firms(path: Path, n_firms: int) -> dict[str, tuple[str, list[list[Component]]]]:
    """`n_firms` tickers spread evenly over the sorted tickers, each with all of its calls."""
    calls: dict[str, tuple[str, list[list[Component]]]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            name, found = calls.setdefault(record["ticker"], (record["company_name"], []))
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
    preprocessor = Preprocessor(PreprocessSettings(workers=workers))
    try:
        for (ticker, _), text in preprocessor.process(keyed):
            for sentence in text.sentences:
                raw[ticker].append(sentence.raw_text)
                cleaned[ticker].append(sentence.cleaned_text)
    finally:
        preprocessor.close()
    return [(ticker, calls[ticker][0], raw[ticker], cleaned[ticker]) for ticker in calls]


# --- the two sides, each in worker processes --------------------------------------------------


def plain_worker(firms: list[Firm], model: str) -> dict[str, Any]:
    """Plain BERTopic per firm. Returns per firm (labels, top-10 words) or an error."""
    warnings.filterwarnings("ignore")
    from bertopic import BERTopic

    results: dict[str, Any] = {}
    quality_s = 0.0
    for ticker, _, raw, cleaned in firms:
        try:
            topic_model = BERTopic(embedding_model=model)
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


def ftm_worker(firms: list[Firm], topics: dict[str, Any]) -> dict[str, Any]:
    """ftm: one Embedder call over all of this worker's firms, then FirmProcessor per firm."""
    from ftm.map.embedding import Embedder
    from ftm.map.firm_topics import FirmInput, FirmProcessor

    started = time.perf_counter()
    embedder = Embedder(EmbeddingSettings(cpu_threads=1))
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
        "precision": embedder.precision,
        **_usage(),
    }


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def run_plain(firms: list[Firm], model: str) -> tuple[float, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with context.Pool(1) as pool:
        report = pool.apply(plain_worker, (firms, model))
    return time.perf_counter() - started - report["off_clock_s"], report


def run_ftm(firms: list[Firm], workers: int, topics: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    shares: list[list[Firm]] = [[] for _ in range(workers)]
    sizes = [0] * workers
    for firm in sorted(firms, key=lambda f: -len(f[2])):  # largest first, to the lightest share
        lightest = sizes.index(min(sizes))
        shares[lightest].append(firm)
        sizes[lightest] += len(firm[2])
    context = multiprocessing.get_context("spawn")
    with one_thread(), context.Pool(workers) as pool:
        started = time.perf_counter()
        reports = pool.starmap(ftm_worker, [(share, topics) for share in shares if share])
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
        documents = [set(text.split()) for text in cleaned]
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


# --- report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--firms", type=int, default=40, help="tickers, spread over the corpus")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="ftm processes")
    parser.add_argument("--epochs", type=int, default=None, help="override topics.umap_n_epochs")
    parser.add_argument("--skip-plain", action="store_true", help="run ftm only")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    corpus.require(args.corpus)

    from ftm.map.embedding import resolve_model

    model = resolve_model(EmbeddingSettings().model)
    topics: dict[str, Any] = {} if args.epochs is None else {"umap_n_epochs": args.epochs}
    cores = len(os.sched_getaffinity(0))

    started = time.perf_counter()
    firms = preprocess(read_firms(args.corpus, args.firms), cores)
    prep_s = time.perf_counter() - started
    n_sentences = sum(len(f[2]) for f in firms)
    print(f"{len(firms)} firms, {n_sentences:,} sentences, preprocessed in {prep_s:.0f} s", file=sys.stderr)

    print("ftm ...", file=sys.stderr)
    ftm_s, ftm_reports = run_ftm(firms, args.workers, topics)
    ftm_results = {k: v for r in ftm_reports for k, v in r["results"].items()}
    report: dict[str, Any] = {
        "firms": len(firms),
        "sentences": n_sentences,
        "cpu_cores": cores,
        "load_avg_1m_at_end": None,
        "ftm": {
            "workers": args.workers,
            "wall_s": ftm_s,
            "firms_per_min": 60 * len(firms) / ftm_s,
            "cpu_s": sum(r["cpu_s"] for r in ftm_reports),
            "peak_worker_rss_mb": max(r["peak_rss_mb"] for r in ftm_reports),
            "embed_sentences_per_s": sum(r["sentences"] / r["embed_s"] for r in ftm_reports),
            "load_s": max(r["load_s"] for r in ftm_reports),
            "embed_s": max(r["embed_s"] for r in ftm_reports),
            "cluster_s": max(r["cluster_s"] for r in ftm_reports),
            "precision": ftm_reports[0]["precision"],
            "umap_n_epochs": TopicsSettings(**topics).umap_n_epochs,
            **quality(firms, ftm_results),
        },
    }
    if not args.skip_plain:
        print("plain BERTopic ...", file=sys.stderr)
        plain_s, plain_report = run_plain(firms, model)
        report["plain"] = {
            "workers": 1,
            "wall_s": plain_s,
            "firms_per_min": 60 * len(firms) / plain_s,
            "cpu_s": plain_report["cpu_s"] - plain_report["off_clock_s"],
            "peak_worker_rss_mb": plain_report["peak_rss_mb"],
            **quality(firms, plain_report["results"]),
        }
        report["ratio_firms_per_min"] = report["ftm"]["firms_per_min"] / report["plain"]["firms_per_min"]
        report["ratio_cpu_s"] = report["plain"]["cpu_s"] / report["ftm"]["cpu_s"]
    report["load_avg_1m_at_end"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(report, indent=2))
        return
    sides = [("plain BERTopic", report.get("plain")), (f"ftm ({args.workers} workers)", report["ftm"])]
    sides = [(name, side) for name, side in sides if side]
    print(f"{len(firms)} firms, {n_sentences:,} sentences, {cores} CPU cores")
    print(f"{'':<26}" + "".join(f"{name:>22}" for name, _ in sides))
    lines = [
        ("wall s", "wall_s", "{:.1f}"),
        ("firms/min", "firms_per_min", "{:.1f}"),
        ("CPU s (all processes)", "cpu_s", "{:.1f}"),
        ("mean NPMI (top 10)", "npmi", "{:.4f}"),
        ("topic diversity", "diversity", "{:.3f}"),
        ("outlier share", "outlier_share", "{:.3f}"),
        ("topics per firm", "topics_per_firm", "{:.1f}"),
        ("firms skipped / failed", None, ""),
        ("peak RSS of a worker MB", "peak_worker_rss_mb", "{:.0f}"),
    ]
    for label, key, form in lines:
        if key is None:
            cells = [f"{side['skipped']} / {side['failed']}" for _, side in sides]
        else:
            cells = [form.format(side[key]) for _, side in sides]
        print(f"{label:<26}" + "".join(f"{cell:>22}" for cell in cells))
    if "ratio_firms_per_min" in report:
        print(
            f"ratio ftm / plain: {report['ratio_firms_per_min']:.2f}x firms/min, "
            f"{report['ratio_cpu_s']:.2f}x CPU time"
        )
    f = report["ftm"]
    print(
        f"ftm: {f['precision']} embeddings at {f['embed_sentences_per_s']:.0f} sentences/s over its workers; "
        f"slowest worker {f['load_s']:.0f} s start-up, {f['embed_s']:.0f} s embedding, "
        f"{f['cluster_s']:.0f} s clustering; UMAP epochs {f['umap_n_epochs']}"
    )
    print(
        f"1-minute load average at the end: {report['load_avg_1m_at_end']:.1f} "
        "(the timings assume an otherwise idle machine)"
    )


if __name__ == "__main__":
    main()
