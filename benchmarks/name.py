"""Naming benchmark: ftm's batched, concurrent, cached LLM naming against a sequential client that
sends one topic per request (the way BERTopic's OpenAI representation loops over topics), against
the same local chat-completions server with the same simulated latency, in the same run.

The sequential client would need (topics x latency) seconds, 10,000 s for the defaults, so it is
timed on a sample of topics and extrapolated linearly: its requests are independent and sent one
after another, so its time is the sum of per-request times. ftm names every topic for real.

    .venv/bin/python benchmarks/name.py                       # 10,000 topics, 1 s per request
    .venv/bin/python benchmarks/name.py --topics 2000 --latency 0.5 --sample 20 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test server and the corpus-derived inputs

import corpus  # noqa: E402
from ftm.name.naming import name_quarter  # noqa: E402
from ftm.quarters import Quarter  # noqa: E402
from ftm.settings import FtmSettings  # noqa: E402
from ftm.storage import Store  # noqa: E402
from naming_inputs import corpus_topics, write_firm_topics  # noqa: E402

QUARTER = Quarter.parse("2016Q4")
CORPUS = corpus.PATH

# BERTopic's OpenAI representation: its default system prompt and the shape of its default chat
# prompt (documents, then keywords, then "topic: <label>"), one topic per request.
BERTOPIC_SYSTEM = "You are an assistant that extracts high-level topics from texts."
BERTOPIC_PROMPT = """I have a topic that contains the following documents:
{documents}
The topic is described by the following keywords: {keywords}

Based on the information above, extract a short topic label in the following format:
topic: <topic label>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=10_000, help="firm topics ftm names")
    parser.add_argument("--latency", type=float, default=1.0, help="simulated seconds per request")
    parser.add_argument("--sample", type=int, default=50, help="topics the sequential client names")
    parser.add_argument("--concurrency", type=int, default=None, help="llm.concurrency (default: setting)")
    parser.add_argument("--per-request", type=int, default=None, help="llm.topics_per_request")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    corpus.require(args.corpus)

    rows = corpus_topics(args.corpus, args.topics, topics_per_firm=20, sentences_per_topic=8)
    if len(rows) < args.topics:
        sys.exit(f"the corpus gave only {len(rows)} topics; ask for fewer with --topics")
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "chat_server.py"), "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="ftm-name-bench-") as root:
            results = _run(args, rows, url, root)
    finally:
        server.terminate()
        server.wait()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


def _run(args: argparse.Namespace, rows: list[dict[str, Any]], url: str, root: str) -> dict[str, Any]:
    store = Store(root)
    n_parts = write_firm_topics(store, QUARTER, rows, firms_per_part=50)
    llm: dict[str, Any] = {"base_url": url, "model": "bench/model"}
    if args.concurrency:
        llm["concurrency"] = args.concurrency
    if args.per_request:
        llm["topics_per_request"] = args.per_request
    settings = FtmSettings.model_validate({"storage": {"root": root}, "llm": llm})

    before = _stats(url)
    started = time.perf_counter()
    (result,) = name_quarter(settings, QUARTER, "topics")
    ftm_s = time.perf_counter() - started
    after = _stats(url)
    assert result.n_llm == len(rows), f"only {result.n_llm} of {len(rows)} named by the LLM"

    started = time.perf_counter()
    (rerun,) = name_quarter(settings, QUARTER, "topics")
    rerun_s = time.perf_counter() - started
    assert rerun.requests == 0 and rerun.n_from_cache == len(rows)

    sample = rows[: args.sample]
    started = time.perf_counter()
    labels = _sequential(url, sample)
    sample_s = time.perf_counter() - started
    assert len(labels) == len(sample) and all(label for label in labels)
    sequential_s = sample_s / len(sample) * len(rows)  # linear: one request after another

    return {
        "topics": len(rows),
        "firms": len({row["firm_id"] for row in rows}),
        "parts": n_parts,
        "latency_s": args.latency,
        "concurrency": settings.llm.concurrency,
        "topics_per_request": settings.llm.topics_per_request,
        "ftm_s": round(ftm_s, 2),
        "ftm_requests": after["requests"] - before["requests"],
        "ftm_max_in_flight": after["max_in_flight"],
        "ftm_rerun_s": round(rerun_s, 2),
        "ftm_rerun_requests": rerun.requests,
        "sequential_sample_topics": len(sample),
        "sequential_sample_s": round(sample_s, 2),
        "sequential_extrapolated_s": round(sequential_s, 1),
        "ratio": round(sequential_s / ftm_s, 1),
    }


def _sequential(url: str, rows: list[dict[str, Any]]) -> list[str]:
    """One request per topic, each waiting for the last, as BERTopic's representation loop does."""
    labels = []
    with httpx.Client(timeout=60) as client:
        for row in rows:
            documents = "\n".join(f"- {sentence}" for sentence in row["representative_sentences"])
            prompt = BERTOPIC_PROMPT.format(documents=documents, keywords=", ".join(row["keywords"]))
            response = client.post(
                f"{url}/chat/completions",
                json={
                    "model": "bench/model",
                    "messages": [
                        {"role": "system", "content": BERTOPIC_SYSTEM},
                        {"role": "user", "content": prompt},
                    ],
                },
            )
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
            labels.append(content.strip().removeprefix("topic:").strip())
    return labels


def _stats(url: str) -> dict[str, Any]:
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def _print(r: dict[str, Any]) -> None:
    print(
        f"naming {r['topics']:,} firm topics ({r['firms']:,} firms, {r['parts']} part files), "
        f"{r['latency_s']:g} s simulated latency per request\n"
        f"  ftm:        {r['ftm_s']:8.1f} s   {r['ftm_requests']:,} requests of "
        f"{r['topics_per_request']}+ topics, "
        f"{r['concurrency']} in flight (server saw {r['ftm_max_in_flight']} at once)\n"
        f"  ftm re-run: {r['ftm_rerun_s']:8.1f} s   {r['ftm_rerun_requests']} requests (every reply cached)\n"
        f"  sequential: {r['sequential_extrapolated_s']:8.1f} s   one topic per request, extrapolated from "
        f"{r['sequential_sample_topics']} topics in {r['sequential_sample_s']:.1f} s\n"
        f"  ratio:      {r['ratio']:8.1f}x"
    )


if __name__ == "__main__":
    main()
