"""Benchmark: ftm's multi-process spaCy preprocessing against a plain single-process `nlp.pipe`.

Both pipelines get exactly the same texts, already in memory, so the difference is spaCy work and
process overhead only, not reading. Run on demand (never by pytest):

    .venv/bin/python benchmarks/prefetch.py [--quarter 2016Q4] [--limit N] [--workers W] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ftm.prefetch.sources import Component
from ftm.prefetch.text import Preprocessor, _Rules, load_model, split_text
from ftm.quarters import Quarter
from ftm.settings import PreprocessSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/corpus.py: the test corpus
import corpus  # noqa: E402

DEFAULT_CORPUS = corpus.PATH

# Per call: the kept sentences as (key, cleaned_text), in order; the key is checked too, so that a
# difference in sentence splitting shows even where the cleaned strings happen to agree.
Output = dict[str, list[tuple[str, str]]]


@dataclass
class Result:
    name: str
    wall_s: float
    sentences: int  # from spaCy's splitter, before the min-token filter
    kept: int
    words: int

    def row(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "wall_s": round(self.wall_s, 2),
            "sentences": self.sentences,
            "kept": self.kept,
            "words": self.words,
            "sentences_per_s": round(self.sentences / self.wall_s, 1),
            "kept_per_s": round(self.kept / self.wall_s, 1),
            "words_per_s": round(self.words / self.wall_s, 1),
        }


def read_calls(path: Path, quarter: Quarter, limit: int | None) -> dict[str, list[Component]]:
    calls: dict[str, list[Component]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            # Only MAEC has calendar dates; ECTSum's fiscal labels are not calendar quarters.
            if not record["call_date"] or date.fromisoformat(record["call_date"]) not in quarter:
                continue
            calls[record["transcript_id"]] = [
                Component(c["order"], "unknown", c["text"]) for c in record["components"]
            ]
            if limit is not None and len(calls) >= limit:
                break
    return calls


def pieces(calls: dict[str, list[Component]], rules: _Rules) -> Iterator[tuple[str, tuple[str, int]]]:
    """The texts ftm hands to spaCy: normalised, blanks skipped, over-long ones split as ftm does
    (a no-op below `max_chars`, but without it spaCy would refuse such a text)."""
    for call_id, components in calls.items():
        for component in components:
            text = rules._normalise(component.text)
            for piece in split_text(text, rules.max_chars) if text else []:
                yield piece, (call_id, component.order)


def run_baseline(
    calls: dict[str, list[Component]], rules: _Rules, batch_size: int
) -> tuple[Result, Output, float]:
    texts = list(pieces(calls, rules))
    words = sum(len(text.split()) for text, _ in texts)
    output: Output = {call_id: [] for call_id in calls}
    numbers: Counter[tuple[str, int]] = Counter()
    sentences = kept = 0
    start = time.perf_counter()
    # Loading is timed because ftm's time includes each worker loading the model.
    nlp = load_model("en_core_web_sm")
    nlp.max_length = max(nlp.max_length, rules.max_chars + 1)
    load_s = time.perf_counter() - start
    for doc, (call_id, order) in nlp.pipe(texts, as_tuples=True, batch_size=batch_size):
        for span in doc.sents:
            number = numbers[call_id, order]
            numbers[call_id, order] += 1
            sentences += 1
            cleaned = rules._clean(span, set())  # no firm name's words: ftm's side is given none either
            if len(cleaned) < rules.min_tokens:
                continue
            kept += 1
            output[call_id].append((f"{order}.{number}", " ".join(cleaned)))
    wall = time.perf_counter() - start
    return Result("baseline", wall, sentences, kept, words), output, load_s


def run_ftm(calls: dict[str, list[Component]], workers: int) -> tuple[float, Output]:
    output: Output = {}
    start = time.perf_counter()
    # The pool starts lazily inside process(), so spawning workers and loading their models is timed.
    preprocessor = Preprocessor(PreprocessSettings(workers=workers))
    try:
        for call_id, call_text in preprocessor.process(calls.items()):
            output[call_id] = [(s.key, s.cleaned_text) for s in call_text.sentences]
    finally:
        preprocessor.close()
    return time.perf_counter() - start, output


def compare(baseline: Output, ftm: Output) -> dict[str, Any]:
    differing = [call_id for call_id in baseline if baseline[call_id] != ftm.get(call_id)]
    differing += [call_id for call_id in ftm if call_id not in baseline]
    report: dict[str, Any] = {"same": not differing, "calls_differing": len(differing)}
    if differing:
        a, b = Counter(baseline.get(differing[0], [])), Counter(ftm.get(differing[0], []))
        report["sentences_differing"] = sum(((a - b) + (b - a)).values())
        report["example"] = {
            "call": differing[0],
            "baseline_only": sorted(a - b)[:1],
            "ftm_only": sorted(b - a)[:1],
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--quarter", default="2016Q4", help="calendar quarter of the MAEC call dates")
    parser.add_argument("--limit", type=int, default=None, help="at most this many calls")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    args = parser.parse_args()
    corpus.require(args.corpus)

    calls = read_calls(args.corpus, Quarter.parse(args.quarter), args.limit)
    if not calls:
        sys.exit(f"no calls dated in {args.quarter} in {args.corpus}")
    settings = PreprocessSettings()
    # Built before either clock starts: it imports spaCy and warms the page cache for both runs alike.
    rules = _Rules(settings)

    baseline, baseline_output, load_s = run_baseline(calls, rules, settings.batch_size)
    ftm_wall, ftm_output = run_ftm(calls, args.workers)
    # ftm does not report sentences dropped by the filter; on identical output the counts are the same.
    ftm = Result(f"ftm ({args.workers} workers)", ftm_wall, baseline.sentences, baseline.kept, baseline.words)
    check = compare(baseline_output, ftm_output)
    report = {
        "quarter": args.quarter,
        "calls": len(calls),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "baseline_model_load_s": round(load_s, 2),
        "baseline": baseline.row(),
        "ftm": ftm.row(),
        "throughput_ratio_ftm_over_baseline": round(baseline.wall_s / ftm.wall_s, 2),
        "same_cleaned_output": check,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{len(calls)} calls of {args.quarter}, {baseline.words:,} words, {report['cpu_cores']} CPU cores")
    print(f"{'':<18}{'wall s':>8}{'sent/s':>9}{'kept/s':>9}{'words/s':>10}")
    for row in (baseline.row(), ftm.row()):
        print(
            f"{row['name']:<18}{row['wall_s']:>8}{row['sentences_per_s']:>9}"
            f"{row['kept_per_s']:>9}{row['words_per_s']:>10}"
        )
    print(f"ratio ftm/baseline (throughput): {report['throughput_ratio_ftm_over_baseline']}x")
    print(f"(baseline wall includes {load_s:.1f} s of model loading; ftm's includes starting workers)")
    print(f"sentences: {baseline.sentences:,} split, {baseline.kept:,} kept")
    print(f"same cleaned output: {'yes' if check['same'] else 'no'}")
    if not check["same"]:
        print(f"  {check['calls_differing']} calls differ; example: {check['example']}")


if __name__ == "__main__":
    main()
