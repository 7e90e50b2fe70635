"""Benchmark: a small-firm rule for HDBSCAN's min_cluster_size in ftm's firm processor.

Run on demand (never by pytest):

    .venv/bin/python benchmarks/small_firms.py [--firms 40] [--seeds 1] [--workers 2] [--json]
    .venv/bin/python benchmarks/small_firms.py --cache /tmp/small-firms.pkl --seeds 3
    .venv/bin/python benchmarks/small_firms.py --demo-firms 2 --firms 1 --calls 1 --workers 1  # smoke test

It chose `FirmProcessor`'s small-firm rule, min(10, max(5, round(n / 20))) ("lo5 k20"); before
it every firm got `topics.hdbscan_min_cluster_size` (10), and a firm below max(umap_n_neighbors
+ 1, 2 × min_cluster_size) sentences is skipped. This runs the processor per firm with its rule
turned off, under rules that pick min_cluster_size m (and optionally min_samples) from the
firm's sentence count n: fixed 10 (the old rule), fixed 5, fixed 3, scaled min(10, max(lo, round(n /
k))) for lo in {3, 5} and k in {8, 12, 20}, and a few more (`RULES`: lo=4; min_samples m // 2
for small firms; min_samples 5 for every firm). Two data sets:

- A, the bundled demo quarter (`src/ftm/sample/maec-2016Q4.jsonl.gz`): every ticker that keeps
  a sentence after preprocessing (171 of 173); small firms, median about 40 sentences.
- B, `--firms` tickers spread over the shared corpus, each with all of its calls
  (`benchmarks/map.py`'s `read_firms`): mostly larger firms, to check that a rule leaves them
  alone (column "max n chg": the largest firm whose labels differ from fixed 10).

`--demo-firms N` (N tickers spread over A instead of all) and `--calls N` (each firm's first N
calls) exist for the smoke test (tests/test_benchmarks.py), which only checks that this runs.

Sentences come from ftm's own spaCy preprocessing (`map.preprocess`); embeddings from
`ftm.map.embedding.Embedder` on the CPU with the packaged MiniLM (no download), once per data set
(`--cache` keeps both in a pickle for the next run). The embedding and the fits run in
`--workers` processes of one thread each (in this process when it is 1). Each distinct (firm,
min_cluster_size, min_samples, seed) is fitted once and shared by the rules that ask for it: a
fit is seeded and deterministic. `--seeds N` repeats every fit with UMAP seeds 42 .. 42+N-1 and
shows means, with the spread over seeds ("sd").

Measures, per rule and data set: firms ok / no_topics / skipped; topics per ok firm and their
median size; outlier share over the clustered firms (a no_topics firm counts 1.0, as in
`map.quality`); coverage, the share of all the data set's sentences (skipped firms too) in a
topic; mean NPMI of each topic's top-10 words over the firm's own cleaned sentences, and topic
diversity (`map.quality`, over ok firms). NPMI over a few dozen sentences depends on topic size
(smaller topics pick rarer words, pairs that never co-occur count −1), so two controls:

- base: NPMI of the same firm's labels shuffled (topic sizes kept, 3 shuffles), keywords
  recomputed by BERTopic's c-TF-IDF as FirmProcessor computes them; lift = NPMI − base, what the
  clustering adds over random sentences. Shown over all ok firms, over "new" firms (ok only under
  the rule), over "core" firms (not ok under fixed 10, ok under every rule that lowers m: the
  same firms for every rule, a paired comparison), and per topic by topic size.
- cohesion: per topic, mean cosine similarity between its sentences' embeddings minus the
  firm's mean over all its sentence pairs, averaged over topics then firms.

"fit s" is the sum of the rule's per-firm fits on one thread (a shared fit counts for each rule
that uses it). The end shows, for a few demo firms (chosen by rule, not by hand), each topic's
size, keywords and most central sentence under fixed 10 and under `--compare`.

Runtime on 2 cores (measured: 9 minutes with one seed): reading, spaCy and embedding the 24,000
sentences take about 7 minutes, the fits 1.5 to 3 minutes per seed for all the rules.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import map as bench_map  # noqa: E402  (benchmarks/map.py: reading, preprocessing, NPMI)

from ftm.settings import EmbeddingSettings, TopicsSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "ftm" / "sample" / "maec-2016Q4.jsonl.gz"
# Shuffles of a firm's labels for the NPMI base.
BASELINE_SEEDS = (0, 1, 2)
FIXED = "fixed 10"
# Topic sizes (sentences, inclusive) for the lift-by-size table.
SIZE_BUCKETS = ((2, 5), (6, 9), (10, 19), (20, 10**9))

# A rule: the firm's sentence count -> (min_cluster_size, min_samples or None for the same).
Rule = Callable[[int], tuple[int, int | None]]
# One fit: (data set, ticker, min_cluster_size, min_samples, UMAP seed).
Task = tuple[str, str, int, int | None, int]


def _scaled(lo: int, k: int, samples: Callable[[int], int | None] = lambda m: None) -> Rule:
    def rule(n: int) -> tuple[int, int | None]:
        m = min(10, max(lo, round(n / k)))
        return m, samples(m)

    return rule


RULES: dict[str, Rule] = {
    FIXED: lambda n: (10, None),
    "fixed 5": lambda n: (5, None),
    "fixed 3": lambda n: (3, None),
    **{f"scaled lo={lo} k={k}": _scaled(lo, k) for lo in (3, 5) for k in (8, 12, 20)},
    "scaled lo=5 k=8 ms=m/2": _scaled(5, 8, lambda m: m // 2 if m < 10 else None),
    "scaled lo=3 k=12 ms=m/2": _scaled(3, 12, lambda m: max(2, m // 2) if m < 10 else None),
    "scaled lo=4 k=8": _scaled(4, 8),
    "fixed 10 ms=5": lambda n: (10, 5),
}
BEST = "scaled lo=5 k=20"
# The rules that lower min_cluster_size for a small (40-sentence) firm: the "core" firms are
# those that get topics under every one of them and not under fixed 10.
LOWERING = [name for name, rule in RULES.items() if rule(40)[0] < 10]


# --- data -------------------------------------------------------------------------------------


def load(
    path: Path, n_firms: int | None, workers: int, max_calls: int | None = None
) -> tuple[list[bench_map.Firm], np.ndarray]:
    """Firms (every ticker when n_firms is None) and their sentences' embeddings, in firm order."""
    if n_firms is None:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            n_firms = len({json.loads(line)["ticker"] for line in lines})
    calls = bench_map.read_firms(path, n_firms, max_calls)
    firms = [f for f in bench_map.preprocess(calls, workers) if f[2]]
    sentences = [s for _, _, raw, _ in firms for s in raw]
    if workers == 1:  # one single-threaded Embedder, here: no process to start
        return firms, _embed(sentences)
    # As ftm's local map does: one single-threaded Embedder per process (twice the throughput of
    # one process on every core, per benchmarks/map.py), each on every workers-th sentence.
    shares = [sentences[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with bench_map.one_thread(), context.Pool(workers) as pool:
        parts = pool.map(_embed, shares)
    vectors = np.empty((len(sentences), parts[0].shape[1]), dtype=np.float32)
    for i, part in enumerate(parts):
        vectors[i::workers] = part
    return firms, vectors


def _embed(sentences: list[str]) -> np.ndarray:
    from ftm.map.embedding import Embedder

    return Embedder(EmbeddingSettings(device="cpu", cpu_threads=1)).encode(sentences)


def load_all(args: argparse.Namespace) -> dict[str, tuple[list[bench_map.Firm], np.ndarray]]:
    """Both data sets, from `--cache` when it holds the same inputs."""
    key = (str(args.demo), str(args.corpus), args.firms, args.demo_firms, args.calls)
    if args.cache and args.cache.exists():
        with args.cache.open("rb") as file:
            cached = pickle.load(file)
        if cached["key"] == key:
            return cached["data"]
        print(f"{args.cache} holds other inputs: rebuilding it", file=sys.stderr)
    data = {}
    sets = (("A demo", args.demo, args.demo_firms), ("B corpus", args.corpus, args.firms))
    for name, path, n_firms in sets:
        started = time.perf_counter()
        data[name] = load(path, n_firms, args.workers, args.calls)
        firms = data[name][0]
        print(
            f"{name}: {len(firms)} firms, {sum(len(f[2]) for f in firms):,} sentences, "
            f"read + preprocessed + embedded in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    if args.cache:
        with args.cache.open("wb") as file:
            pickle.dump({"key": key, "data": data}, file)
    return data


# --- fits, in worker processes ----------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(data: dict[str, tuple[list[bench_map.Firm], np.ndarray]]) -> None:
    warnings.filterwarnings("ignore")
    _WORKER["firms"] = {}
    for name, (firms, vectors) in data.items():
        offset = 0
        for firm in firms:
            _WORKER["firms"][name, firm[0]] = (firm, vectors[offset : offset + len(firm[2])])
            offset += len(firm[2])
    # Warm-up, off the clock: imports and umap-learn's numba functions, once per process.
    first = next(iter(_WORKER["firms"]))
    _fit((*first, 10, None, 0))


def _fit(task: Task) -> dict[str, Any]:
    from ftm.map.firm_topics import FirmInput, FirmProcessor

    name, ticker, m, samples, seed = task
    (ticker, company, raw, cleaned), vectors = _WORKER["firms"][name, ticker]
    # The rule's m for this firm, as it is: FirmProcessor's own small-firm rule turned off.
    settings = TopicsSettings(
        backend="cpu",
        hdbscan_min_cluster_size=m,
        small_firm_min_cluster_size=m,
        hdbscan_min_samples=samples,
        random_state=seed,
    )
    ids = [f"{ticker}:{i}" for i in range(len(raw))]
    firm = FirmInput(ticker, company, "all", None, None, None, ids, raw, cleaned)
    started = time.perf_counter()
    outcome = FirmProcessor(settings).process(firm, vectors)
    seconds = time.perf_counter() - started
    labels = [-1] * len(raw)
    for row in outcome.rows:
        for sid in row["sentence_ids"]:
            labels[int(sid.rsplit(":", 1)[1])] = row["topic_id"]
    result: dict[str, Any] = {
        "status": outcome.status,
        "labels": labels,
        "words": [row["keywords"][:10] for row in outcome.rows],
        "sizes": [row["n_sentences"] for row in outcome.rows],
        "example": [row["representative_sentences"][0] for row in outcome.rows],
        "seconds": seconds,
    }
    if outcome.status == "ok":
        result["baseline_words"] = [
            _keywords(cleaned, vectors, np.random.default_rng(shuffle).permutation(labels))
            for shuffle in BASELINE_SEEDS
        ]
    return result


def _keywords(cleaned: list[str], vectors: np.ndarray, labels: np.ndarray) -> list[list[str]]:
    """Top-10 words per topic of given labels, by BERTopic's c-TF-IDF as FirmProcessor gets them
    (on a fit's own labels this gives FirmProcessor's keywords exactly: checked on 40 firms)."""
    from bertopic import BERTopic
    from bertopic.cluster import BaseCluster
    from bertopic.dimensionality import BaseDimensionalityReduction
    from sklearn.feature_extraction.text import CountVectorizer

    model = BERTopic(
        embedding_model=None,
        umap_model=BaseDimensionalityReduction(),
        hdbscan_model=BaseCluster(),
        vectorizer_model=CountVectorizer(),
        top_n_words=10,
        calculate_probabilities=False,
    )
    topics, _ = model.fit_transform(cleaned, embeddings=vectors, y=np.asarray(labels))
    return [
        [w for w, score in model.get_topic(t) or [] if w and score > 0][:10]
        for t in sorted(set(topics) - {-1})
    ]


def run_fits(
    data: dict[str, tuple[list[bench_map.Firm], np.ndarray]],
    rules: dict[str, Rule],
    seeds: list[int],
    workers: int,
) -> tuple[dict[Task, dict[str, Any]], float]:
    """Every distinct (data set, firm, min_cluster_size, min_samples, seed) that a rule asks for."""
    sizes = {(name, f[0]): len(f[2]) for name, (firms, _) in data.items() for f in firms}
    tasks = sorted(
        {
            (name, ticker, *rule(n), seed)
            for (name, ticker), n in sizes.items()
            for rule in rules.values()
            for seed in seeds
        },
        key=lambda t: (-sizes[t[0], t[1]], str(t)),  # largest first: a shorter tail
    )
    started = time.perf_counter()
    if workers == 1:  # the fits one after another, here: no process to start
        _init_worker(data)
        return {task: _fit(task) for task in tasks}, time.perf_counter() - started
    context = multiprocessing.get_context("spawn")
    with bench_map.one_thread(), context.Pool(workers, initializer=_init_worker, initargs=(data,)) as pool:
        fits = dict(zip(tasks, pool.map(_fit, tasks, chunksize=1), strict=True))
    return fits, time.perf_counter() - started


# --- measures ---------------------------------------------------------------------------------


def _cohesion(vectors: np.ndarray, labels: list[int]) -> float:
    """Mean over topics of (mean pairwise cosine inside the topic − mean over all the firm's pairs)."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def mean_pairwise(x: np.ndarray) -> float:
        s = x.sum(axis=0)
        return float((s @ s - len(x)) / (len(x) * (len(x) - 1)))

    firm = mean_pairwise(v)
    labels_array = np.asarray(labels)
    topics = sorted(set(labels) - {-1})
    return float(np.mean([mean_pairwise(v[labels_array == t]) - firm for t in topics]))


def _topic_npmi(firm: bench_map.Firm, result: dict[str, Any]) -> list[tuple[int, float, float]]:
    """Per topic of an ok firm: (sentences, NPMI of its top-10 words, the same for the shuffled
    labels' topic of the same size, averaged over the shuffles)."""
    documents = [set(text.split()) for text in firm[3]]
    rows = []
    for i, (size, words) in enumerate(zip(result["sizes"], result["words"], strict=True)):
        if len(words) < 2:  # as map.quality: NPMI needs a pair
            continue
        base = [bench_map.npmi(b[i], documents) for b in result["baseline_words"] if len(b[i]) >= 2]
        rows.append((size, bench_map.npmi(words, documents), float(np.mean(base)) if base else float("nan")))
    return rows


def _mean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when there are none."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def measure(
    firms: list[bench_map.Firm],
    vectors: np.ndarray,
    results: dict[str, dict[str, Any]],
    fixed: dict[str, dict[str, Any]],
    core: set[str],
) -> dict[str, Any]:
    """One rule on one data set at one seed; `fixed` is fixed 10 at the same seed, `core` the
    firms without topics under fixed 10 that every other rule gives topics."""
    changed = [len(f[2]) for f in firms if results[f[0]]["labels"] != fixed[f[0]]["labels"]]
    status = [results[f[0]]["status"] for f in firms]
    ok = [f for f in firms if results[f[0]]["status"] == "ok"]
    on_ok = bench_map.quality(ok, results)
    offsets = np.cumsum([0] + [len(f[2]) for f in firms])
    index = {f[0]: i for i, f in enumerate(firms)}
    cohesion = [
        _cohesion(vectors[offsets[index[f[0]]] : offsets[index[f[0]] + 1]], results[f[0]]["labels"])
        for f in ok
    ]
    sizes = [s for f in ok for s in results[f[0]]["sizes"]]
    in_topics = sum(int(np.sum(np.asarray(results[f[0]]["labels"]) != -1)) for f in ok)
    # NPMI as map.quality averages it (pairs, then topics, then firms), with its shuffled base.
    topics = {f[0]: _topic_npmi(f, results[f[0]]) for f in ok}
    firm_npmi = {t: _mean([n for _, n, _ in rows]) for t, rows in topics.items() if rows}
    firm_base = {t: _mean([b for _, _, b in rows]) for t, rows in topics.items() if rows}
    kept = [t for t in firm_npmi if fixed[t]["status"] == "ok"]
    new = [t for t in firm_npmi if fixed[t]["status"] != "ok"]
    row = {
        "firms": len(firms),
        "ok": status.count("ok"),
        "no_topics": status.count("no_topics"),
        "skipped": status.count("skipped"),
        "topics_per_ok_firm": on_ok["topics_per_firm"],
        "outlier_share": bench_map.quality(firms, results)["outlier_share"],
        "coverage": in_topics / int(offsets[-1]),
        "npmi": on_ok["npmi"],
        "npmi_base": _mean(list(firm_base.values())),
        "npmi_lift": on_ok["npmi"] - _mean(list(firm_base.values())),
        "diversity": on_ok["diversity"],
        "cohesion": _mean(cohesion),
        "median_topic_size": float(np.median(sizes)) if sizes else float("nan"),
        "kept_firms": len(kept),
        "npmi_kept": _mean([firm_npmi[t] for t in kept]),
        "new_firms": len(new),
        "npmi_new": _mean([firm_npmi[t] for t in new]),
        "npmi_new_base": _mean([firm_base[t] for t in new]),
        "npmi_new_lift": _mean([firm_npmi[t] - firm_base[t] for t in new]),
        "core_firms": len(core),
        "npmi_core_lift": _mean([firm_npmi[t] - firm_base[t] for t in core if t in firm_npmi]),
        "changed": len(changed),
        "largest_changed": max(changed, default=0),
        "fit_s": sum(results[f[0]]["seconds"] for f in firms),
    }
    # Lift per topic, by topic size: are the small topics any better than shuffled sentences?
    every = [r for rows in topics.values() for r in rows]
    for low, high in SIZE_BUCKETS:
        bucket = [n - b for size, n, b in every if low <= size <= high]
        row[f"topics_{low}"] = len(bucket)
        row[f"lift_{low}"] = _mean(bucket)
    return row


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measure's mean over the seeds, and the spread (sd over seeds) of the NPMI measures."""
    row = {key: _mean([run[key] for run in runs]) for key in runs[0]}
    for key in ("npmi", "npmi_lift", "npmi_new_lift", "npmi_core_lift"):
        values = [run[key] for run in runs if not np.isnan(run[key])]
        row[f"{key}_sd"] = float(np.std(values)) if len(values) > 1 else float("nan")
    return row


# --- report -----------------------------------------------------------------------------------

# (heading, measure, format), in two tables per data set: what gets topics, and how good they are.
COUNTS = [
    ("ok", "ok", "{:.1f}"),
    ("no_top", "no_topics", "{:.1f}"),
    ("skip", "skipped", "{:.1f}"),
    ("changed", "changed", "{:.1f}"),
    ("max n chg", "largest_changed", "{:.0f}"),
    ("top/firm", "topics_per_ok_firm", "{:.2f}"),
    ("med size", "median_topic_size", "{:.1f}"),
    ("outliers", "outlier_share", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("fit s", "fit_s", "{:.0f}"),
]
QUALITY = [
    ("NPMI", "npmi", "{:.4f}"),
    ("sd", "npmi_sd", "{:.4f}"),
    ("base", "npmi_base", "{:.4f}"),
    ("lift", "npmi_lift", "{:.4f}"),
    ("sd", "npmi_lift_sd", "{:.4f}"),
    ("div", "diversity", "{:.3f}"),
    ("cohesion", "cohesion", "{:.3f}"),
    ("NPMI kept", "npmi_kept", "{:.4f}"),
    ("new", "new_firms", "{:.1f}"),
    ("NPMI new", "npmi_new", "{:.4f}"),
    ("lift new", "npmi_new_lift", "{:.4f}"),
    ("sd", "npmi_new_lift_sd", "{:.4f}"),
    ("core", "core_firms", "{:.1f}"),
    ("lift core", "npmi_core_lift", "{:.4f}"),
    ("sd", "npmi_core_lift_sd", "{:.4f}"),
]
BY_SIZE = [
    item
    for low, high in SIZE_BUCKETS
    for item in (
        (f"n {low}-{high}" if high < 10**9 else f"n {low}+", f"topics_{low}", "{:.1f}"),
        ("lift", f"lift_{low}", "{:.4f}"),
    )
]
LEGEND = """\
ok / no_top / skip: firms by status. changed: firms whose labels differ from fixed 10 (same seed);
max n chg: the most sentences among them. top/firm, med size: topics per ok firm, sentences per topic.
outliers: outlier share over clustered firms (no_topics = 1.0). coverage: share of all the data set's
sentences in a topic. fit s: the rule's per-firm fits, one thread, summed.
NPMI, div, cohesion: over ok firms; base: NPMI of the same labels shuffled; lift = NPMI - base;
sd: over seeds. kept: firms ok under fixed 10 too; new: firms ok only under the rule; core: firms
not ok under fixed 10 but ok under every rule that lowers min_cluster_size (the same firms for
every rule: a paired view).
n a-b, lift: topics of a to b sentences (over ok firms) and their mean NPMI lift, each topic
against the shuffled labels' topic of the same size."""


def print_tables(name: str, firms: list[bench_map.Firm], rows: dict[str, dict[str, Any]]) -> None:
    counts = sorted(len(f[2]) for f in firms)
    print(
        f"\n{name}: {len(firms)} firms, {sum(counts):,} sentences; sentences per firm: "
        f"min {counts[0]}, median {int(np.median(counts))}, max {counts[-1]}"
    )
    for columns in (COUNTS, QUALITY, BY_SIZE):
        widths = [max(len(head), 7) for head, _, _ in columns]
        print(f"{'rule':<28}" + " ".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths, strict=True)))
        for rule, row in rows.items():
            cells = [form.format(row[key]) for _, key, form in columns]
            print(f"{rule:<28}" + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))


def print_examples(
    firms: list[bench_map.Firm], by_rule: dict[str, dict[str, dict[str, Any]]], compare: str, count: int
) -> None:
    """Demo firms in turn: no_topics under fixed 10, skipped under it, ok under both but changed;
    the middle firm of each group by sentence count, so the choice is not made by hand."""
    fixed, other = by_rule[FIXED], by_rule[compare]
    ok_now = sorted((f for f in firms if other[f[0]]["status"] == "ok"), key=lambda f: (len(f[2]), f[0]))
    groups = [
        [f for f in ok_now if fixed[f[0]]["status"] == "no_topics"],
        [f for f in ok_now if fixed[f[0]]["status"] == "skipped"],
        [
            f
            for f in ok_now
            if fixed[f[0]]["status"] == "ok" and fixed[f[0]]["labels"] != other[f[0]]["labels"]
        ],
    ]
    chosen: list[bench_map.Firm] = []
    while len(chosen) < count and any(groups):
        for group in groups:
            if group and len(chosen) < count:
                chosen.append(group.pop(len(group) // 2))
    for ticker, company, raw, _ in chosen:
        print(f"\n{ticker} ({company}), {len(raw)} sentences")
        for rule in (FIXED, compare):
            result = by_rule[rule][ticker]
            m, samples = RULES[rule](len(raw))
            print(f"  {rule} (min_cluster_size {m}, min_samples {samples or m}): {result['status']}")
            for size, words, example in zip(result["sizes"], result["words"], result["example"], strict=True):
                print(f"    [{size:>3}] {', '.join(words)}")
                print(f"          e.g. {example[:140]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--demo", type=Path, default=DEMO, help="data set A: every ticker of this file")
    parser.add_argument("--corpus", type=Path, default=bench_map.DEFAULT_CORPUS, help="data set B")
    parser.add_argument("--firms", type=int, default=40, help="data set B: tickers spread over the corpus")
    parser.add_argument("--demo-firms", type=int, help="data set A: tickers spread over it (default: all)")
    parser.add_argument("--calls", type=int, help="at most this many calls a firm (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="UMAP seeds per fit (42, 43, ...); means shown")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="worker processes")
    parser.add_argument("--cache", type=Path, help="pickle of the sentences and embeddings, made if absent")
    parser.add_argument("--compare", default=BEST, help="the rule whose keywords are set against fixed 10")
    parser.add_argument("--examples", type=int, default=3, help="demo firms whose keywords are shown")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of tables")
    args = parser.parse_args()
    bench_map.corpus.require(args.corpus)
    if args.compare not in RULES:
        parser.error(f"--compare must be one of: {', '.join(RULES)}")

    cores = len(os.sched_getaffinity(0))
    seeds = [TopicsSettings().random_state + i for i in range(args.seeds)]
    started = time.perf_counter()
    data = load_all(args)
    fits, fit_wall = run_fits(data, RULES, seeds, args.workers)
    print(f"{len(fits)} distinct fits in {fit_wall:.0f} s on {args.workers} workers", file=sys.stderr)

    report: dict[str, Any] = {"cpu_cores": cores, "workers": args.workers, "seeds": seeds, "data": {}}
    first_seed: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for name, (firms, vectors) in data.items():
        runs: dict[str, list[dict[str, Any]]] = {rule: [] for rule in RULES}
        for seed in seeds:
            by_rule = {
                rule_name: {f[0]: fits[(name, f[0], *rule(len(f[2])), seed)] for f in firms}
                for rule_name, rule in RULES.items()
            }
            first_seed.setdefault(name, by_rule)
            core = {
                f[0]
                for f in firms
                if by_rule[FIXED][f[0]]["status"] != "ok"
                and all(by_rule[rule][f[0]]["status"] == "ok" for rule in LOWERING)
            }
            for rule in RULES:
                runs[rule].append(measure(firms, vectors, by_rule[rule], by_rule[FIXED], core))
        report["data"][name] = {
            "firms": len(firms),
            "sentences": sum(len(f[2]) for f in firms),
            "rules": {rule: mean_over_seeds(runs[rule]) for rule in RULES},
        }
    report.update(fits=len(fits), fit_wall_s=fit_wall, total_wall_s=time.perf_counter() - started)

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(LEGEND)
    print(f"Means over UMAP seeds {', '.join(map(str, seeds))}.")
    for name, (firms, _) in data.items():
        print_tables(name, firms, report["data"][name]["rules"])
    print(
        f"\nKeywords at seed {seeds[0]}, {FIXED} against {args.compare} "
        "([sentences in the topic] top-10 words)"
    )
    print_examples(data["A demo"][0], first_seed["A demo"], args.compare, args.examples)
    print(
        f"\n{len(fits)} distinct fits, {fit_wall:.0f} s wall on {args.workers} workers; "
        f"{report['total_wall_s']:.0f} s in all"
    )


if __name__ == "__main__":
    main()
