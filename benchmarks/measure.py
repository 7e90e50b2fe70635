"""Measure benchmark: does `ftm measure` find the firms history says talked about an event?

On quarters of the shared corpus (2020Q3 and 2021Q3 by default, prefetched and mapped once as
benchmarks/themes.py does, in the same cache), `ftm measure` runs once per quarter list with one
subject per event of benchmarks/themes.py's EVENTS, each described in plain words as a user would
(DESCRIPTIONS, written before any score was seen). Ground truth as in themes.py: a firm is exposed
to an event when at least 2 of its prefetched sentences match the event's pattern; a measure
calls a firm exposed when at least 2 of its sentences are about the subject. Per event and
quarter: firm-level F1 (recall / precision) and the Spearman correlation, across every firm of
the quarter, between the measure's `share` and the share of the firm's sentences that match.

Two baselines in the same run, on the same sentences: **words**, the description's own words
(less English stop words) as a keyword pattern; **cos 0.5**, a plain cosine of at least 0.5
between a sentence's stored embedding and the description's.

Scale (`--scale-root`): `ftm measure` itself, as a child process, over a mapped quarter of that
root (`benchmarks/reduce.py --keep DIR` builds 2,000,000 sentences as 2016Q4), first with one
subject, then with the ten of SCALE_SUBJECTS: wall time from the command's start to its end, so
Python's start, the model's load, reading the quarter's embeddings, the calibration and writing
are all in it. Without `--scale-root`, the calibration alone on `--scale` random unit vectors.

    .venv/bin/python benchmarks/measure.py                  # ~2 min on 2 cores once the map is cached
    .venv/bin/python benchmarks/measure.py --mapped /tmp/ftm-bench-themes/map-ab650e97df79
    .venv/bin/python benchmarks/measure.py --quarters 2021Q3 --firms 3 --workers 1 \
        --root /tmp/small --scale 10000
    .venv/bin/python benchmarks/measure.py --mapped /tmp/ftm-bench-themes/map-ab650e97df79 \
        --scale-root /tmp/bench/q2m                         # a 2,000,000-sentence quarter

`--firms N` maps only the first N firms (the smoke test, tests/test_benchmarks.py). The measure
writes into a hard-linked copy of the cached quarter (`--out`), never into the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from ftm import layout
from ftm.quarters import Quarter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import themes  # noqa: E402  (the map's cache, the sentences, EVENTS and the ground truth's rule)

DESCRIPTIONS = {
    "pandemic": "the coronavirus pandemic and its effects on business",
    "supply chain": "supply chain disruptions, shortages of parts and logistics delays",
    "inflation": "rising prices and cost inflation",
}
SYSTEMS = ("ftm measure", "words", "cos 0.5")
# Ten subjects a user might measure at once, for the scale check only (no ground truth).
SCALE_SUBJECTS = {
    **{_event.replace(" ", "_"): _text for _event, _text in DESCRIPTIONS.items()},
    "climate": "climate change, carbon emissions and the energy transition",
    "tariffs": "tariffs and trade disputes with China",
    "ai": "artificial intelligence and machine learning",
    "cyber": "cyber attacks and data security breaches",
    "labour": "labour shortages and difficulty hiring workers",
    "rates": "interest rate increases by the Federal Reserve",
    "tax": "the corporate tax reform and the lower tax rate",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quarters", default="2020Q3,2021Q3")
    parser.add_argument("--corpus", type=Path, default=themes.corpus.PATH)
    parser.add_argument("--root", type=Path, default=Path("/tmp/ftm-bench-themes"), help="themes.py's cache")
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/ftm-bench-measure"), help="where measure writes"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="map workers")
    parser.add_argument("--firms", type=int, help="only the quarter's first N firms (default: all)")
    parser.add_argument(
        "--mapped",
        type=Path,
        help="a storage root with the quarters already mapped (skips themes.py's cache)",
    )
    parser.add_argument("--scale", type=int, default=2_000_000, help="sentences of the scale check")
    parser.add_argument(
        "--scale-root", type=Path, help="a storage root with one mapped quarter: time the command on it"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    themes.corpus.require(args.corpus)
    quarters = [Quarter.parse(text.strip()) for text in args.quarters.split(",")]
    cache = args.mapped or args.root / themes.map_key(args.corpus, args.firms)
    if args.mapped is None:
        for quarter in quarters:
            themes.prepare(quarter, args.corpus, cache, args.workers, args.firms)
    root = _linked_copy(cache, args.out / cache.name)
    subjects = root / "subjects.toml"
    subjects.write_text("".join(f'{_name(e)} = "{d}"\n' for e, d in DESCRIPTIONS.items()))
    start = time.perf_counter()
    label = ",".join(str(q) for q in quarters)
    command = [
        sys.executable,
        "-m",
        "ftm",
        "measure",
        label,
        "--subjects",
        str(subjects),
        "--root",
        str(root),
    ]
    subprocess.run(command, check=True)
    report: dict[str, Any] = {
        "machine": themes.machine(),
        "measure_s": round(time.perf_counter() - start, 1),
        "descriptions": DESCRIPTIONS,
        "quarters": {},
    }
    queries = _description_embeddings()
    for quarter in quarters:
        report["quarters"][str(quarter)] = evaluate_quarter(root, quarter, queries)
    if args.scale_root:
        report["scale"] = scale_command(args.scale_root, args.out / "scale")
    else:
        report["scale"] = scale(args.scale)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)


def _name(event: str) -> str:
    return event.replace(" ", "_")


def _linked_copy(source: Path, target: Path) -> Path:
    """The cached quarters as hard links, with measures/ fresh: the cache is never written."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("measures"))
    return target


def _description_embeddings() -> np.ndarray:
    """The descriptions on the map's embedding path, for the cosine baseline."""
    from ftm.map import Embedder
    from ftm.settings import load_settings

    return Embedder(load_settings(None).embedding).encode(list(DESCRIPTIONS.values()))


def evaluate_quarter(root: Path, quarter: Quarter, queries: np.ndarray) -> dict[str, Any]:
    sentences = themes._sentences(root, quarter)
    firms = sentences.groupby("firm_id").size()
    embedded = pq.read_table(root / layout.sentence_embeddings_folder(quarter)).to_pandas()
    vectors = np.stack(embedded.embedding.to_numpy()).astype(np.float32)
    cosines = pd.DataFrame(vectors @ queries.T, index=embedded.sentence_id.to_numpy())
    out: dict[str, Any] = {"n_firms": len(firms), "n_sentences": len(sentences)}
    for index, (event, pattern) in enumerate(themes.EVENTS.items()):
        truth = _per_firm(sentences, sentences.raw_text.str.contains(pattern, case=False, regex=True), firms)
        panel = pd.read_parquet(root / layout.measure_firm_quarter(_name(event)))
        panel = panel[panel.quarter == str(quarter)].set_index("firm_id")
        words = _words_pattern(DESCRIPTIONS[event])
        cosine = cosines[index].reindex(sentences.sentence_id.to_numpy()).fillna(-1).to_numpy() >= 0.5
        counts = {
            "ftm measure": panel.n_sentences.reindex(firms.index, fill_value=0),
            "words": _per_firm(
                sentences, sentences.raw_text.str.contains(words, case=False, regex=True), firms
            ),
            "cos 0.5": _per_firm(sentences, pd.Series(cosine, index=sentences.index), firms),
        }
        exposed = set(truth[truth >= themes.MIN_SENTENCES].index)
        out[event] = {"exposed": len(exposed), "pattern_words": words}
        for system, count in counts.items():
            out[event][system] = _scores(count, truth, firms, exposed)
    return out


def _per_firm(sentences: pd.DataFrame, matches: pd.Series, firms: pd.Series) -> pd.Series:
    return matches.groupby(sentences.firm_id.to_numpy()).sum().reindex(firms.index, fill_value=0)


def _words_pattern(description: str) -> str:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [w for w in re.findall(r"[a-z]+", description.lower()) if w not in ENGLISH_STOP_WORDS]
    return r"\b(?:" + "|".join(sorted(set(words))) + r")\b"


def _scores(count: pd.Series, truth: pd.Series, firms: pd.Series, exposed: set[str]) -> dict[str, Any]:
    found = set(count[count >= themes.MIN_SENTENCES].index)
    hits = len(found & exposed)
    precision, recall = hits / max(len(found), 1), hits / max(len(exposed), 1)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    rho = spearmanr(count / firms, truth / firms).correlation
    return {
        "f1": round(f1, 3),
        "recall": round(recall, 3),
        "precision": round(precision, 3),
        "firms": len(found),
        "spearman": None if np.isnan(rho) else round(float(rho), 3),
    }


def scale(n: int) -> dict[str, float]:
    """Seconds of the calibration over n random float16 unit vectors, for 1 and 10 subjects."""
    from ftm.measures.calibration import calibrate

    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((n, 384), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = embeddings.astype(np.float16)
    seconds = {"n_sentences": n}
    for subjects in (1, 10):
        queries = rng.standard_normal((subjects, 384)).astype(np.float32)
        start = time.perf_counter()
        calibrate(embeddings, queries)
        seconds[f"{subjects}_subjects_s"] = round(time.perf_counter() - start, 2)
    return seconds


def scale_command(source: Path, out: Path) -> dict[str, Any]:
    """Seconds of `ftm measure` over the one mapped quarter of `source` (in a hard-linked copy),
    with 1 subject, then 10."""
    quarters = sorted(path.name.split("=", 1)[1] for path in (source / "manifests").glob("quarter=*"))
    if len(quarters) != 1:
        raise SystemExit(f"{source}: expected one mapped quarter, found {quarters or 'none'}")
    root = _linked_copy(source, out / source.name)
    seconds: dict[str, Any] = {"quarter": quarters[0]}
    for count in (1, 10):
        shutil.rmtree(root / "measures", ignore_errors=True)
        subjects = root / f"subjects-{count}.toml"
        chosen = list(SCALE_SUBJECTS.items())[:count]
        subjects.write_text("".join(f'{name} = "{text}"\n' for name, text in chosen))
        command = [sys.executable, "-m", "ftm", "measure", quarters[0], "--subjects", str(subjects)]
        start = time.perf_counter()
        subprocess.run([*command, "--root", str(root)], check=True, capture_output=True)
        seconds[f"{count}_subjects_s"] = round(time.perf_counter() - start, 2)
    panel = pq.read_table(root / layout.measure_firm_quarter("pandemic"), columns=["firm_id"])
    seconds["n_firms"] = panel.num_rows
    seconds["n_sentences"] = json.loads((root / layout.measure_subject("pandemic")).read_text())["quarters"][
        0
    ]["n_sentences"]
    return seconds


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(
        f"ftm measure over {', '.join(report['quarters'])}: {report['measure_s']:.0f} s "
        f"on {machine['cores']} cores ({machine['cpu']})"
    )
    for event, description in report["descriptions"].items():
        print(f"  {event}: {description!r}")
    for quarter, results in report["quarters"].items():
        print(f"\n{quarter}: {results['n_firms']} firms, {results['n_sentences']:,} sentences")
        print(f"{'event':13s} {'exposed':>7s} | " + " | ".join(f"{s:^24s}" for s in SYSTEMS))
        print(f"{'':13s} {'':7s} | " + " | ".join(f"{'F1 (R / P)':>16s} {'rho':>7s}" for _ in SYSTEMS))
        for event in DESCRIPTIONS:
            row = results[event]
            cells = []
            for system in SYSTEMS:
                e = row[system]
                rho = "-" if e["spearman"] is None else f"{e['spearman']:.2f}"
                cells.append(f"{e['f1']:.2f} ({e['recall']:.2f}/{e['precision']:.2f}) {rho:>7s}")
            print(f"{event:13s} {row['exposed']:7d} | " + " | ".join(cells))
    s = report["scale"]
    what = (
        f"`ftm measure` over {s['quarter']} ({s['n_firms']:,} firms, {s['n_sentences']:,} sentences)"
        if "quarter" in s
        else f"calibration over {s['n_sentences']:,} random sentences"
    )
    print(f"\nscale: {what}: 1 subject {s['1_subjects_s']:.1f} s, 10 subjects {s['10_subjects_s']:.1f} s")


if __name__ == "__main__":
    main()
