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
3. **Threshold where the subject's sentences outnumber the rest:** the quarter's cosines to the
   re-centred query are two populations, the many sentences about other things around the
   median and the subject's own near the pseudo-relevant ones. A two-component Gaussian mixture
   (scikit-learn's, started at those two points) is fitted to them, and a sentence is about the
   subject when the subject's component holds it with probability `POSTERIOR` or more. A subject
   most firms talk about at length (the pandemic in 2020) has a heavy component and a low
   threshold; a narrow one a light component and a higher threshold, which a threshold relative
   to the nearest sentences alone gets the wrong way round (they are tightest for the broadest
   subject). Where the mixture never reaches `POSTERIOR` (a subject nobody talks about: the two
   components overlap), the threshold is `RELATIVE` × the median cosine of the pseudo-relevant
   sentences. Each quarter's threshold is recorded (`subject.json`).

The constants were chosen on the shared corpus (benchmarks/measure.py and benchmarks/trends.py,
benchmarks/README.md's *Measure* and *Trends*), where other rules were tried too: bare cosines, a
robust tail rule (median + z × MAD of the quarter's cosines), pseudo-relevance feedback without
centring and `RELATIVE` × the median alone (ftm's rule before the mixture).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from ftm.reduce import mean_embedding

PSEUDO_RELEVANT = 50  # the nearest sentences that stand for the description
POSTERIOR = 0.95  # the mixture's probability that a sentence is the subject's
RELATIVE = 0.6  # of the pseudo-relevant median cosine, where the mixture never reaches POSTERIOR
# The mixture is fitted to at most this many cosines (every n-th sentence of a larger quarter):
# two parameters per component need no more, and a fit to 200,000 took 0.2 s, which `ftm trends`
# pays for each of a range's hundreds of lineages (benchmarks/README.md, *Measure*).
MIXTURE_SAMPLE = 50_000
# Rows centred at a time: 8,192 float32 rows (12.6 MB) stay in cache for each query's product,
# and a 2,000,000-sentence quarter is never copied whole.
BLOCK = 8192
RULE = {
    "name": "centred pseudo-relevance feedback, two-component mixture",
    "pseudo_relevant": PSEUDO_RELEVANT,
    "posterior": POSTERIOR,
    "relative": RELATIVE,
    "mixture_sample": MIXTURE_SAMPLE,
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
    embeddings: np.ndarray,
    mean: np.ndarray,
    queries: np.ndarray,
    device: str = "cpu",
    *,
    separately: bool = True,
) -> np.ndarray:
    """(n, m) cosines between each sentence and each query, both less `mean`, block by block on
    `device` (torch: its float16 → float32 conversion and products use every core, or the GPU).

    `separately`, one product per query: a matrix product's rounding depends on its shape, and a
    named subject's similarities must not depend on what is measured beside it. Without it, one
    matrix product for all the queries, many times faster for hundreds of them (the lineages of a
    range, which are the same set on every run of the range)."""
    centred = torch.from_numpy(_unit(queries.astype(np.float32) - mean)).to(device)
    centre = torch.from_numpy(mean.astype(np.float32)).to(device)
    out = np.empty((len(embeddings), len(centred)), np.float32)
    for start in range(0, len(embeddings), BLOCK):
        block = torch.from_numpy(embeddings[start : start + BLOCK]).to(device).float() - centre
        block /= block.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if not separately:
            out[start : start + len(block)] = (block @ centred.T).cpu().numpy()
            continue
        for column, query in enumerate(centred):
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
        calibrated.append(Calibrated(column, threshold(column, median), median))
    return calibrated


def threshold(similarity: np.ndarray, nearest: float) -> float:
    """The rule's threshold on `similarity` (one query's cosines over a quarter), given the median
    cosine of its nearest sentences (see the module docstring)."""
    sample = similarity[:: max(1, len(similarity) // MIXTURE_SAMPLE)].astype(np.float64)
    middle = float(np.median(sample))
    if len(sample) < 4 or nearest <= middle or float(sample.std()) == 0.0:
        return RELATIVE * nearest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few EM steps short changes nothing here
        mixture = GaussianMixture(2, means_init=[[middle], [nearest]], random_state=0).fit(sample[:, None])
    subject = int(np.argmax(mixture.means_[:, 0]))
    grid = np.linspace(middle, float(sample.max()), 2_001)
    reached = np.flatnonzero(mixture.predict_proba(grid[:, None])[:, subject] >= POSTERIOR)
    return float(grid[reached[0]]) if len(reached) else RELATIVE * nearest


def nearest_median(similarity: np.ndarray, k: int = PSEUDO_RELEVANT) -> float:
    """The median cosine of the k (`PSEUDO_RELEVANT`) sentences nearest a query: what the rule's
    threshold is relative to."""
    k = max(min(k, len(similarity)), 1)
    return float(np.median(np.partition(similarity, len(similarity) - k)[len(similarity) - k :]))


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
