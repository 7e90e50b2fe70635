"""Themes benchmark: do ftm's themes find what history says many firms talked about in a quarter?

On quarters of the shared corpus (by fiscal-quarter label: 2020Q3 and 2021Q3 by default), three
systems run on the same prefetched sentences and the same MiniLM embeddings (the map's), each in a
child process of its own (its wall time and peak resident memory are its own):

- **ftm**: `ftm reduce` on the quarter the map left (`ftm prefetch`, `ftm submit` run once first,
  kept in `--root`; the map's time is reported apart). A firm is in a theme when the panel gives it
  at least 2 sentences there (`firm_theme_exposure.n_sentences`); a theme's sentences are its rows
  of `theme_sentences.parquet`.
- **global BERTopic**: one plain `BERTopic().fit_transform(raw sentences, embeddings)` over every
  sentence of the quarter; a firm is in a topic when at least 2 of its sentences are.
- **the seed's reduce**: BERTopic over each firm topic's keyword string (the earlier pipeline's
  cross-firm step); a theme's sentences are those of its firm topics.

Ground truth from history, not from a model, and only here (never in ftm): a firm is *exposed* to
an event when at least 2 of its prefetched sentences (`raw_text`) match the event's pattern, case
insensitive. Per system and event: a theme's *sentence precision* is the share of its sentences
that match; a theme with sentence precision ≥ 0.25 is *eligible*; the *best theme* is the eligible
one with the highest firm-level F1 against the exposed firms; *sentence recall* is the share of all
matching sentences that lie in some eligible theme; *rank* is the best theme's place in the
system's own default order, where a researcher looks first (0 is the first): ftm's theme ids
among its themes of kind `theme` (by salience), BERTopic's topic ids (by size); *kind* is the best
theme's kind. With `--seeds N`, ftm's reduce runs with N values of `reduce.random_state` and
each event's F1 and rank are given as their range over the seeds. *Keyword spread*: of ftm's
themes of kind `theme` that 10 or more firms talk about, how many have a top-3 keyword that fewer
than 20 % of those firms use in their sentences of the theme (`cleaned_text`).

The map is cached under `--root`, in a folder keyed by the corpus file and the map's settings
(embedding, topics, map, preprocess), so a change to the reduce reruns in minutes.

    .venv/bin/python benchmarks/themes.py                       # 2020Q3 and 2021Q3, ~1 h on 2 cores
    .venv/bin/python benchmarks/themes.py --quarters 2021Q3 --root /tmp/themes --json
    .venv/bin/python benchmarks/themes.py --quarters 2021Q3 --firms 3 --workers 1 --root /tmp/small

`--firms N` prefetches and maps only the quarter's first N firms (by ticker): it exists for the
smoke test (tests/test_benchmarks.py), which checks that this runs, not what it finds; it is part
of the cache's key.

It needs the test corpus (see tests/corpus.py, or `--corpus`); without it, point
`--corpus` at any JSON Lines file of the same format (see src/ftm/sample/README.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ftm import layout
from ftm.quarters import Quarter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/corpus.py: where the test corpus is
import corpus  # noqa: E402

EVENTS = {
    "pandemic": r"covid|coronavirus|pandemic",
    "supply chain": r"supply chain",
    "inflation": r"inflation",
}
SYSTEMS = ("ftm", "global BERTopic", "seed's reduce")
MIN_SENTENCES = 2  # of a firm, in a theme or matching an event
ELIGIBLE = 0.25  # sentence precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quarters", default="2020Q3,2021Q3")
    parser.add_argument("--corpus", type=Path, default=corpus.PATH)
    parser.add_argument("--root", type=Path, default=Path("/tmp/ftm-bench-themes"), help="kept between runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="map workers")
    parser.add_argument("--firms", type=int, help="only the quarter's first N firms (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="reduce.random_state values for ftm")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # a child process's own system
    parser.add_argument("--quarter", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        _child(args.system, Quarter.parse(args.quarter), args.root, args.out)
        return
    corpus.require(args.corpus)
    args.root = args.root / map_key(args.corpus, args.firms)
    report: dict[str, Any] = {"machine": machine(), "root": str(args.root), "quarters": {}}
    for text in args.quarters.split(","):
        quarter = Quarter.parse(text.strip())
        map_s = prepare(quarter, args.corpus, args.root, args.workers, args.firms)
        sentences = _sentences(args.root, quarter)
        results = {"map_s": map_s, "n_sentences": len(sentences), "n_firms": int(sentences.firm_id.nunique())}
        for system in SYSTEMS:
            out = args.root / f"{quarter}-{system.replace(' ', '_').replace(chr(39), '')}.parquet"
            usage = run_child(system, quarter, args.root, out)
            assignment = pd.read_parquet(out)
            results[system] = {**usage, **evaluate(sentences, assignment)}
        results["ftm"]["keyword_spread"] = keyword_spread(args.root, quarter)
        if args.seeds > 1:
            results["seeds"] = seed_spread(quarter, args.root, sentences, args.seeds)
        report["quarters"][str(quarter)] = results
        if not args.json:
            print_quarter(str(quarter), results)
    if args.json:
        print(json.dumps(report, indent=2, default=str))


def machine() -> dict[str, Any]:
    flags = ""
    model = platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1)  # type: ignore[union-attr]
        model = re.search(r"^model name\s*:\s*(.*)$", info, re.M).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [flag for flag in wanted if flag in flags.split()],
        "load_average": os.getloadavg(),
    }


# --- the quarter, prefetched and mapped once ----------------------------------------------------


def prepare(
    quarter: Quarter, corpus: Path, root: Path, workers: int, n_firms: int | None = None
) -> float | None:
    """Prefetches (by fiscal-quarter label; only the first `n_firms` firms when given) and maps
    the quarter unless done; the map's seconds."""
    env = {**os.environ, "FTM_SOURCE__QUARTER_RULE": "fiscal"}
    ftm = [sys.executable, "-m", "ftm"]
    if not (root / layout.prefetch_manifest(quarter)).exists():
        firms = [] if n_firms is None else ["--firms", ",".join(first_firms(corpus, [quarter], n_firms))]
        subprocess.run(
            [
                *ftm,
                "prefetch",
                str(quarter),
                "--source",
                "files",
                "--input",
                str(corpus),
                "--root",
                str(root),
                *firms,
            ],
            check=True,
            env=env,
        )
    marker = root / f"map-{quarter}.json"
    if marker.exists():
        return json.loads(marker.read_text())["map_s"]
    # One batch per worker, so that every worker has firms to map.
    firms = json.loads((root / layout.prefetch_manifest(quarter)).read_text())["n_firms"]
    size = str(-(-firms // workers))
    start = time.perf_counter()
    subprocess.run(
        [*ftm, "submit", "--quarter", str(quarter), "--workers", str(workers), "--batch-size", size]
        + ["--root", str(root)],
        check=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"map_s": seconds}))
    return seconds


def first_firms(corpus: Path, quarters: list[Quarter], n: int) -> list[str]:
    """The first n tickers, sorted, with a call labelled each of `quarters` (the fiscal rule's)."""
    labels: dict[str, set[str | None]] = {}
    with gzip.open(corpus, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            labels.setdefault(record["ticker"], set()).add(record.get("fiscal_quarter"))
    wanted = {str(quarter) for quarter in quarters}
    return sorted(ticker for ticker, found in labels.items() if wanted <= found)[:n]


def _sentences(root: Path, quarter: Quarter) -> pd.DataFrame:
    folder = root / layout.prefetch_folder(quarter)
    columns = ["firm_id", "sentence_id", "raw_text"]
    return pd.concat([pd.read_parquet(p, columns=columns) for p in sorted(folder.glob("chunk_*.parquet"))])


# --- each system in a child process ---------------------------------------------------------


def run_child(
    system: str, quarter: Quarter, root: Path, out: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Runs one system in a child process; its wall seconds and peak resident memory."""
    command = [sys.executable, __file__, "--system", system, "--quarter", str(quarter), "--root", str(root)]
    start = time.perf_counter()
    child = subprocess.Popen([*command, "--out", str(out)], env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{system} on {quarter} failed (status {status})")
    return {"seconds": round(seconds, 1), "peak_gb": round(usage.ru_maxrss / 1e6, 2)}


def map_key(corpus: Path, n_firms: int | None) -> str:
    """The cache folder's name: the corpus file and the settings the map depends on."""
    import hashlib

    from ftm.settings import load_settings

    settings = load_settings(None)
    mapped = {
        name: getattr(settings, name).model_dump(mode="json") for name in ("embedding", "topics", "map")
    }
    mapped["preprocess"] = settings.preprocess.model_dump(mode="json")
    # The corpus by its content, not its path or time: a fresh copy of the same file (a new
    # checkout, a re-provisioned machine) keeps the cache.
    content = hashlib.sha256(corpus.read_bytes()).hexdigest()
    key = json.dumps([content, n_firms, mapped], sort_keys=True)
    return "map-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def seed_spread(quarter: Quarter, root: Path, sentences: pd.DataFrame, n: int) -> dict[str, Any]:
    """ftm's F1 and rank per event over `n` values of reduce.random_state (42, 43, ...)."""
    runs = []
    for seed in range(42, 42 + n):
        out = root / f"{quarter}-ftm-seed{seed}.parquet"
        run_child("ftm", quarter, root, out, {"FTM_REDUCE__RANDOM_STATE": str(seed)})
        runs.append(evaluate(sentences, pd.read_parquet(out)))
    spread: dict[str, Any] = {}
    for event in EVENTS:
        f1 = [run[event]["f1"] for run in runs]
        ranks = [run[event]["rank"] for run in runs]
        spread[event] = {
            "f1_min": min(f1),
            "f1_max": max(f1),
            "rank_worst": None if None in ranks else max(ranks),
            "rank_best": None if None in ranks else min(ranks),
            # Each seed's, "-" where the best theme is not of kind theme: one such seed made both
            # ends None, hiding the seeds that ranked it first.
            "ranks": ["-" if rank is None else rank for rank in ranks],
        }
    return spread


def keyword_spread(root: Path, quarter: Quarter) -> dict[str, Any]:
    """Of the themes of kind theme with 10+ firms, those with a top-3 keyword fewer than 20 % of
    their firms use in their sentences of the theme."""
    themes = pq.read_table(
        root / layout.themes(quarter), columns=["theme_id", "kind", "keywords"]
    ).to_pandas()
    members = pq.read_table(
        root / layout.theme_sentences(quarter), columns=["theme_id", "firm_id", "sentence_id"]
    )
    folder = root / layout.prefetch_folder(quarter)
    texts = pd.concat(
        pd.read_parquet(p, columns=["sentence_id", "cleaned_text"])
        for p in sorted(folder.glob("chunk_*.parquet"))
    )
    members = members.to_pandas().merge(texts, on="sentence_id")
    counted, narrow, examples = 0, 0, []
    for theme in themes[themes.kind == "theme"].itertuples():
        rows = members[members.theme_id == theme.theme_id]
        per_firm = rows.groupby("firm_id").size()
        firms = set(per_firm[per_firm >= MIN_SENTENCES].index)
        if len(firms) < 10:
            continue
        counted += 1
        said = (
            rows[rows.firm_id.isin(firms)]
            .groupby("firm_id")
            # Words as the reduce counts them: split at whitespace, hyphens as spaces.
            .cleaned_text.apply(
                lambda t: " " + " | ".join(" ".join(s.replace("-", " ").split()) for s in t) + " "
            )
        )
        for word in list(theme.keywords)[:3]:
            users = sum(f" {word} " in text for text in said)
            if users < 0.2 * len(firms):
                narrow += 1
                examples.append(f"{', '.join(list(theme.keywords)[:3])} ({len(firms)} firms)")
                break
    return {
        "themes_10_firms": counted,
        "narrow": narrow,
        "share": round(narrow / max(counted, 1), 3),
        "examples": examples[:5],
    }


def _child(system: str, quarter: Quarter, root: Path, out: Path) -> None:
    """Writes (sentence_id, theme) pairs: every sentence in every theme of the system."""
    if system == "ftm":
        from ftm.cli import main as ftm_main

        code = ftm_main(["reduce", "--quarter", str(quarter), "--root", str(root)])
        if code:
            sys.exit(code)
        members = pq.read_table(root / layout.theme_sentences(quarter)).to_pandas()
        kinds = pq.read_table(root / layout.themes(quarter), columns=["theme_id", "kind"]).to_pandas()
        members = members.merge(kinds, on="theme_id")
        members[["sentence_id", "theme_id", "kind"]].rename(columns={"theme_id": "theme"}).to_parquet(out)
        return
    from bertopic import BERTopic

    if system == "global BERTopic":
        sentences = _sentences(root, quarter)
        embeddings = pq.read_table(root / layout.sentence_embeddings_folder(quarter)).to_pandas()
        by_id = dict(zip(embeddings.sentence_id, embeddings.embedding, strict=True))
        sentences = sentences[sentences.sentence_id.isin(by_id)]
        vectors = np.stack([by_id[s] for s in sentences.sentence_id]).astype(np.float32)
        topics, _ = BERTopic().fit_transform(sentences.raw_text.tolist(), embeddings=vectors)
        found = pd.DataFrame({"sentence_id": sentences.sentence_id.to_numpy(), "theme": topics})
        found[found.theme >= 0].assign(kind="theme").to_parquet(out)
        return
    from ftm.map.embedding import resolve_model

    topics = pq.read_table(root / layout.firm_topics_folder(quarter), columns=["keywords", "sentence_ids"])
    documents = [" ".join(words) for words in topics.column("keywords").to_pylist()]
    labels, _ = BERTopic(
        embedding_model=resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    ).fit_transform(documents)
    rows = [
        (sentence, label)
        for label, ids in zip(labels, topics.column("sentence_ids").to_pylist(), strict=True)
        if label >= 0
        for sentence in ids
    ]
    pd.DataFrame(rows, columns=["sentence_id", "theme"]).assign(kind="theme").to_parquet(out)


# --- the measurement --------------------------------------------------------------------------


def evaluate(sentences: pd.DataFrame, assignment: pd.DataFrame) -> dict[str, Any]:
    """Per event: best-theme F1, its firm recall and precision, rank and sentence recall."""
    firm_of = dict(zip(sentences.sentence_id, sentences.firm_id, strict=True))
    pairs = assignment.assign(firm=assignment.sentence_id.map(firm_of))
    counts = pairs.groupby(["theme", "firm"]).size()
    in_theme = counts[counts >= MIN_SENTENCES].reset_index().groupby("theme").firm.apply(set).to_dict()
    kinds = pairs.groupby("theme").kind.first().to_dict()
    # Each system's own default order: ftm's theme ids (by salience), BERTopic's topic ids (by size).
    ranked = sorted(t for t in in_theme if kinds.get(t) == "theme")
    rank = {theme: i for i, theme in enumerate(ranked)}
    out: dict[str, Any] = {"n_themes": len(in_theme), "n_theme_kind": len(ranked)}
    for event, pattern in EVENTS.items():
        matches = sentences.raw_text.str.contains(pattern, case=False, regex=True)
        per_firm = matches.groupby(sentences.firm_id.to_numpy()).sum()
        exposed = set(per_firm[per_firm >= MIN_SENTENCES].index)
        matching = set(sentences.sentence_id[matches.to_numpy()])
        precision = pairs.assign(match=pairs.sentence_id.isin(matching)).groupby("theme").match.mean()
        eligible = set(precision[precision >= ELIGIBLE].index)
        best = (0.0, 0.0, 0.0, None)
        for theme in eligible:
            firms = in_theme.get(theme, set())
            hits = len(firms & exposed)
            if not hits:
                continue
            p, r = hits / len(firms), hits / len(exposed)
            f1 = 2 * p * r / (p + r)
            if f1 > best[0]:
                best = (f1, r, p, theme)
        covered = set(pairs.sentence_id[pairs.theme.isin(eligible)]) & matching
        out[event] = {
            "exposed_share": round(len(exposed) / sentences.firm_id.nunique(), 3),
            "f1": round(best[0], 3),
            "firm_recall": round(best[1], 3),
            "firm_precision": round(best[2], 3),
            "theme_firms": len(in_theme.get(best[3], ())) if best[3] is not None else 0,
            "rank": rank.get(best[3]) if best[3] is not None else None,
            "kind": kinds.get(best[3]) if best[3] is not None else None,
            "sentence_recall": round(len(covered) / max(len(matching), 1), 3),
        }
    return out


def print_quarter(quarter: str, results: dict[str, Any]) -> None:
    map_s = results["map_s"] or 0
    print(
        f"\n{quarter}: {results['n_firms']} firms, {results['n_sentences']:,} sentences (map {map_s:.0f} s)"
    )
    columns = f"{'F1 (R / P)':>16s} {'rank':>4s} {'s.rec':>5s} {'firms':>5s}"
    print(f"{'event':13s} {'exposed':>7s} | " + " | ".join(f"{system:^33s}" for system in SYSTEMS))
    print(f"{'':13s} {'':7s} | " + " | ".join(columns for _ in SYSTEMS))
    for event in EVENTS:
        cells = []
        for system in SYSTEMS:
            e = results[system][event]
            rank = "-" if e["rank"] is None else str(e["rank"])
            score = f"{e['f1']:.2f} ({e['firm_recall']:.2f}/{e['firm_precision']:.2f})"
            cells.append(f"{score:>16s} {rank:>4s} {e['sentence_recall']:5.2f} {e['theme_firms']:5d}")
        print(f"{event:13s} {results['ftm'][event]['exposed_share']:7.2f} | " + " | ".join(cells))
    for system in SYSTEMS:
        r = results[system]
        print(f"  {system}: {r['seconds']:.0f} s, peak {r['peak_gb']:.1f} GB, {r['n_theme_kind']} themes")
    kinds = ", ".join(f"{event} {results['ftm'][event]['kind']}" for event in EVENTS)
    print(f"  ftm's best themes are of kind: {kinds}")
    spread = results["ftm"]["keyword_spread"]
    print(
        f"  keyword spread: {spread['narrow']} of {spread['themes_10_firms']} themes of kind theme with "
        f"10+ firms ({spread['share']:.0%}) have a top-3 keyword fewer than 20 % of their firms use"
    )
    for example in spread["examples"]:
        print(f"    {example}")
    if "seeds" in results:
        for event, spread in results["seeds"].items():
            print(
                f"  seeds: {event}: F1 {spread['f1_min']:.2f} to {spread['f1_max']:.2f}, "
                f"rank per seed {', '.join(str(rank) for rank in spread['ranks'])}"
            )


if __name__ == "__main__":
    main()
