"""Which sentences of a quarter are about a subject: the calibration rule, the same for every
subject and quarter, without labels.

A bare cosine threshold on MiniLM does not carry from one description to another: a description is
not a sentence, and how close the sentences about it come depends on its wording (on the shared
corpus the best bare threshold was 0.35 for the pandemic, 0.50 for supply chains). So:

1. **Centre.** Every sentence of a quarter shares the quarter's mean direction, which carries no
   subject (the reduce centres for the same reason): cosines are taken between the sentence and
   the query, each less the quarter's mean embedding.
2. **Re-centre the query on the quarter's own sentences** (pseudo-relevance feedback): the
   `PSEUDO_RELEVANT` sentences nearest the description stand for it, and the query becomes
   their mean. The query is then a point among sentences, whatever the description's wording.
3. **Threshold relative to those sentences:** a sentence is about the subject when its cosine to
   the re-centred query is at least `RELATIVE` × the median cosine of the pseudo-relevant
   sentences to it. The threshold follows the subject's own spread in that quarter, and it is
   recorded per quarter (`subject.json`).

The constants were chosen on the shared corpus (benchmarks/measure.py, benchmarks/README.md's
*Measure*), where other rules were tried too: bare cosines, a robust tail rule (median + z × MAD
of the quarter's cosines) and pseudo-relevance feedback without centring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ftm.reduce import mean_embedding

PSEUDO_RELEVANT = 50  # the nearest sentences that stand for the description
RELATIVE = 0.6  # of their median cosine to the re-centred query
# Rows centred at a time: 8,192 float32 rows (12.6 MB) stay in cache for each query's product,
# and a 2,000,000-sentence quarter is never copied whole.
BLOCK = 8192
RULE = {
    "name": "centred pseudo-relevance feedback",
    "pseudo_relevant": PSEUDO_RELEVANT,
    "relative": RELATIVE,
}


@dataclass(frozen=True)
class Calibrated:
    """One subject in one quarter: each sentence's cosine to the re-centred query, and the rule's
    threshold on it."""

    similarity: np.ndarray  # float32, one per sentence
    threshold: float
    pseudo_relevant_similarity: float  # the median the threshold is relative to

    @property
    def selected(self) -> np.ndarray:
        return self.similarity >= self.threshold


def centred_similarities(
    embeddings: np.ndarray, mean: np.ndarray, queries: np.ndarray, device: str = "cpu"
) -> np.ndarray:
    """(n, m) cosines between each sentence and each query, both less `mean`, block by block on
    `device` (torch: its float16 → float32 conversion and products use every core, or the GPU)."""
    centred = torch.from_numpy(_unit(queries.astype(np.float32) - mean)).to(device)
    centre = torch.from_numpy(mean.astype(np.float32)).to(device)
    out = np.empty((len(embeddings), len(centred)), np.float32)
    for start in range(0, len(embeddings), BLOCK):
        block = torch.from_numpy(embeddings[start : start + BLOCK]).to(device).float() - centre
        block /= block.norm(dim=1, keepdim=True).clamp_min(1e-12)
        for column, query in enumerate(centred):
            # One product per query, not one for all: a matrix product's rounding depends on its
            # shape, and a subject's similarities must not depend on what is measured beside it.
            out[start : start + len(block), column] = (block @ query).cpu().numpy()
    return out


def calibrate(embeddings: np.ndarray, queries: np.ndarray, device: str = "cpu") -> list[Calibrated]:
    """Each query's sentences by the rule (see the module docstring), all queries at once: two
    passes over the embeddings whatever their number."""
    mean = mean_embedding(embeddings)
    first = centred_similarities(embeddings, mean, queries, device)
    k = min(PSEUDO_RELEVANT, len(embeddings))
    recentred = []
    for column in first.T:
        # The k nearest, ties broken by row so that the same quarter gives the same query.
        kth = np.partition(column, len(column) - k)[len(column) - k]
        candidates = np.flatnonzero(column >= kth)
        nearest = candidates[np.lexsort((candidates, -column[candidates]))][:k]
        rows = _unit(embeddings[np.sort(nearest)].astype(np.float32) - mean)
        recentred.append(rows.mean(axis=0) + mean)  # back to the uncentred space the pass expects
    second = centred_similarities(embeddings, mean, np.stack(recentred), device)
    calibrated = []
    for column in second.T:
        median = nearest_median(column)
        calibrated.append(Calibrated(column, RELATIVE * median, median))
    return calibrated


def nearest_median(similarity: np.ndarray, k: int = PSEUDO_RELEVANT) -> float:
    """The median cosine of the k (`PSEUDO_RELEVANT`) sentences nearest a query: what the rule's
    threshold is relative to."""
    k = max(min(k, len(similarity)), 1)
    return float(np.median(np.partition(similarity, len(similarity) - k)[len(similarity) - k :]))


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
