"""Where tests and benchmarks find the test corpus: real earnings-call text, `corpus.jsonl.gz`
(about 4,700 calls converted from the MAEC and ECTSum research datasets; one call a line, in the
JSON Lines form `ftm prefetch --input` reads).

The corpus is not in this repository: the team keeps it in its workspace, `shared/corpus/` beside
the checkout, which is where it is looked for unless `SHARED_CORPUS` names another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

PATH = Path(
    os.environ.get("SHARED_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "corpus" / "corpus.jsonl.gz"
)


def missing(path: Path) -> str | None:
    """What to do when the corpus is not at `path`; None when it is there."""
    if path.is_file():
        return None
    return (
        f"the test corpus is missing: expected {path}. Put corpus.jsonl.gz there (the team keeps it "
        "in shared/corpus/ beside the checkout), or set SHARED_CORPUS=/path/to/corpus.jsonl.gz"
    )


def require(path: Path = PATH) -> Path:
    """The corpus's path, for a benchmark; ends the benchmark saying what to do when it is absent."""
    problem = missing(path)
    if problem:
        raise SystemExit(f"{problem}, or pass --corpus where the benchmark takes it")
    return path
