"""Writes src/ftm/reduce/ordinary_language.npz: what the firms of an ordinary quarter all say.

The reduce marks a theme as reporting language when it is spread over the firms as evenly as
boilerplate is and the same language was said as evenly in an ordinary quarter (ftm/reduce/kinds.py).
The ordinary quarter is the bundled sample (ftm.sample: 173 calls of 2016Q4). This script runs the
product on it, as a user would (prefetch, submit, reduce, with the rule's reference switched off),
and keeps the themes spread over its firms as evenly as boilerplate is (evenness of at least
`EVENNESS`, stricter than `reduce.reporting_evenness`: in a quarter of 173 firms a subject that a
third of them discuss, such as 2016's commodity prices, reaches 0.8) and that at least `SHARE_OF_FIRMS`
of the firms talk about: their centroids in the centred embedding space (each one the unit sum of its
sentences' embeddings less the quarter's mean), as float16, with the model's name and the themes'
keywords for people to read.

    .venv/bin/python scripts/ordinary_language.py            # about 5 minutes on two cores
    .venv/bin/python scripts/ordinary_language.py --root /tmp/sample-run   # keep the run

Run it again after a change to the embedding model's default or to how the reduce finds themes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ftm import layout, sample
from ftm.quarters import Quarter
from ftm.settings import EmbeddingSettings

QUARTER = Quarter.parse("2016Q4")
SHARE_OF_FIRMS = 0.15
EVENNESS = 0.85
TARGET = Path(__file__).resolve().parents[1] / "src" / "ftm" / "reduce" / "ordinary_language.npz"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, help="storage root for the run (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        run(root)
        write_reference(root)


def run(root: Path) -> None:
    ftm = [sys.executable, "-m", "ftm"]
    common = ["--root", str(root)]
    # No reference while the reference is made: the rule must not depend on itself.
    env = {**os.environ, "FTM_REDUCE__REPORTING_ORDINARY_SIMILARITY": "1.0"}
    steps = [
        ["prefetch", str(QUARTER), "--source", "files", "--input", str(sample.PATH)],
        ["submit", "--quarter", str(QUARTER), "--batch-size", "50"],
        ["reduce", "--quarter", str(QUARTER)],
    ]
    for step in steps:
        subprocess.run([*ftm, *step, *common], check=True, env=env)


def write_reference(root: Path) -> None:
    themes = pq.read_table(root / layout.themes(QUARTER)).to_pandas()
    members = pq.read_table(root / layout.theme_sentences(QUARTER)).to_pandas()
    embeddings = pq.read_table(root / layout.sentence_embeddings_folder(QUARTER)).to_pandas()
    vectors = np.stack(embeddings.embedding.to_numpy()).astype(np.float32)
    mean = vectors.mean(axis=0)
    row = dict(zip(embeddings.sentence_id, range(len(embeddings)), strict=True))
    n_firms = embeddings.firm_id.nunique()
    ordinary = themes[(themes.evenness >= EVENNESS) & (themes.n_firms >= SHARE_OF_FIRMS * n_firms)]
    centroids, keywords = [], []
    for theme in ordinary.itertuples():
        rows = [row[s] for s in members.sentence_id[members.theme_id == theme.theme_id]]
        total = (vectors[rows] - mean).sum(axis=0)
        centroids.append(total / np.linalg.norm(total))
        keywords.append(", ".join(theme.keywords))
    np.savez_compressed(
        TARGET,
        model=np.array(EmbeddingSettings().model),  # the run used the default model
        vectors=np.array(centroids, dtype=np.float16),
        keywords=np.array(keywords),
    )
    print(f"{len(centroids)} of {len(themes)} themes of {QUARTER} are ordinary language → {TARGET}")
    for words in keywords:
        print(f"  {words}")


if __name__ == "__main__":
    main()
