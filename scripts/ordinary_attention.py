"""Writes src/ftm/reduce/ordinary_attention.npz: how much attention earnings calls ordinarily give
to each subject, quarter by quarter, over many years. The reduce scores a theme's salience
against it (ftm/reduce/salience.py).

From the test corpus (real calls of 2015 to 2022; tests/corpus.py says where it is), every quarter
with at least `MIN_CALLS` calls (a call's quarter as `ftm prefetch` gives it: the calendar quarter
of its date, else its fiscal label) gives `CALLS_PER_QUARTER` calls drawn at random (seeded), one
per firm, and each call up to `SENTENCES_PER_CALL` of its sentences, drawn at random (seeded), as
`ftm prefetch` splits them. Their embeddings (the default model, as the map makes them) are cut by
a spherical k-means into `CELLS` cells (in the space the reduce compares themes in: less the
reference's mean, unit length), and each cell keeps its mean embedding (as stored, not centred)
and its share of each quarter's attention: a sentence weighs 1 / (its call's drawn sentences ×
the quarter's calls), so every call counts the same and every quarter sums to 1.

Nothing here names a subject, an event or a quarter: every quarter the corpus has enough calls of
is used, and the reduce takes the median over them, so the few quarters of any one event (the
pandemic's, say) do not make it ordinary.

    .venv/bin/python scripts/ordinary_attention.py            # about 10 minutes on two cores
    .venv/bin/python scripts/ordinary_attention.py --root /tmp/ordinary   # keep the prefetch

Run it again after a change to the embedding model's default or to the sentence splitting.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ftm import layout
from ftm.cli import main as ftm_main
from ftm.quarters import Quarter
from ftm.settings import EmbeddingSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/corpus.py: where the test corpus is
import corpus  # noqa: E402

TARGET = REPO / "src" / "ftm" / "reduce" / "ordinary_attention.npz"
MIN_CALLS = 30
CALLS_PER_QUARTER = 24
SENTENCES_PER_CALL = 60
CELLS = 1500
SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=corpus.PATH)
    parser.add_argument(
        "--root", type=Path, help="storage root for the prefetch (default: a temporary folder)"
    )
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument(
        "--calls", type=int, default=CALLS_PER_QUARTER, help="calls drawn per quarter (default: %(default)s)"
    )
    args = parser.parse_args()
    corpus.require(args.corpus)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        chosen = choose_calls(args.corpus, args.calls)
        quarters = prefetch(args.corpus, chosen, root)
        texts, quarter_of, weights = read_sentences(root, quarters)
        write_reference(texts, quarter_of, weights, quarters, args.out)


def _quarter(record: dict) -> str | None:
    """The call's quarter as the files source gives it (settings' default quarter_rule)."""
    if record.get("call_date"):
        return str(Quarter.of(date.fromisoformat(record["call_date"][:10])))
    return record.get("fiscal_quarter")


def choose_calls(path: Path, calls: int = CALLS_PER_QUARTER) -> dict[str, list[str]]:
    """Per quarter with enough calls, the tickers of `calls` of them, drawn seeded."""
    tickers: dict[str, set[str]] = defaultdict(set)
    with gzip.open(path, "rt") as lines:
        for line in lines:
            record = json.loads(line)
            quarter = _quarter(record)
            if quarter:
                tickers[quarter].add(record["ticker"])
    rng = np.random.default_rng(SEED)
    chosen = {}
    for quarter in sorted(tickers):
        if len(tickers[quarter]) >= max(MIN_CALLS, calls):
            firms = sorted(tickers[quarter])
            chosen[quarter] = sorted(rng.choice(firms, size=calls, replace=False).tolist())
    return chosen


def prefetch(path: Path, chosen: dict[str, list[str]], root: Path) -> list[str]:
    """`ftm prefetch` of each quarter's chosen firms, as a user would run it; a re-run skips what is done."""
    for quarter, firms in chosen.items():
        done = root / layout.prefetch_folder(Quarter.parse(quarter))
        if not any(done.glob("chunk_*.parquet")):
            command = [
                "prefetch",
                quarter,
                "--input",
                str(path),
                "--firms",
                ",".join(firms),
                "--root",
                str(root),
            ]
            if ftm_main(command) != 0:
                sys.exit(f"the prefetch of {quarter} failed")
    return list(chosen)


def read_sentences(root: Path, quarters: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every drawn sentence's raw text, its quarter's index and its weight (see the docstring)."""
    rng = np.random.default_rng(SEED)
    texts: list[str] = []
    quarter_of: list[int] = []
    weights: list[float] = []
    for index, quarter in enumerate(quarters):
        folder = root / layout.prefetch_folder(Quarter.parse(quarter))
        files = sorted(str(path) for path in folder.glob("chunk_*.parquet"))
        table = pq.read_table(files, columns=["firm_id", "raw_text"], partitioning=None)
        frame = table.to_pandas()
        calls = frame.groupby("firm_id", sort=True)
        for _, call in calls:
            rows = call.raw_text.to_numpy()
            drawn = rows[np.sort(rng.permutation(len(rows))[:SENTENCES_PER_CALL])]
            texts.extend(str(text) for text in drawn)
            quarter_of.extend([index] * len(drawn))
            weights.extend([1.0 / (len(drawn) * calls.ngroups)] * len(drawn))
    return texts, np.array(quarter_of), np.array(weights)


def write_reference(
    texts: list[str], quarter_of: np.ndarray, weights: np.ndarray, quarters: list[str], out: Path
) -> None:
    import faiss

    from ftm.map.embedding import Embedder

    settings = EmbeddingSettings()
    embedder = Embedder(settings)
    path = f"{embedder.backend} {embedder.precision}"
    print(f"embedding {len(texts):,} sentences of {len(quarters)} quarters ({path})")
    embeddings = embedder.encode(texts).astype(np.float32)
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    cells = min(CELLS, len(texts) // 10)
    kmeans = faiss.Kmeans(centred.shape[1], cells, niter=25, seed=SEED, spherical=True, verbose=False)
    kmeans.train(np.ascontiguousarray(centred))
    cell = kmeans.index.search(np.ascontiguousarray(centred), 1)[1][:, 0]
    sums = np.zeros((cells, embeddings.shape[1]))
    np.add.at(sums, cell, embeddings)
    sizes = np.bincount(cell, minlength=cells)
    used = sizes > 0
    mass = np.zeros((cells, len(quarters)))
    np.add.at(mass, (cell, quarter_of), weights)
    np.savez_compressed(
        out,
        model=np.array(settings.model),
        cells=(sums[used] / sizes[used, None]).astype(np.float16),
        mass=mass[used].astype(np.float32),
        quarters=np.array(quarters),
        n_sentences=np.bincount(quarter_of, minlength=len(quarters)),
    )
    print(f"{int(used.sum())} cells over {len(quarters)} quarters ({quarters[0]} to {quarters[-1]}) → {out}")


if __name__ == "__main__":
    main()
